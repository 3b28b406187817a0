"""A Plan: what one scheduler run wants changed. The leader's plan applier commits it.

What the server does with each field:

* ``node_allocation``: new allocations; fit re-checked per node (resources and
  host ports, see :func:`shoal.scheduler.usage.node_fit`), then committed.
* ``node_update``: stops (desired status and description set; client status
  ``lost`` for allocations of down nodes).
* ``node_update_inplace``: existing allocations whose record changes without a
  stop: an in-place update to the new job version, or a failed allocation now
  pointing at the follow-up evaluation that will reschedule it
  (``followup_eval_id``). Commit the record's ``job_version``, ``eval_id``,
  ``followup_eval_id`` over the current one; they use no new resources.
* ``node_preemptions``: allocations evicted to make room (desired status
  ``evict``, ``preempted_by_allocation`` set); they free their resources in the
  fit check, and their jobs need a new evaluation (triggered by ``preemption``).
* ``followup_evals``: delayed evaluations (``wait_until``) to reschedule failed
  allocations later; commit them with the plan (status pending); the broker
  holds each until its time.
* ``blocked_eval``: set when some allocations could not be placed
  (``failed_tg_allocs``): an evaluation in status ``blocked`` for the server's
  blocked-evaluation tracker, to be re-run when capacity changes (a node
  registers, becomes ready or eligible, or allocations stop). Its id goes in the
  evaluation's ``blocked_eval``. At most one blocked evaluation per job: a newer
  one replaces (cancels) an older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation, PlacementFailure
from shoal.scheduler.reconcile import DesiredUpdates


@dataclass(slots=True)
class Plan:
    eval_id: str = ""
    namespace: str = "default"
    job_id: str = ""
    job_modify_index: int = 0  # the job version this plan was computed for
    priority: int = 50
    # node_id -> new allocations to place there
    node_allocation: dict[str, list[Allocation]] = field(default_factory=dict)
    # node_id -> allocations to stop there (desired_status and description already set)
    node_update: dict[str, list[Allocation]] = field(default_factory=dict)
    # node_id -> existing allocations updated without a stop (in-place update, follow-up eval id)
    node_update_inplace: dict[str, list[Allocation]] = field(default_factory=dict)
    # node_id -> allocations evicted for this plan's placements (desired_status "evict")
    node_preemptions: dict[str, list[Allocation]] = field(default_factory=dict)
    # task group -> why some allocations could not be placed
    failed_tg_allocs: dict[str, PlacementFailure] = field(default_factory=dict)
    # delayed evaluations to create with the plan (reschedules of failed allocations)
    followup_evals: list[Evaluation] = field(default_factory=list)
    # an evaluation to keep as blocked when allocations could not be placed
    blocked_eval: Evaluation | None = None
    # task group -> what the reconciler decided (place, stop, in-place, destructive, ...): for ``job plan``
    annotations: dict[str, DesiredUpdates] = field(default_factory=dict)

    @classmethod
    def for_evaluation(cls, evaluation: Evaluation, job: Job | None) -> Plan:
        """An empty plan for ``evaluation`` of ``job`` (None: the job is gone; the evaluation says which)."""
        return cls(
            eval_id=evaluation.id,
            namespace=evaluation.namespace,
            job_id=evaluation.job_id,
            job_modify_index=job.job_modify_index if job is not None else evaluation.job_modify_index,
            priority=job.priority if job is not None else evaluation.priority,
        )

    def is_noop(self) -> bool:
        """No allocation changes (evaluations to create may still be attached)."""
        return not (self.node_allocation or self.node_update or self.node_update_inplace or self.node_preemptions)

    def needs_blocked_eval(self) -> bool:
        return self.blocked_eval is not None

    def append_alloc(self, alloc: Allocation) -> None:
        self.node_allocation.setdefault(alloc.node_id, []).append(alloc)

    def append_stop(self, alloc: Allocation) -> None:
        self.node_update.setdefault(alloc.node_id, []).append(alloc)

    def append_inplace(self, alloc: Allocation) -> None:
        self.node_update_inplace.setdefault(alloc.node_id, []).append(alloc)

    def append_preemption(self, alloc: Allocation) -> None:
        self.node_preemptions.setdefault(alloc.node_id, []).append(alloc)


@dataclass(slots=True)
class PlanResult:
    """What the applier committed of a plan; ``refused`` node ids did not fit any more."""

    index: int = 0
    node_allocation: dict[str, list[Allocation]] = field(default_factory=dict)
    node_update: dict[str, list[Allocation]] = field(default_factory=dict)
    refused_nodes: list[str] = field(default_factory=list)

    def fully_committed(self) -> bool:
        return not self.refused_nodes
