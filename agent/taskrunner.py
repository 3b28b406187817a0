"""Runs one task: start through its driver, wait, restart per policy, report every step.

Before every start the runner builds the task's ``TaskSpec`` and its task hooks
complete it (``prestart``: directories, env, log files); after every start they
are told it runs (``poststart``), and once the runner ends, that it is over
(``stop``): see hooks/base.py.

A TaskRunner can also resume a task started by an earlier agent process: given
the persisted ``TaskHandle`` it asks the driver to re-attach (``recover``) and
waits on the same process; nothing is started twice. Its state (task state,
handle, restart counts) is what ``snapshot()`` returns for the allocation's
state file.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from shoal import codec
from shoal.agent import names, spawn
from shoal.agent.drivers.base import Driver, DriverError, ExecCommand, ExitResult, TaskHandle, TaskSpec
from shoal.agent.hooks.base import HookError, TaskHook, TaskHooks
from shoal.agent.restart import COMPLETE, FAIL, RestartTracker
from shoal.agent.taskenv import task_env
from shoal.jobs.model import Job, Task, TaskGroup, task_restart
from shoal.jobs.structs import TASK_DEAD, TASK_PENDING, TASK_RUNNING, Allocation, TaskEvent, TaskState

log = structlog.get_logger("shoal.agent.task")

MAX_EVENTS = 20
RECOVER_ATTEMPTS = 8


def is_ephemeral(task: Task) -> bool:
    """A lifecycle task that runs to completion (prestart/poststart/poststop, not a sidecar)."""
    return task.lifecycle is not None and bool(task.lifecycle.hook) and not task.lifecycle.sidecar


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
        hooks: Sequence[TaskHook] = (),
        restored: dict[str, Any] | None = None,
    ):
        self.alloc, self.job, self.group, self.task = alloc, job, group, task
        self.driver = driver
        self.alloc_dir = alloc_dir
        self.dir = names.task_dir(alloc_dir, task.name)
        self.on_change = on_change
        self.hooks = TaskHooks(hooks, alloc.id, task.name)
        self.state = TaskState(state=TASK_PENDING)
        self.handle: TaskHandle | None = None
        self.spec: TaskSpec | None = None  # what the running task was started from (prestart's work)
        self._killed = asyncio.Event()
        self._restart_requested = False  # a user's restart: not counted against the restart policy
        self._restart_failure = False  # a restart for a failure (an unhealthy check): counted
        self._restart_wakeup = asyncio.Event()
        self.started = asyncio.Event()  # set once the task has run (or finished without running)
        self._tracker = RestartTracker(task_restart(job, group, task),
                                       batch=job.type in ("batch", "sysbatch") or is_ephemeral(task))
        self._restored_handle: TaskHandle | None = None
        self._restored = restored is not None  # an earlier agent process ran it: it may have started it
        self.recovered = False
        self._detached = False  # the agent is exiting and leaves the task running
        if restored:
            self.state = codec.from_plain(TaskState, restored.get("state") or {})
            if restored.get("handle"):
                self._restored_handle = codec.from_plain(TaskHandle, restored["handle"])
            tracker = restored.get("restart") or {}
            self._tracker.count = int(tracker.get("count") or 0)
            self._tracker.interval_start = tracker.get("interval_start")
            if self.state.state == TASK_RUNNING or self.state.state == TASK_DEAD:
                self.started.set()

    # --- state for the allocation's state file ---
    def snapshot(self) -> dict[str, Any]:
        handle = self.handle or self._restored_handle
        return {
            "state": codec.to_plain(self.state),
            "handle": codec.to_plain(handle) if handle is not None else None,
            "restart": {"count": self._tracker.count, "interval_start": self._tracker.interval_start},
        }

    @property
    def finished(self) -> bool:
        return self.state.state == TASK_DEAD

    @property
    def running(self) -> bool:
        return self.state.state == TASK_RUNNING

    @property
    def pid(self) -> int:
        """The running task's pid (it changes across restarts); 0 when it does not run."""
        return self.handle.pid if self.handle is not None and self.running else 0

    @property
    def lifecycle_hook(self) -> str:
        """The task's lifecycle phase: "prestart", "poststart", "poststop", or "" for a main task."""
        life = self.task.lifecycle
        return life.hook if life is not None and life.hook else ""

    @property
    def sidecar(self) -> bool:
        return self.task.lifecycle is not None and self.task.lifecycle.sidecar

    # --- reporting ---
    def _event(self, type_: str, message: str = "", exit_code: int | None = None) -> None:
        self.state.events.append(TaskEvent(type=type_, time=time.time(), message=message, exit_code=exit_code))
        del self.state.events[:-MAX_EVENTS]
        self.on_change()

    async def _build_spec(self) -> TaskSpec:
        """The spec from the task, completed by the task hooks; the task's own env block wins."""
        spec = TaskSpec(
            alloc_id=self.alloc.id,
            job_id=self.job.id,
            group=self.group.name,
            task=self.task.name,
            config=dict(self.task.config),
            env=task_env(self.alloc, self.job, self.group, self.task),
            resources=self.task.resources,
            alloc_dir=self.alloc_dir,
            task_dir=self.dir,
            user=self.task.user,
            kill_signal=self.task.kill_signal,
            kill_timeout=self.task.kill_timeout,
            on_event=self._event,
        )
        await self.hooks.prestart(spec)
        spec.env.update(self.task.env)
        return spec

    # --- the loop ---
    async def run(self) -> None:
        try:
            if self.finished:
                return  # restored: it had finished before the agent restarted
            resumed = await self._resume()
            if resumed and self._killed.is_set():
                await self._stop_handle()  # killed while re-attaching: that kill found no handle to stop
            if not resumed and not self.state.events:
                self._event("Received", "Task received by client")
            while resumed or not self._killed.is_set():
                if resumed:
                    resumed = False
                    try:
                        self.spec = await self._build_spec()  # what runs: for exec and the poststart hooks
                    except HookError as err:
                        self._event("Task Hook Failed", str(err))
                else:
                    try:
                        self._event("Task Setup", f"Starting with driver {self.driver.name}")
                        spec = await self._build_spec()
                        self.handle = await self.driver.start(spec)
                    except (HookError, DriverError) as err:
                        self._event("Driver Failure" if isinstance(err, DriverError) else "Task Hook Failed", str(err))
                        recoverable = isinstance(err, DriverError) and err.recoverable
                        if not await self._after_exit(success=False, recoverable=recoverable):
                            return
                        continue
                    self.spec = spec
                    self.state.state = TASK_RUNNING
                    self.state.started_at = time.time()
                    self.started.set()
                    self._event("Started", "Task started by client")
                for err in await self.hooks.poststart(self.handle):
                    self._event("Task Hook Failed", str(err))
                result = await self._wait()
                await self._destroy()
                if self._killed.is_set():
                    self._finish(failed=False)
                    self._event("Killed", "Task successfully killed")
                    return
                self._report_exit(result)
                if self._restart_failure:  # as if the task had failed: the policy counts it and may end it
                    self._restart_failure = self._restart_requested = False
                    if not await self._after_exit(success=False):
                        return
                    continue
                if self._restart_requested:
                    self._restart_requested = False
                    self.state.restarts += 1
                    self.state.state = TASK_PENDING
                    self._event("Restarting", "Task restarting in 0s (restart requested by a user)")
                    continue
                if not await self._after_exit(success=result.successful()):
                    return
        except asyncio.CancelledError:
            if not self._detached:
                await self._destroy()
            raise
        finally:
            if self.state.state != TASK_DEAD and not self._detached:
                self._finish(failed=False)
            self.started.set()
            if not self._detached:
                await self.hooks.stop()

    def fail_setup(self, message: str) -> None:
        """The allocation could not be set up (an alloc hook's prerun failed): the task never runs."""
        self._event("Setup Failure", message)
        self._finish(failed=True)

    @property
    def may_be_running(self) -> bool:
        """An earlier agent process ran this task and it has not finished: its process may still run."""
        return self._restored and not self.finished

    def skip(self) -> None:
        """The allocation ended before this task's phase came: it is dead without having run."""
        if not self.finished:
            self._finish(failed=False)

    def detach(self) -> None:
        """The agent is exiting: when the run is cancelled, leave the task running for the next agent."""
        self._detached = True

    async def _resume(self) -> bool:
        """Re-attach to the task an earlier agent process started. True if it is still running."""
        handle, self._restored_handle = self._restored_handle, None
        starting = handle is None  # the earlier agent died before it saved the task as started
        if handle is None:
            if self._restored and self.state.state == TASK_PENDING:
                # the earlier agent may have died while starting it, even before its first event was saved
                handle = self.driver.probe_handle(self.alloc.id, self.task.name)
            if handle is None:
                return False
        alive = False
        for attempt in range(RECOVER_ATTEMPTS):  # a failing runc call is not a verdict: never kill on a guess
            try:
                alive = await self.driver.recover(handle)
                break
            except Exception as exc:
                log.warning("re-attaching to a task failed; retrying", alloc_id=self.alloc.id, task=self.task.name,
                            error=str(exc), attempt=attempt + 1)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        if alive:
            self.handle = handle
            self.recovered = True
            self.state.state = TASK_RUNNING
            self.state.started_at = self.state.started_at or handle.started_at
            self.started.set()
            log.info("re-attached to a running task", alloc_id=self.alloc.id, task=self.task.name,
                     id=handle.id, pid=handle.pid)
            if starting:
                # The saved events stop at "Task Setup" or before, and they are what this agent reports:
                # record the start the earlier agent saw, or the servers' copy of the events loses it.
                if not self.state.events:
                    self._event("Received", "Task received by client")
                self._event("Started", "Task started by client")
            else:
                self.on_change()
            return True
        # It ended while no agent was watching: its exit status is not ours to know.
        log.warning("a task the earlier agent ran is gone; not re-attached", alloc_id=self.alloc.id,
                    task=self.task.name, id=handle.id, pid=handle.pid)
        self.handle = handle
        await self._destroy()
        if self.state.state == TASK_RUNNING:
            self._report_exit(ExitResult(-1, message="exit status unknown: the task ended while the agent was not "
                                                     "running", known=False))
            if not await self._after_exit(success=False):
                self._killed.set()  # no more runs; run() finishes the task
        return False

    async def _wait(self) -> ExitResult:
        assert self.handle is not None
        return await self.driver.wait(self.handle)

    def _report_exit(self, result: ExitResult) -> None:
        self.state.exit_code = result.exit_code if result.known else None
        if result.oom_killed:
            self._event("OOM Killed", "Task was killed by the kernel's OOM killer", result.exit_code)
        if not result.known:
            self._event("Terminated", result.message or "exit status unknown", None)
            return
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
        self._restart_wakeup.clear()
        killed = asyncio.ensure_future(self._killed.wait())
        woken = asyncio.ensure_future(self._restart_wakeup.wait())
        try:
            await asyncio.wait({killed, woken}, timeout=d.delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            woken.cancel()
        if self._killed.is_set():
            self._finish(failed=False)
            self._event("Killed", "Task killed while waiting to restart")
            return False
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
        if self.finished:
            return
        self._event("Killing", reason or f"Sent interrupt. Waiting {self.task.kill_timeout:g}s before force killing")
        await self._stop_handle()

    async def _stop_handle(self) -> None:
        if self.handle is not None:
            try:
                await self.driver.stop(self.handle, self.task.kill_signal, self.task.kill_timeout)
            except Exception as exc:
                # A stop that failed must not leave the task running: destroy kills and removes it.
                log.warning("stopping task failed; destroying it", alloc_id=self.alloc.id, task=self.task.name, error=str(exc))
                await self._destroy()

    async def restart(self, reason: str = "", *, failure: bool = False) -> bool:
        """Restart the task now. By default a user's request: not counted against the restart policy,
        and a task waiting to restart goes at once. ``failure``: a restart for a failure (Nomad's
        failure restarts, as an unhealthy check's): the task is stopped and the restart policy decides
        as if it had failed (its delay, its attempts; past them the task fails); only a running task
        is restarted so. ``reason`` is the "Restart Signaled" event's message."""
        if self._killed.is_set() or self.finished:
            return False
        if failure:
            if self.handle is None or not self.running or self._restart_failure:
                return False
            self._restart_failure = True
            self._event("Restart Signaled", reason or "Task restart requested after a failure")
            await self._stop_handle()
            return True
        if self.handle is None:  # waiting to restart: go now
            self._restart_wakeup.set()
            return True
        self._restart_requested = True
        self._event("Restart Signaled", reason or "User requested running tasks to restart")
        await self._stop_handle()
        return True

    # --- commands in the task (alloc exec, script checks) ---
    def exec_command(self, argv: list[str], *, tty: bool) -> ExecCommand:
        """How to run ``argv`` inside the running task (its driver decides: runc exec, or on the host)."""
        if self.handle is None or self.spec is None or not self.running:
            raise DriverError(f"task {self.task.name!r} is not running")
        return self.driver.exec_command(self.handle, argv, tty=tty, spec=self.spec)

    async def run_command(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """Run a command in the task (script checks): (exit code, or None on timeout; its output)."""
        cmd = self.exec_command(argv, tty=False)
        res = await spawn.run(cmd.argv, cwd=cmd.cwd, env=cmd.env, stderr=subprocess.STDOUT, start_new_session=True,
                              timeout=timeout)
        return res.returncode, res.stdout.decode("utf-8", "replace")
