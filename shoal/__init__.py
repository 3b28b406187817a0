"""shoal: a small, fast container orchestrator (servers, scheduler, agents)."""

__version__ = "0.1.0"
