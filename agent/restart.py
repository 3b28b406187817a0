"""The restart policy as a pure decision: given what happened and when, what next."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.jobs.model import RestartPolicy

RESTART, FAIL, COMPLETE = "restart", "fail", "complete"


@dataclass(slots=True, frozen=True)
class Decision:
    action: str  # restart | fail | complete
    delay: float = 0.0
    reason: str = ""


@dataclass(slots=True)
class RestartTracker:
    """Counts restarts within the policy's interval (Nomad's restart tracker)."""

    policy: RestartPolicy
    batch: bool
    count: int = 0
    interval_start: float | None = None

    def decide(self, *, now: float, success: bool, recoverable: bool = True) -> Decision:
        if success and self.batch:
            return Decision(COMPLETE, reason="task completed")
        if not recoverable:
            return Decision(FAIL, reason="error is not recoverable")
        p = self.policy
        if self.interval_start is None or now - self.interval_start > p.interval:
            self.interval_start, self.count = now, 0
        self.count += 1
        if self.count <= p.attempts:
            return Decision(RESTART, p.delay, f"restart {self.count} of {p.attempts} within {p.interval:g}s")
        if p.mode == "delay":
            wait = max(p.delay, self.interval_start + p.interval - now)
            self.interval_start, self.count = now + wait, 0
            return Decision(RESTART, wait, f"exceeded {p.attempts} restarts in {p.interval:g}s; waiting for the interval to end")
        return Decision(FAIL, reason=f"exceeded {p.attempts} restart(s) in {p.interval:g}s")
