"""Runs one allocation: its task runners, its directory, and its client status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from shoal.agent.drivers.base import Driver, DriverError, ExitResult, TaskHandle, TaskSpec
from shoal.agent.taskrunner import TaskRunner
from shoal.jobs.model import Job
from shoal.jobs.structs import (
    ALLOC_COMPLETE,
    ALLOC_FAILED,
    ALLOC_PENDING,
    ALLOC_RUNNING,
    TASK_DEAD,
    TASK_RUNNING,
    AllocUpdate,
    Allocation,
)

log = structlog.get_logger("shoal.agent.alloc")


class MissingDriver:
    """Stands in for a driver this node does not have: every start fails, clearly."""

    def __init__(self, name: str):
        self.name = name

    def fingerprint(self) -> dict[str, str] | None:
        return None

    async def start(self, spec: TaskSpec) -> TaskHandle:
        raise DriverError(f"driver {self.name!r} is not available on this node")

    async def wait(self, handle: TaskHandle) -> ExitResult:
        raise DriverError("unreachable")

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        return None

    async def destroy(self, handle: TaskHandle) -> None:
        return None

    async def recover(self, handle: TaskHandle) -> bool:
        return False


class AllocRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: Job,
        drivers: dict[str, Driver],
        allocs_dir: Path,
        on_update: Callable[[AllocUpdate], None],
    ):
        self.alloc = alloc
        self.job = job
        self.dir = allocs_dir / alloc.id
        self.on_update = on_update
        group = job.group(alloc.task_group)
        if group is None:
            raise ValueError(f"job {job.id} version {job.version} has no group {alloc.task_group!r}")
        self.group = group
        self.tasks = [
            TaskRunner(alloc, job, group, t, drivers.get(t.driver) or MissingDriver(t.driver), self.dir, self._changed)
            for t in group.tasks
        ]
        self._task: asyncio.Task[None] | None = None
        self._last_status = ""

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def start(self) -> None:
        (self.dir / "alloc" / "logs").mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"alloc-{self.alloc.id[:8]}")

    async def _run(self) -> None:
        runs = [asyncio.create_task(tr.run(), name=f"task-{tr.task.name}") for tr in self.tasks]
        try:
            await asyncio.gather(*runs)
        except asyncio.CancelledError:
            for r in runs:
                r.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            raise
        except Exception:
            log.exception("allocation runner failed", alloc_id=self.alloc.id)
        self._changed()

    def _changed(self) -> None:
        states = [tr.state for tr in self.tasks]
        if any(s.state == TASK_DEAD and s.failed for s in states):
            status, desc = ALLOC_FAILED, "Failed tasks"
            # one failed task fails the allocation: stop its siblings (as Nomad does)
            for tr in self.tasks:
                if tr.state.state != TASK_DEAD:
                    asyncio.get_running_loop().create_task(tr.kill("Sibling task failed"))
        elif all(s.state == TASK_DEAD for s in states):
            status, desc = ALLOC_COMPLETE, "All tasks have completed"
        elif any(s.state == TASK_RUNNING for s in states):
            status, desc = ALLOC_RUNNING, "Tasks are running"
        else:
            status, desc = ALLOC_PENDING, "No tasks have started"
        self._last_status = status
        self.on_update(
            AllocUpdate(
                id=self.alloc.id,
                client_status=status,
                client_description=desc,
                task_states={tr.task.name: tr.state for tr in self.tasks},
            )
        )

    async def stop(self, reason: str = "alloc stopped") -> None:
        """Kill every task and wait for the runners to finish cleaning up."""
        await asyncio.gather(*(tr.kill(reason) for tr in self.tasks))
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
