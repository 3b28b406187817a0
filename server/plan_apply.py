"""The plan applier (leader only): re-checks a plan against the latest state, then commits it.

Workers plan on snapshots that may be stale; the applier is the single place
where placements meet the current state (optimistic concurrency, as Nomad's
plan queue). Plans are applied one at a time: each is checked against a state
that includes every plan committed before it. Nodes that no longer fit are
refused and the worker plans again for what is missing. The evaluation's new
status is committed with the plan only when the whole plan fits.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from shoal.jobs.structs import Evaluation
from shoal.raft import ops
from shoal.raft.node import RaftNode
from shoal.raft.state import StateStore
from shoal.scheduler.plan import Plan, PlanResult
from shoal.scheduler.usage import node_fit

log = structlog.get_logger("shoal.server.plan")


class PlanApplier:
    def __init__(self, store: StateStore, raft: RaftNode):
        self.store = store
        self.raft = raft
        self._lock = asyncio.Lock()

    async def apply(self, plan: Plan, evals: list[Evaluation]) -> PlanResult:
        async with self._lock:
            accepted, refused = self._check(plan)
            allocs = [a for node_id in accepted for a in plan.node_allocation[node_id]]
            stops = [
                ops.AllocStop(
                    id=a.id,
                    desired_status=a.desired_status,
                    desired_description=a.desired_description,
                    client_status=a.client_status if a.client_status == "lost" else "",
                    preempted_by_allocation=a.preempted_by_allocation,
                )
                for group in (plan.node_update, plan.node_preemptions)
                for allocs_ in group.values()
                for a in allocs_
            ]
            inplace = [
                ops.AllocInplace(id=a.id, job_version=a.job_version, eval_id=a.eval_id, followup_eval_id=a.followup_eval_id)
                for allocs_ in plan.node_update_inplace.values()
                for a in allocs_
            ]
            payload = ops.PlanApply(
                eval_id=plan.eval_id,
                namespace=plan.namespace,
                job_id=plan.job_id,
                allocs=allocs,
                stops=stops,
                inplace=inplace,
                evals=[] if refused else evals,
                now=time.time(),
            )
            index, _ = await self.raft.submit(ops.PLAN_APPLY, payload)
        if refused:
            log.info("plan partly refused", eval_id=plan.eval_id, refused_nodes=len(refused))
        return PlanResult(
            index=index,
            node_allocation={n: plan.node_allocation[n] for n in accepted},
            node_update=dict(plan.node_update),
            refused_nodes=refused,
        )

    def _check(self, plan: Plan) -> tuple[list[str], list[str]]:
        accepted: list[str] = []
        refused: list[str] = []
        with self.store.reader() as s:
            for node_id, new in plan.node_allocation.items():
                node = s.node(node_id)
                if node is None or not node.schedulable():
                    refused.append(node_id)
                    continue
                removed = {a.id for a in plan.node_update.get(node_id, ())}
                removed |= {a.id for a in plan.node_preemptions.get(node_id, ())}
                fits = node_fit(node, s.allocs_by_node(node_id), new, removed) is None
                (accepted if fits else refused).append(node_id)
        return accepted, refused
