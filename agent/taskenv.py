"""A task's runtime environment: Nomad's NOMAD_* variables, each with its SHOAL_* twin.

The task runner starts a spec's env with ``task_env``; task hooks add theirs
(the directories: hooks/allocdir.py; the ports: hooks/network.py); the task's own ``env`` block comes last and wins.
"""

from __future__ import annotations

from shoal.jobs.model import Job, Task, TaskGroup
from shoal.jobs.structs import Allocation


def runtime_env(values: dict[str, str]) -> dict[str, str]:
    """``NOMAD_<KEY>`` and ``SHOAL_<KEY>`` for every key."""
    return {f"{prefix}_{k}": v for prefix in ("NOMAD", "SHOAL") for k, v in values.items()}


def task_env(alloc: Allocation, job: Job, group: TaskGroup, task: Task) -> dict[str, str]:
    """The allocation's and task's identity and its limits (its ports: hooks/network.py)."""
    values = {
        "ALLOC_ID": alloc.id,
        "ALLOC_NAME": alloc.name,
        "ALLOC_INDEX": str(alloc.index),
        "JOB_ID": job.id,
        "JOB_NAME": job.name or job.id,
        "GROUP_NAME": group.name,
        "TASK_NAME": task.name,
        "NAMESPACE": job.namespace,
        "CPU_LIMIT": str(task.resources.cpu),
        "MEMORY_LIMIT": str(task.resources.memory),
    }
    return runtime_env(values)
