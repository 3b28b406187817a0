"""Runs one task: start through its driver, wait, restart per policy, report every step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from shoal.agent.drivers.base import Driver, DriverError, ExitResult, TaskHandle, TaskSpec
from shoal.agent.restart import COMPLETE, FAIL, RestartTracker
from shoal.jobs.model import Job, Task, TaskGroup, task_restart
from shoal.jobs.structs import TASK_DEAD, TASK_PENDING, TASK_RUNNING, Allocation, TaskEvent, TaskState

log = structlog.get_logger("shoal.agent.task")

MAX_EVENTS = 20


def log_paths(alloc_dir: Path, task: str) -> tuple[Path, Path]:
    logs = alloc_dir / "alloc" / "logs"
    return logs / f"{task}.stdout.0", logs / f"{task}.stderr.0"


def task_env(alloc: Allocation, job: Job, group: TaskGroup, task: Task, alloc_dir: Path) -> dict[str, str]:
    """Nomad's runtime variables, then the task's own env."""
    env = {
        "NOMAD_ALLOC_ID": alloc.id,
        "NOMAD_ALLOC_NAME": alloc.name,
        "NOMAD_ALLOC_INDEX": str(alloc.index),
        "NOMAD_JOB_ID": job.id,
        "NOMAD_JOB_NAME": job.name or job.id,
        "NOMAD_GROUP_NAME": group.name,
        "NOMAD_TASK_NAME": task.name,
        "NOMAD_NAMESPACE": job.namespace,
        "NOMAD_CPU_LIMIT": str(task.resources.cpu),
        "NOMAD_MEMORY_LIMIT": str(task.resources.memory),
    }
    env.update({k.replace("NOMAD_", "SHOAL_", 1): v for k, v in list(env.items())})
    env.update(task.env)
    return env


class TaskRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: Job,
        group: TaskGroup,
        task: Task,
        driver: Driver,
        alloc_dir: Path,
        on_change: Callable[[], None],
    ):
        self.alloc, self.job, self.group, self.task = alloc, job, group, task
        self.driver = driver
        self.alloc_dir = alloc_dir
        self.on_change = on_change
        self.state = TaskState(state=TASK_PENDING)
        self.handle: TaskHandle | None = None
        self._killed = asyncio.Event()
        self._tracker = RestartTracker(task_restart(job, group, task), batch=job.type in ("batch", "sysbatch"))

    # --- reporting ---
    def _event(self, type_: str, message: str = "", exit_code: int | None = None) -> None:
        self.state.events.append(TaskEvent(type=type_, time=time.time(), message=message, exit_code=exit_code))
        del self.state.events[:-MAX_EVENTS]
        self.on_change()

    def _spec(self) -> TaskSpec:
        stdout, stderr = log_paths(self.alloc_dir, self.task.name)
        return TaskSpec(
            alloc_id=self.alloc.id,
            job_id=self.job.id,
            group=self.group.name,
            task=self.task.name,
            config=dict(self.task.config),
            env=task_env(self.alloc, self.job, self.group, self.task, self.alloc_dir),
            resources=self.task.resources,
            task_dir=self.alloc_dir / self.task.name,
            stdout_path=stdout,
            stderr_path=stderr,
            user=self.task.user,
            kill_signal=self.task.kill_signal,
            kill_timeout=self.task.kill_timeout,
        )

    # --- the loop ---
    async def run(self) -> None:
        self._event("Received", "Task received by client")
        try:
            while not self._killed.is_set():
                spec = self._spec()
                spec.task_dir.mkdir(parents=True, exist_ok=True)
                spec.stdout_path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._event("Task Setup", f"Starting with driver {self.driver.name}")
                    self.handle = await self.driver.start(spec)
                except DriverError as err:
                    self._event("Driver Failure", str(err))
                    if not await self._after_exit(success=False, recoverable=err.recoverable):
                        return
                    continue
                self.state.state = TASK_RUNNING
                self.state.started_at = time.time()
                self._event("Started", "Task started by client")
                result = await self._wait()
                await self._destroy()
                if self._killed.is_set():
                    self._finish(failed=False)
                    self._event("Killed", "Task successfully killed")
                    return
                self._report_exit(result)
                if not await self._after_exit(success=result.successful()):
                    return
        except asyncio.CancelledError:
            await self._destroy()
            raise
        finally:
            if self.state.state != TASK_DEAD:
                self._finish(failed=False)

    async def _wait(self) -> ExitResult:
        assert self.handle is not None
        return await self.driver.wait(self.handle)

    def _report_exit(self, result: ExitResult) -> None:
        self.state.exit_code = result.exit_code
        if result.oom_killed:
            self._event("OOM Killed", "Task was killed by the kernel's OOM killer", result.exit_code)
        msg = f"Exit Code: {result.exit_code}" + (f", Signal: {result.signal}" if result.signal else "")
        self._event("Terminated", msg, result.exit_code)

    async def _after_exit(self, *, success: bool, recoverable: bool = True) -> bool:
        """Apply the restart policy; True to run again."""
        d = self._tracker.decide(now=time.time(), success=success, recoverable=recoverable)
        if d.action == COMPLETE:
            self._finish(failed=False)
            return False
        if d.action == FAIL:
            self._finish(failed=True)
            self._event("Not Restarting", d.reason)
            return False
        self.state.restarts += 1
        self.state.state = TASK_PENDING
        self._event("Restarting", f"Task restarting in {d.delay:g}s ({d.reason})")
        try:
            await asyncio.wait_for(self._killed.wait(), d.delay)
            self._finish(failed=False)
            self._event("Killed", "Task killed while waiting to restart")
            return False
        except TimeoutError:
            return True

    def _finish(self, *, failed: bool) -> None:
        self.state.state = TASK_DEAD
        self.state.failed = failed
        self.state.finished_at = time.time()
        self.on_change()

    async def _destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                await self.driver.destroy(handle)
            except Exception as exc:
                log.warning("destroying task failed", alloc_id=self.alloc.id, task=self.task.name, error=str(exc))

    async def kill(self, reason: str = "") -> None:
        """Stop the task (kill_signal, then SIGKILL after kill_timeout). The run loop finishes it."""
        if self._killed.is_set():
            return
        self._killed.set()
        self._event("Killing", reason or f"Sent interrupt. Waiting {self.task.kill_timeout:g}s before force killing")
        if self.handle is not None:
            try:
                await self.driver.stop(self.handle, self.task.kill_signal, self.task.kill_timeout)
            except Exception as exc:
                # A stop that failed must not leave the task running: destroy kills and removes it.
                log.warning("stopping task failed; destroying it", alloc_id=self.alloc.id, task=self.task.name, error=str(exc))
                await self._destroy()
