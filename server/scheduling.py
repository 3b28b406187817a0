"""Evaluation scheduling (a leader manager): pending evaluations through the broker to the workers.

Rebuilt from state on each leadership gain: a fresh broker holds every pending
evaluation of the snapshot (oldest first), then each one committed after it;
``workers`` scheduler workers take them, plan, and submit their plans to the
plan applier (a peer manager, started before this one and stopped after it).
"""

from __future__ import annotations

from shoal.jobs.structs import EVAL_PENDING, Evaluation
from shoal.raft.change import Change
from shoal.raft.state import StateSnapshot
from shoal.server.broker import EvalBroker
from shoal.server.leader_manager import LeaderContext, LeaderManager, Tasks
from shoal.server.plan_apply import PlanApplier
from shoal.server.worker import Worker


def pending_evals(snap: StateSnapshot) -> list[Evaluation]:
    """The evaluations waiting to be scheduled, in the order they were created."""
    return sorted((e for e in snap.evals() if e.status == EVAL_PENDING), key=lambda e: e.create_index)


class EvalScheduling(LeaderManager):
    name = "eval broker and workers"

    def __init__(self, plans: PlanApplier, *, workers: int) -> None:
        self.plans = plans
        self.num_workers = workers
        self.broker = EvalBroker()
        self._tasks = Tasks(self.name)

    @property
    def running_workers(self) -> int:
        return len(self._tasks)

    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        self.broker = EvalBroker()
        for ev in pending_evals(snap):
            self.broker.enqueue(ev)
        for i in range(self.num_workers):
            w = Worker(f"worker-{i}", ctx.usage, ctx.raft, self.broker, self.plans, ctx.scheduler)
            self._tasks.spawn(w.run(), name=f"shoal-{w.name}")

    def on_changes(self, changes: list[Change]) -> None:
        for c in changes:
            if c.topic == "Evaluation" and c.obj is not None and c.obj.status == EVAL_PENDING:
                self.broker.enqueue(c.obj)

    async def stop(self) -> None:
        await self._tasks.cancel()
        self.broker.clear()
