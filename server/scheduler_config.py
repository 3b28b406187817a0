"""The scheduler's settings as a server's configuration gives them (``shoal agent --server`` flags).

``shoal.config`` (shared by every command) knows nothing of the scheduler; the server,
which runs it, makes its :class:`SchedulerConfig` here.
"""

from __future__ import annotations

from shoal.config import ServerConfig
from shoal.scheduler.config import SchedulerConfig


def scheduler_config(cfg: ServerConfig) -> SchedulerConfig:
    """``--scheduler-algorithm``, and ``--preempt-service-batch`` for both service and batch jobs."""
    return SchedulerConfig(algorithm=cfg.scheduler_algorithm, preempt_service=cfg.preempt_service_batch,
                           preempt_batch=cfg.preempt_service_batch)
