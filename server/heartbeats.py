"""Node liveness (a leader manager): a node that stops heartbeating is marked down, sooner when
the agents' gossip says it is dead.

Each ready node has a timer of ``ttl`` seconds, reset by its heartbeats
(``Node.Heartbeat`` through ``Server.heartbeat``). When it fires the node is
marked ``down`` with one evaluation per job that had live allocations there, so
the scheduler replaces them. On a leadership gain every ready node gets a fresh
full TTL (a grace period to reach the new leader).

Gossip (``Node.ReportDead``, from any agent whose SWIM declared a member dead) only shortens
that timer, and only as far as the node's own heartbeats allow: the node is marked down once
it has been silent for ``confirm_silence`` (half the TTL: more than the agents' heartbeat
interval, a third of it), at once if it already has. A heartbeat puts the full TTL back. So a
host cut off from the other agents but not from the servers keeps its node ready, and missed
heartbeats stay the backstop when no agent reports anything.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from shoal.ids import new_id
from shoal.jobs.structs import EVAL_PENDING, NODE_DOWN, NODE_READY, Evaluation
from shoal.raft import ops
from shoal.raft.change import Change
from shoal.raft.state import StateSnapshot
from shoal.server.leader_manager import LeaderContext, LeaderManager, Tasks

log = structlog.get_logger("shoal.server.heartbeats")


def node_evals(snap: StateSnapshot, node_id: str, triggered_by: str, now: float) -> list[Evaluation]:
    """One evaluation per job with live allocations on ``node_id``."""
    jobs: dict[tuple[str, str], Evaluation] = {}
    for a in snap.allocs_by_node(node_id):
        if a.terminal() or (a.namespace, a.job_id) in jobs:
            continue
        job = snap.job(a.namespace, a.job_id)
        jobs[(a.namespace, a.job_id)] = Evaluation(
            id=new_id(),
            namespace=a.namespace,
            job_id=a.job_id,
            type=job.type if job else "service",
            priority=job.priority if job else 50,
            triggered_by=triggered_by,
            node_id=node_id,
            status=EVAL_PENDING,
            create_time=now,
            modify_time=now,
        )
    return list(jobs.values())


class Heartbeats(LeaderManager):
    name = "node heartbeats"

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.confirm_silence = ttl / 2
        self._ctx: LeaderContext | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_beat: dict[str, float] = {}  # node id -> loop time of its last heartbeat (or of arming)
        self._reported: set[str] = set()  # nodes gossip says are dead, their timers shortened
        self._tasks = Tasks(self.name)

    def armed(self) -> set[str]:
        """The nodes whose heartbeat timer runs."""
        return set(self._timers)

    @property
    def marking_down(self) -> int:
        return len(self._tasks)

    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        self._ctx = ctx
        for n in snap.nodes():
            if n.status == NODE_READY:
                self._arm(n.id)

    def on_changes(self, changes: list[Change]) -> None:
        for c in changes:
            if c.topic != "Node":
                continue
            if c.obj is None:  # deregistered
                self._disarm(c.key)
            elif c.obj.status == NODE_READY and c.key not in self._timers:
                self._arm(c.key)

    def heartbeat(self, node_id: str) -> float:
        """Reset ``node_id``'s timer; returns the TTL to announce to it."""
        if self._ctx is not None:  # before start, start arms every ready node anyway
            self._arm(node_id)
        return self.ttl

    def reported_dead(self, node_id: str) -> float | None:
        """An agent's gossip declared ``node_id`` dead: mark it down once it has been silent for
        ``confirm_silence``. Returns the seconds until then (0: now); None for a node not watched
        (unknown, or already down)."""
        if node_id not in self._timers:
            return None
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_beat[node_id] + self.confirm_silence - loop.time())
        old = self._timers[node_id]
        if old.when() - loop.time() > wait:  # only ever sooner
            old.cancel()
            self._timers[node_id] = loop.call_later(wait, self._expired, node_id)
            self._reported.add(node_id)
        return wait

    async def stop(self) -> None:
        for node_id in list(self._timers):
            self._disarm(node_id)
        await self._tasks.cancel()
        self._ctx = None

    def _arm(self, node_id: str) -> None:
        self._disarm(node_id)
        loop = asyncio.get_running_loop()
        self._last_beat[node_id] = loop.time()
        self._timers[node_id] = loop.call_later(self.ttl, self._expired, node_id)

    def _disarm(self, node_id: str) -> None:
        self._last_beat.pop(node_id, None)
        self._reported.discard(node_id)
        old = self._timers.pop(node_id, None)
        if old is not None:
            old.cancel()

    def _expired(self, node_id: str) -> None:
        self._timers.pop(node_id, None)
        self._last_beat.pop(node_id, None)
        why = "gossip reports it dead and it has not heartbeated since" if node_id in self._reported \
            else "it missed its heartbeat"
        self._reported.discard(node_id)
        if self._ctx is not None:
            self._tasks.spawn(self._mark_down(self._ctx, node_id, why), name=f"shoal-node-down-{node_id}")

    async def _mark_down(self, ctx: LeaderContext, node_id: str, why: str) -> None:
        now = time.time()
        snap = ctx.store.snapshot()
        node = snap.node(node_id)
        if node is None or node.status == NODE_DOWN:
            return
        evals = node_evals(snap, node_id, "node-update", now)
        log.warning("marking a node down", node_id=node_id, reason=why, evals=len(evals))
        try:
            await ctx.raft.submit(ops.NODE_STATUS, ops.NodeStatus(node_id=node_id, status=NODE_DOWN, evals=evals, now=now))
        except Exception as exc:
            log.warning("could not mark node down", node_id=node_id, error=str(exc))
