"""Scheduler workers (leader only): take an evaluation, plan on a snapshot, submit the plan."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import structlog

from shoal.ids import new_id
from shoal.jobs.structs import EVAL_COMPLETE, EVAL_FAILED, Evaluation
from shoal.raft import ops
from shoal.raft.node import RaftNode
from shoal.raft.state import StateStore
from shoal.scheduler import schedule
from shoal.server.broker import EvalBroker
from shoal.server.plan_apply import PlanApplier

log = structlog.get_logger("shoal.server.worker")

MAX_PLAN_ATTEMPTS = 5


class Worker:
    def __init__(self, name: str, store: StateStore, raft: RaftNode, broker: EvalBroker, planner: PlanApplier):
        self.name = name
        self.store = store
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
            snap = self.store.snapshot()
            plan = await asyncio.to_thread(schedule, snap, ev, now=time.time(), new_id=new_id)
            done = dataclasses.replace(
                ev,
                status=EVAL_COMPLETE,
                status_description="",
                failed_tg_allocs=plan.failed_tg_allocs,
                modify_time=time.time(),
            )
            if plan.is_noop():
                await self.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[done]))
                return
            result = await self.planner.apply(plan, [done])
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
