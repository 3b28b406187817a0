"""``job plan``: run the scheduler on what the state would be with a job registered, commit nothing."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from shoal import codec
from shoal.ids import new_id
from shoal.jobs.diff import diff_jobs
from shoal.jobs.model import Job
from shoal.jobs.structs import Evaluation
from shoal.raft.fsm import job_spec
from shoal.raft.state import StateSnapshot
from shoal.scheduler import SchedulerConfig, schedule
from shoal.scheduler.usage import IndexedState


class WithJob(IndexedState[StateSnapshot]):
    """The scheduler's view after a register: an indexed snapshot in which one job is replaced."""

    __slots__ = ("_job",)

    def __init__(self, snap: IndexedState[StateSnapshot], job: Job):
        super().__init__(snap.snapshot, snap.usage_index())
        self._job = job

    def job(self, namespace: str, job_id: str) -> Job | None:
        if (namespace, job_id) == (self._job.namespace, self._job.id):
            return self._job
        return self.snapshot.job(namespace, job_id)


def plan_job(snap: IndexedState[StateSnapshot], job: Job, config: SchedulerConfig | None = None) -> dict[str, Any]:
    old = snap.job(job.namespace, job.id)
    index = snap.snapshot.index
    changed = old is None or old.stop or job_spec(old) != job_spec(job)
    candidate = dataclasses.replace(
        job,
        version=(old.version + 1 if changed else old.version) if old else 0,
        create_index=old.create_index if old else index + 1,
        job_modify_index=index + 1 if changed else old.job_modify_index,
        modify_index=index + 1,
        stop=False,
    )
    now = time.time()
    ev = Evaluation.for_job(job, new_id(), "job-plan", now)
    plan = schedule(WithJob(snap, candidate), ev, now=now, new_id=new_id, config=config)
    per_group: dict[str, dict[str, int]] = {g.name: {"create": 0, "destroy": 0} for g in candidate.groups}
    for allocs in plan.node_allocation.values():
        for a in allocs:
            per_group.setdefault(a.task_group, {"create": 0, "destroy": 0})["create"] += 1
    for allocs in plan.node_update.values():
        for a in allocs:
            per_group.setdefault(a.task_group, {"create": 0, "destroy": 0})["destroy"] += 1
    return {
        "job_id": job.id,
        "version": candidate.version,
        "job_modify_index": old.job_modify_index if old else 0,
        "diff": [{"path": c.path, "kind": c.kind, "old": c.old, "new": c.new} for c in diff_jobs(old, job)],
        "groups": per_group,
        "annotations": {g: codec.to_plain(a) for g, a in plan.annotations.items()},
        "failed_tg_allocs": {g: codec.to_plain(f) for g, f in plan.failed_tg_allocs.items()},
        "changes": not plan.is_noop(),
    }
