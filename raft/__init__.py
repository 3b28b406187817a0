"""Replicated cluster state: the FSM, its tables, and the PySyncObj node that drives it."""
