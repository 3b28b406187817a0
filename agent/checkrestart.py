"""When an unhealthy check restarts its task (Nomad's ``check_restart``), as a pure decision.

The check runner (checks.py) tells an ``UnhealthyRestart`` when it sees the task start (a new
pid) or stop, and hands it each result with the time; ``observe`` answers whether to restart
the task now. Results within ``grace`` of the task's start are not counted; after that,
``limit`` consecutive unhealthy results (critical; warning too unless ``ignore_warnings``)
call for a restart, and a healthy result resets the count. Once a restart is called for,
nothing more is counted until the task is seen starting again, when grace applies anew.

Nomad counts the time a check has been unhealthy ((limit - 1) check intervals); counting
the results themselves is the same on a steady interval, and needs no interval here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.jobs.model import CheckRestart

# Consul's check statuses, which every check reports (checks.py).
PASSING, WARNING, CRITICAL = "passing", "warning", "critical"


@dataclass(slots=True)
class UnhealthyRestart:
    """One check's restart decision; times are seconds on any monotonic clock the caller keeps."""

    config: CheckRestart
    grace_until: float | None = None  # None: the task is not known to run (or a restart was called for)
    failures: int = 0  # consecutive unhealthy results counted since the grace ended

    @property
    def enabled(self) -> bool:
        return self.config.limit > 0

    def task_started(self, now: float) -> None:
        """The task (re)started: count nothing for ``grace`` seconds, then from zero."""
        self.grace_until = now + self.config.grace
        self.failures = 0

    def task_stopped(self) -> None:
        """The task does not run: nothing is counted until it starts again."""
        self.grace_until = None
        self.failures = 0

    def observe(self, status: str, now: float) -> bool:
        """Count one result of the check; True when the task is to be restarted now."""
        if not self.enabled or self.grace_until is None:
            return False
        if status == PASSING or (status == WARNING and self.config.ignore_warnings):
            self.failures = 0
            return False
        if now < self.grace_until:
            return False
        self.failures += 1
        if self.failures < self.config.limit:
            return False
        self.task_stopped()  # the restart is called for: wait for the task to start again
        return True
