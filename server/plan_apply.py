"""The plan applier (a leader manager): re-checks a plan against the latest state, then commits it.

Workers plan on snapshots that may be stale; the applier is the single place
where placements meet the current state (optimistic concurrency, as Nomad's
plan queue). Plans are applied one at a time: each is checked against a state
that includes every plan committed before it. Nodes that no longer fit are
refused and the worker plans again for what is missing. The evaluation's new
status is committed with the plan only when the whole plan fits.

The check (:func:`check_plan`) and the command committed (:func:`plan_payload`)
are pure functions; ``bench/scheduler.py`` calls the same two.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from shoal.errors import NoLeader
from shoal.jobs.structs import Evaluation
from shoal.raft import ops
from shoal.raft.state import StateSnapshot
from shoal.scheduler.plan import Plan, PlanResult
from shoal.scheduler.usage import node_fit
from shoal.server.leader_manager import LeaderContext, LeaderManager

log = structlog.get_logger("shoal.server.plan")


@dataclass(frozen=True, slots=True)
class PlanCheck:
    """Which nodes of a plan's ``node_allocation`` still fit (``accepted``) and which do not (``refused``)."""

    accepted: list[str]
    refused: list[str]

    def result(self, plan: Plan, index: int) -> PlanResult:
        return PlanResult(
            index=index,
            node_allocation={n: plan.node_allocation[n] for n in self.accepted},
            node_update=dict(plan.node_update),
            refused_nodes=list(self.refused),
        )


def check_plan(snap: StateSnapshot, plan: Plan) -> PlanCheck:
    """Node by node: is the node still there and schedulable, and do its new allocations fit beside
    those it has (less the plan's stops and preemptions there)?"""
    accepted: list[str] = []
    refused: list[str] = []
    for node_id, new in plan.node_allocation.items():
        node = snap.node(node_id)
        if node is None or not node.schedulable():
            refused.append(node_id)
            continue
        removed = {a.id for a in plan.node_update.get(node_id, ())}
        removed |= {a.id for a in plan.node_preemptions.get(node_id, ())}
        fits = node_fit(node, snap.allocs_by_node(node_id), new, removed) is None
        (accepted if fits else refused).append(node_id)
    return PlanCheck(accepted, refused)


def plan_payload(plan: Plan, check: PlanCheck, evals: list[Evaluation], now: float) -> ops.PlanApply:
    """The ``plan.apply`` command for what ``check`` accepted of ``plan``: its placements on the
    accepted nodes, all its stops, preemptions and in-place updates, and ``evals`` (the evaluation's
    outcome) only when nothing was refused (else the worker plans again)."""
    stops = [
        ops.AllocStop(
            id=a.id,
            desired_status=a.desired_status,
            desired_description=a.desired_description,
            client_status=a.client_status if a.client_status == "lost" else "",
            preempted_by_allocation=a.preempted_by_allocation,
        )
        for group in (plan.node_update, plan.node_preemptions)
        for allocs in group.values()
        for a in allocs
    ]
    inplace = [
        ops.AllocInplace(id=a.id, job_version=a.job_version, eval_id=a.eval_id, followup_eval_id=a.followup_eval_id)
        for allocs in plan.node_update_inplace.values()
        for a in allocs
    ]
    return ops.PlanApply(
        eval_id=plan.eval_id,
        namespace=plan.namespace,
        job_id=plan.job_id,
        allocs=[a for node_id in check.accepted for a in plan.node_allocation[node_id]],
        stops=stops,
        inplace=inplace,
        evals=[] if check.refused else evals,
        now=now,
    )


class PlanApplier(LeaderManager):
    name = "plan applier"

    def __init__(self) -> None:
        self._ctx: LeaderContext | None = None
        self._lock = asyncio.Lock()

    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        self._ctx = ctx

    async def stop(self) -> None:
        async with self._lock:  # a plan being committed finishes first
            self._ctx = None

    async def apply(self, plan: Plan, evals: list[Evaluation]) -> PlanResult:
        async with self._lock:
            ctx = self._ctx
            if ctx is None:
                raise NoLeader("no cluster leader: this server stopped leading; the plan was not applied")
            check = check_plan(ctx.store.snapshot(), plan)
            index, _ = await ctx.raft.submit(ops.PLAN_APPLY, plan_payload(plan, check, evals, time.time()))
        if check.refused:
            log.info("plan partly refused", eval_id=plan.eval_id, refused_nodes=len(check.refused))
        return check.result(plan, index)
