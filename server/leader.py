"""What only the leader does: the evaluation broker, scheduler workers, the plan
applier and node heartbeat timers. Started on gaining leadership, stopped on
losing it, and rebuilt from the replicated state each time, so an evaluation in
flight when a leader dies is picked up by the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import structlog

from shoal.ids import new_id
from shoal.jobs.structs import EVAL_BLOCKED, EVAL_PENDING, NODE_DOWN, NODE_READY, Evaluation
from shoal.raft import ops
from shoal.raft.fsm import Change
from shoal.raft.node import RaftNode
from shoal.raft.state import StateSnapshot, StateStore
from shoal.scheduler import SchedulerConfig
from shoal.server.broker import EvalBroker
from shoal.server.plan_apply import PlanApplier
from shoal.server.usage import UsageIndexer
from shoal.server.watch import StateWatch
from shoal.server.worker import Worker

log = structlog.get_logger("shoal.server.leader")

UNBLOCK_DELAY = 0.2  # seconds: capacity changes within this window unblock evaluations once


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


class LeaderDuties:
    def __init__(self, store: StateStore, raft: RaftNode, watch: StateWatch, usage: UsageIndexer, *, workers: int,
                 heartbeat_ttl: float, scheduler: SchedulerConfig | None = None):
        self.store = store
        self.usage = usage
        self.scheduler = scheduler or SchedulerConfig()
        self.raft = raft
        self.watch = watch
        self.num_workers = workers
        self.heartbeat_ttl = heartbeat_ttl
        self.broker = EvalBroker()
        self.planner = PlanApplier(store, raft)
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unsubscribe = None
        self._blocked: dict[str, Evaluation] = {}
        self._unblock_handle: asyncio.TimerHandle | None = None
        self.running = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.running = True
        self.broker = EvalBroker()
        self._unsubscribe = self.watch.subscribe(self._on_changes)
        # Everything applied before we became leader: wait for it, then rebuild from it.
        try:
            await self.raft.barrier()
        except Exception as exc:
            log.warning("leader barrier failed", error=str(exc))
        with self.store.reader() as s:
            pending = [e for e in s.evals() if e.status == EVAL_PENDING]
            self._blocked = {e.id: e for e in s.evals() if e.status == EVAL_BLOCKED}
            ready = [n.id for n in s.nodes() if n.status == NODE_READY]
        for ev in sorted(pending, key=lambda e: e.create_index):
            self.broker.enqueue(ev)
        for node_id in ready:  # a grace period: every node gets a full TTL to reach us
            self._arm(node_id)
        for i in range(self.num_workers):
            w = Worker(f"worker-{i}", self.usage, self.raft, self.broker, self.planner, self.scheduler)
            self._tasks.append(loop.create_task(w.run(), name=f"shoal-{w.name}"))
        log.info("leader duties started", pending_evals=len(pending), nodes=len(ready))

    async def stop(self) -> None:
        self.running = False
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        while self._tasks:  # cancel until every task has really finished
            for t in self._tasks:
                t.cancel()
            done, _ = await asyncio.wait(list(self._tasks), timeout=1.0)
            self._tasks = [t for t in self._tasks if t not in done]
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        if self._unblock_handle is not None:
            self._unblock_handle.cancel()
            self._unblock_handle = None
        self.broker.clear()
        log.info("leader duties stopped")

    # --- evaluations fed by committed changes ---
    def _on_changes(self, changes: list[Change]) -> None:
        capacity = False
        for c in changes:
            if c.topic == "Evaluation" and c.obj is not None:
                if c.obj.status == EVAL_PENDING:
                    self.broker.enqueue(c.obj)
                elif c.obj.status == EVAL_BLOCKED:
                    self._blocked[c.key] = c.obj
                else:
                    self._blocked.pop(c.key, None)
            elif c.topic == "Node" and c.obj is not None:
                if c.obj.status == NODE_READY and c.key not in self._timers:
                    self._arm(c.key)
                capacity |= c.obj.schedulable()
            elif c.topic == "Allocation" and c.obj is not None and c.obj.terminal():
                capacity = True
        if capacity and self._blocked and self._unblock_handle is None:
            # Capacity may have appeared: re-run blocked evaluations (coalesced over a short window).
            self._unblock_handle = asyncio.get_running_loop().call_later(UNBLOCK_DELAY, self._unblock)

    def _unblock(self) -> None:
        self._unblock_handle = None
        if not self.running or not self._blocked:
            return
        now = time.time()
        evals = [dataclasses.replace(e, status=EVAL_PENDING, status_description="capacity changed", modify_time=now)
                 for e in self._blocked.values()]
        self._blocked.clear()
        self._spawn(self.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=evals)))

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(t)
        t.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # --- heartbeats ---
    def heartbeat(self, node_id: str) -> float:
        self._arm(node_id)
        return self.heartbeat_ttl

    def _arm(self, node_id: str) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(node_id, None)
        if old is not None:
            old.cancel()
        self._timers[node_id] = loop.call_later(self.heartbeat_ttl, self._expired, node_id)

    def _expired(self, node_id: str) -> None:
        self._timers.pop(node_id, None)
        if self.running:
            self._spawn(self._mark_down(node_id))

    async def _mark_down(self, node_id: str) -> None:
        now = time.time()
        with self.store.reader() as s:
            node = s.node(node_id)
            if node is None or node.status == NODE_DOWN:
                return
            evals = node_evals(s, node_id, "node-update", now)
        log.warning("node missed its heartbeat: marking it down", node_id=node_id, evals=len(evals))
        try:
            await self.raft.submit(ops.NODE_STATUS, ops.NodeStatus(node_id=node_id, status=NODE_DOWN, evals=evals, now=now))
        except Exception as exc:
            log.warning("could not mark node down", node_id=node_id, error=str(exc))
