"""Placement: a state snapshot and an evaluation in, a plan out. Pure code, no I/O."""
