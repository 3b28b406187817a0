"""Placement: a state snapshot and an evaluation in, a plan out. Pure code, no I/O.

``schedule(state, evaluation, now=..., config=...)`` dispatches on the job's
type: service and batch jobs go to the :class:`GenericScheduler`, system and
sysbatch jobs to the :class:`SystemScheduler`. A job that is gone or stopped
has its allocations stopped by whichever scheduler its evaluation names.
"""

from __future__ import annotations

from collections.abc import Callable

from shoal.ids import new_id as _new_id
from shoal.jobs.structs import Evaluation
from shoal.scheduler.config import SchedulerConfig
from shoal.scheduler.generic import GenericScheduler
from shoal.scheduler.plan import Plan, PlanResult
from shoal.scheduler.rank import BINPACK, SPREAD
from shoal.scheduler.reconcile import AllocPlace, AllocStop, DesiredUpdates, ReconcileResult, reconcile
from shoal.scheduler.state import SchedulerState, StateReader
from shoal.scheduler.system import SYSTEM_TYPES, SystemScheduler
from shoal.scheduler.usage import NodeUsage, UsageIndex, node_fit

__all__ = [
    "BINPACK",
    "SPREAD",
    "AllocPlace",
    "AllocStop",
    "DesiredUpdates",
    "GenericScheduler",
    "NodeUsage",
    "Plan",
    "PlanResult",
    "ReconcileResult",
    "SchedulerConfig",
    "SchedulerState",
    "StateReader",
    "SystemScheduler",
    "UsageIndex",
    "node_fit",
    "reconcile",
    "schedule",
]


def schedule(
    state: SchedulerState,
    evaluation: Evaluation,
    *,
    now: float,
    new_id: Callable[[], str] = _new_id,
    algorithm: str | None = None,
    config: SchedulerConfig | None = None,
) -> Plan:
    """Compute the plan for ``evaluation`` against the snapshot ``state``.

    Reads through ``state``: ``job(namespace, job_id)``, ``allocs_by_job(namespace,
    job_id)``, ``node(id)`` for the nodes of the job's allocations, and, when
    something is to be placed, ``nodes()`` and ``allocs_by_node(id)`` for the
    nodes it ranks, ``job_version(namespace, job_id, version)`` (in-place
    updates compare against the older version) and ``usage_index()`` (per-node
    sums and best-fit candidates, see :class:`UsageIndex`; None: walk the nodes).
    ``algorithm`` overrides ``config.algorithm``.
    """
    config = config or SchedulerConfig()
    if algorithm is not None and algorithm != config.algorithm:
        config = SchedulerConfig(
            algorithm=algorithm,
            preempt_system=config.preempt_system,
            preempt_sysbatch=config.preempt_sysbatch,
            preempt_service=config.preempt_service,
            preempt_batch=config.preempt_batch,
            max_skip=config.max_skip,
            score_threshold=config.score_threshold,
        )
    job = state.job(evaluation.namespace, evaluation.job_id)
    job_type = job.type if job is not None else evaluation.type
    if job_type in SYSTEM_TYPES:
        return SystemScheduler(config).schedule(state, evaluation, now=now, new_id=new_id)
    return GenericScheduler(config).schedule(state, evaluation, now=now, new_id=new_id)
