"""Scheduler workers (leader only): take an evaluation, plan on a snapshot, submit the plan."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time

import structlog

from shoal.ids import new_id
from shoal.jobs.structs import EVAL_BLOCKED, EVAL_CANCELED, EVAL_COMPLETE, EVAL_FAILED, Evaluation
from shoal.raft import ops
from shoal.raft.node import RaftNode
from shoal.scheduler import SchedulerConfig, schedule
from shoal.scheduler.plan import Plan
from shoal.scheduler.system import SYSTEM_TYPES
from shoal.server.broker import EvalBroker
from shoal.server.plan_apply import PlanApplier
from shoal.scheduler.usage import IndexedState
from shoal.server.usage import UsageIndexer

log = structlog.get_logger("shoal.server.worker")

MAX_PLAN_ATTEMPTS = 5
# An evaluation this small is scheduled on the event loop, a larger one on a thread (so that the loop
# goes on answering RPCs while it is planned). Small, it takes well under a millisecond: about 25 us a
# placement, and at worst one feasibility walk over the nodes (about 12 us each) when a group does not
# fit. A thread costs more than that: two thread wake-ups, and the loop waiting for the GIL while the
# thread holds it. With a thread for every evaluation, bench/raft_write.py's commit latency at 2,000
# job registrations/s was twice as high in 3 alternating pairs (p50 41-100 ms against 14-23 ms); on a
# busier host later the difference was lost in the noise.
INLINE_MAX_ALLOCS = 16
INLINE_MAX_NODES = 512


class Worker:
    def __init__(self, name: str, usage: UsageIndexer, raft: RaftNode, broker: EvalBroker, planner: PlanApplier,
                 config: SchedulerConfig):
        self.name = name
        self.usage = usage
        self.config = config
        self.raft = raft
        self.broker = broker
        self.planner = planner

    async def run(self) -> None:
        while True:
            ev = await self.broker.dequeue()
            try:
                await self.process(ev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("evaluation failed", eval_id=ev.id, job_id=ev.job_id)
                if not self.broker.nack(ev):
                    await self._finish(ev, EVAL_FAILED, f"scheduler error: {exc}")
                    self.broker.ack(ev)
                continue
            self.broker.ack(ev)

    async def process(self, ev: Evaluation) -> None:
        for attempt in range(1, MAX_PLAN_ATTEMPTS + 1):
            snap = self.usage.state()
            now = time.time()
            plan_it = functools.partial(schedule, snap, ev, now=now, new_id=new_id, config=self.config)
            plan = plan_it() if plans_inline(snap, ev) else await asyncio.to_thread(plan_it)
            evals = eval_outcome(ev, plan, snap, now)
            if plan.is_noop():
                await self.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=evals))
                return
            result = await self.planner.apply(plan, evals)
            log.info(
                "plan applied",
                worker=self.name,
                eval_id=ev.id,
                job_id=ev.job_id,
                placed=sum(len(v) for v in result.node_allocation.values()),
                stopped=sum(len(v) for v in result.node_update.values()),
                refused_nodes=len(result.refused_nodes),
                attempt=attempt,
            )
            if result.fully_committed():
                return
        await self._finish(ev, EVAL_FAILED, f"plan refused {MAX_PLAN_ATTEMPTS} times: the cluster kept changing")

    async def _finish(self, ev: Evaluation, status: str, description: str) -> None:
        final = dataclasses.replace(ev, status=status, status_description=description, modify_time=time.time())
        await self.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[final]))


def eval_outcome(ev: Evaluation, plan: Plan, snap: IndexedState, now: float) -> list[Evaluation]:
    """The evaluation's final record plus those it spawns: delayed reschedules, a blocked
    evaluation for what could not be placed, and one for each job that lost allocations to preemption."""
    blocked = plan.blocked_eval
    done = dataclasses.replace(
        ev,
        status=EVAL_COMPLETE,
        status_description="",
        failed_tg_allocs=plan.failed_tg_allocs,
        blocked_eval=blocked.id if blocked else "",
        modify_time=now,
    )
    out = [done, *plan.followup_evals]
    if blocked is not None:
        # One blocked evaluation per job: an older one is superseded.
        for old in snap.snapshot.evals_by_job(ev.namespace, ev.job_id):
            if old.status == EVAL_BLOCKED and old.id != blocked.id:
                out.append(dataclasses.replace(old, status=EVAL_CANCELED, status_description="superseded", modify_time=now))
        out.append(blocked)
    preempted_jobs = {(a.namespace, a.job_id) for allocs in plan.node_preemptions.values() for a in allocs}
    for ns, job_id in sorted(preempted_jobs):
        job = snap.job(ns, job_id)
        if job is not None:
            out.append(Evaluation.for_job(job, new_id(), "preemption", now))
    return out


def plans_inline(state: IndexedState, ev: Evaluation) -> bool:
    """Whether scheduling ``ev`` is small enough for the event loop: a cluster of at most
    ``INLINE_MAX_NODES`` schedulable nodes, and at most ``INLINE_MAX_ALLOCS`` allocations that the job
    asks for (a system job: one per node) or already has."""
    nodes = state.usage_index().node_count()
    if nodes > INLINE_MAX_NODES:
        return False
    job = state.job(ev.namespace, ev.job_id)
    wanted = 0
    if job is not None and not job.stop:
        wanted = sum(g.count for g in job.groups) * (nodes if job.type in SYSTEM_TYPES else 1)
    return wanted + len(state.allocs_by_job(ev.namespace, ev.job_id)) <= INLINE_MAX_ALLOCS
