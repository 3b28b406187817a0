"""Scheduler settings a cluster operator chooses (Nomad's SchedulerConfiguration)."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.scheduler.rank import ALGORITHMS, BINPACK
from shoal.scheduler.select import DEFAULT_MAX_SKIP, DEFAULT_SCORE_THRESHOLD


@dataclass(slots=True, frozen=True)
class SchedulerConfig:
    """``algorithm``: ``binpack`` (fill nodes) or ``spread`` (empty nodes first).
    ``preempt_*``: which job types may evict lower-priority allocations when
    nothing fits; as Nomad, only system jobs do by default."""

    algorithm: str = BINPACK
    preempt_system: bool = True
    preempt_sysbatch: bool = False
    preempt_service: bool = False
    preempt_batch: bool = False
    max_skip: int = DEFAULT_MAX_SKIP
    score_threshold: float = DEFAULT_SCORE_THRESHOLD

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown scheduler algorithm {self.algorithm!r} (want one of {', '.join(ALGORITHMS)})")

    def preemption(self, job_type: str) -> bool:
        return {
            "system": self.preempt_system,
            "sysbatch": self.preempt_sysbatch,
            "service": self.preempt_service,
            "batch": self.preempt_batch,
        }.get(job_type, False)
