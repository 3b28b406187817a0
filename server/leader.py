"""What only the leader does: a list of leader managers (``leader_manager.py``), started in
order on gaining leadership and stopped in reverse on losing it, each rebuilt from the
replicated state every time, so that work in flight when a leader dies is picked up by
the next one.

The managers, one file each: the plan applier (``plan_apply.py``), evaluation scheduling
(the broker and workers, ``scheduling.py``), blocked evaluations (``blocked.py``) and node
heartbeats (``heartbeats.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from shoal.raft.change import Change
from shoal.raft.node import RaftNode
from shoal.raft.state import StateStore
from shoal.scheduler import SchedulerConfig
from shoal.server.blocked import BlockedEvals
from shoal.server.heartbeats import Heartbeats
from shoal.server.leader_manager import LeaderContext, LeaderManager
from shoal.server.plan_apply import PlanApplier
from shoal.server.scheduling import EvalScheduling
from shoal.server.usage import UsageIndexer
from shoal.server.watch import StateWatch

log = structlog.get_logger("shoal.server.leader")


class LeaderDuties:
    """The leader managers of one server, and the one subscription that feeds them committed changes."""

    def __init__(self, store: StateStore, raft: RaftNode, watch: StateWatch, usage: UsageIndexer, *, workers: int,
                 heartbeat_ttl: float, scheduler: SchedulerConfig | None = None):
        self.ctx = LeaderContext(store=store, raft=raft, watch=watch, usage=usage, scheduler=scheduler or SchedulerConfig())
        self.plans = PlanApplier()
        self.scheduling = EvalScheduling(self.plans, workers=workers)
        self.blocked = BlockedEvals()
        self.heartbeats = Heartbeats(heartbeat_ttl)
        # Started in this order, stopped in the reverse one.
        self.managers: tuple[LeaderManager, ...] = (self.plans, self.scheduling, self.blocked, self.heartbeats)
        self.running = False  # started (or starting) and not stopped
        self._unsubscribe: Callable[[], None] | None = None
        self._held: list[list[Change]] | None = None  # changes committed while the managers start
        self._after = 0  # the index of the snapshot the managers were started from

    @property
    def scheduler(self) -> SchedulerConfig:
        return self.ctx.scheduler

    def heartbeat(self, node_id: str) -> float:
        return self.heartbeats.heartbeat(node_id)

    def reported_dead(self, node_id: str) -> float | None:
        return self.heartbeats.reported_dead(node_id)

    async def start(self) -> None:
        self.running = True
        self._held = []
        self._unsubscribe = self.ctx.watch.subscribe(self._on_changes)
        # Everything applied before we became leader: wait for it, then rebuild from it.
        try:
            await self.ctx.raft.barrier()
        except Exception as exc:
            log.warning("leader barrier failed", error=str(exc))
        snap = self.ctx.store.snapshot()
        self._after = snap.index
        for m in self.managers:
            await m.start(self.ctx, snap)
        held, self._held = self._held, None
        for changes in held:
            self._route(changes)
        log.info("leader duties started", index=snap.index, managers=[m.name for m in self.managers])

    async def stop(self) -> None:
        self.running = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._held = None
        for m in reversed(self.managers):
            await m.stop()
        log.info("leader duties stopped")

    def _on_changes(self, changes: list[Change]) -> None:
        if self._held is not None:
            self._held.append(changes)
        else:
            self._route(changes)

    def _route(self, changes: list[Change]) -> None:
        # What the snapshot already holds is not told again: a batch applied before it may be
        # delivered after it (the watch hops to the loop). A batch's indexes never decrease.
        if not changes:
            return
        fresh = changes if changes[0].index > self._after else [c for c in changes if c.index > self._after]
        if not fresh:
            return
        for m in self.managers:
            try:
                m.on_changes(fresh)
            except Exception:
                log.exception("leader manager failed on committed changes", manager=m.name)
