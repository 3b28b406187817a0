"""Placement: a state snapshot and an evaluation in, a plan out. Pure code, no I/O.

``schedule(state, evaluation, now=...)`` dispatches on the job's type. Service
and batch jobs go to the :class:`GenericScheduler`. System and sysbatch jobs
are not placed yet: their plan only stops allocations when the job is stopped
or gone, and otherwise reports each group as not placed, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.ids import new_id as _new_id
from shoal.jobs.structs import Evaluation, PlacementFailure
from shoal.scheduler.generic import GenericScheduler
from shoal.scheduler.plan import Plan, PlanResult
from shoal.scheduler.rank import BINPACK, SPREAD
from shoal.scheduler.reconcile import AllocPlace, AllocStop, ReconcileResult, reconcile
from shoal.scheduler.state import StateReader

GENERIC_TYPES = ("service", "batch")

__all__ = [
    "BINPACK",
    "SPREAD",
    "AllocPlace",
    "AllocStop",
    "GenericScheduler",
    "Plan",
    "PlanResult",
    "ReconcileResult",
    "StateReader",
    "reconcile",
    "schedule",
]


def schedule(
    state: StateReader,
    evaluation: Evaluation,
    *,
    now: float,
    new_id: Callable[[], str] = _new_id,
    algorithm: str = BINPACK,
) -> Plan:
    """Compute the plan for ``evaluation`` against the snapshot ``state``.

    Reads through ``state``: ``job(namespace, job_id)``, ``allocs_by_job(namespace,
    job_id)``, ``node(id)`` for the nodes of the job's allocations, and, when
    something is to be placed, ``nodes()`` and ``allocs_by_node(id)`` for the
    nodes it ranks.
    """
    job = state.job(evaluation.namespace, evaluation.job_id)
    scheduler = GenericScheduler(algorithm=algorithm)
    if job is None or job.stop or job.type in GENERIC_TYPES:
        return scheduler.schedule(state, evaluation, now=now, new_id=new_id)
    plan = Plan(
        eval_id=evaluation.id,
        namespace=evaluation.namespace,
        job_id=evaluation.job_id,
        job_modify_index=job.job_modify_index,
        priority=job.priority,
    )
    for group in job.groups:
        plan.failed_tg_allocs[group.name] = PlacementFailure(
            task_group=group.name,
            missing=group.count,
            reason=f"job type {job.type} is not supported yet",
        )
    return plan
