"""Runs one allocation: its hooks, then its task runners in lifecycle order.

An ``AllocRunner`` is an orchestrator: the concerns of an allocation (its
directory, its logs, its checks; later its network, services, volumes) are
hooks (hooks/base.py gives the order and the rules), and what it does itself
is the task lifecycle (Nomad's task lifecycle hooks)::

    prerun hooks        (alloc_dir, network, checks, services); a failure fails the allocation, no task starts
    prestart tasks      ephemeral ones must complete successfully; sidecars must be running
    main tasks          (no lifecycle block) start together
    poststart tasks     once every main task runs
    ...                 when every main task has finished (or the leader has):
                        the sidecars are stopped, then
    poststop tasks      run to completion
    postrun hooks       in reverse

One failed task fails the allocation and stops the others (poststop tasks still run).

Health: the allocation is healthy when every main task and sidecar runs and every
service check passes; ``healthy`` is None when there is nothing to check.

Every change is written to the allocation's state file (allocstate.py), so a
restarted agent re-attaches to the same processes instead of starting new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from shoal import codec
from shoal.agent import names
from shoal.agent.allocstate import StateFile
from shoal.agent.drivers.base import Driver
from shoal.agent.drivers.registry import driver_for
from shoal.agent.hooks.allocdir import AllocDirHook, TaskDirHook
from shoal.agent.catalog import ServiceSyncer
from shoal.agent.hooks.base import AllocHook, AllocHooks, HookError
from shoal.agent.hooks.checks import ChecksHook
from shoal.agent.hooks.logs import LogsHook
from shoal.agent.hooks.network import Networking, NetworkHook, NetworkTaskHook
from shoal.agent.hooks.services import ServicesHook
from shoal.agent.taskrunner import TaskRunner
from shoal.jobs.model import Job
from shoal.jobs.structs import (
    ALLOC_COMPLETE,
    ALLOC_FAILED,
    ALLOC_PENDING,
    ALLOC_RUNNING,
    TASK_DEAD,
    TASK_RUNNING,
    AllocNetworkStatus,
    AllocUpdate,
    Allocation,
)

log = structlog.get_logger("shoal.agent.alloc")

POSTSTOP_TIMEOUT = 300.0


class AllocRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: Job,
        drivers: dict[str, Driver],
        allocs_dir: Path,
        on_update: Callable[[AllocUpdate], None],
        restored: dict[str, Any] | None = None,
        networking: Networking | None = None,
        syncer: ServiceSyncer | None = None,
        datacenter: str = "",
    ):
        self.alloc = alloc
        self.job = job
        self.dir = names.alloc_dir(allocs_dir, alloc.id)
        self.on_update = on_update
        group = job.group(alloc.task_group)
        if group is None:
            raise ValueError(f"job {job.id} version {job.version} has no group {alloc.task_group!r}")
        self.group = group
        saved_tasks = (restored or {}).get("tasks") or {}
        saved_net = (restored or {}).get("network")
        self._network = NetworkHook(alloc, group, networking,
                                    codec.from_plain(AllocNetworkStatus, saved_net) if saved_net else None,
                                    self._changed)
        self.tasks: list[TaskRunner] = []
        self._logs: list[LogsHook] = []
        for t in group.tasks:
            driver = driver_for(drivers, t.driver)
            logs = LogsHook(self.dir, t)
            self._logs.append(logs)
            net = NetworkTaskHook(self._network, joins=driver.capabilities.net_isolation)
            self.tasks.append(TaskRunner(alloc, job, group, t, driver, self.dir, self._changed,
                                         hooks=[TaskDirHook(driver.capabilities.fs_isolation), logs, net],
                                         restored=saved_tasks.get(t.name)))
        self.by_name = {tr.task.name: tr for tr in self.tasks}
        self._checks = ChecksHook(alloc, group, self.tasks, self._changed)
        hooks: list[AllocHook] = [AllocDirHook(self.dir), self._network, self._checks]
        self._services: ServicesHook | None = None
        if syncer is not None:
            self._services = ServicesHook(alloc, job, group, self.tasks, self._network, self._checks, syncer, datacenter)
            hooks.append(self._services)
        self.hooks = AllocHooks(hooks, alloc.id)
        self.state_file = StateFile(self.dir, self.snapshot, alloc.id)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._detached = False
        self._setup_error = ""  # why the allocation could not be set up (a prerun hook failed)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def start(self) -> asyncio.Task[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Written before any task starts, not coalesced: an agent killed within the save window of its
        # first task's start finds the allocation again, and re-attaches the task (``probe_handle``).
        # Without the file the allocation's containers looked unclaimed and were destroyed.
        self.state_file.save()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"alloc-{self.alloc.id[:8]}")
        return self._task

    # --- lifecycle ---
    def _phase(self, hook: str, sidecar: bool | None = None) -> list[TaskRunner]:
        return [tr for tr in self.tasks if tr.lifecycle_hook == hook and (sidecar is None or tr.sidecar == sidecar)]

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._wake.clear()
            await self._wake.wait()

    def _failed(self) -> bool:
        return any(tr.finished and tr.state.failed for tr in self.tasks)

    async def _run(self) -> None:
        runs: dict[str, asyncio.Task[None]] = {}
        try:
            try:
                await self.hooks.prerun()
            except HookError as err:
                self._setup_error = f"failed to set up the allocation: {err}"
                for tr in self.tasks:
                    tr.fail_setup(self._setup_error)
            else:
                await self._lifecycle(runs)
        except asyncio.CancelledError:
            for r in runs.values():
                r.cancel()
            await asyncio.gather(*runs.values(), return_exceptions=True)
            await self.hooks.shutdown()
            raise
        except Exception:
            log.exception("allocation runner failed", alloc_id=self.alloc.id)
        await self.hooks.postrun()
        self._changed()

    async def _lifecycle(self, runs: dict[str, asyncio.Task[None]]) -> None:
        def launch(trs: list[TaskRunner]) -> None:
            for tr in trs:
                if tr.task.name not in runs:
                    runs[tr.task.name] = asyncio.create_task(tr.run(), name=f"task-{tr.task.name}")

        main = self._phase("")
        sidecars = self._phase("prestart", True) + self._phase("poststart", True)
        prestart = self._phase("prestart")
        launch(prestart)
        # ephemeral prestart tasks must have completed, sidecars must be running
        await self._until(lambda: self._stopping or self._failed() or all(
            (tr.finished if not tr.sidecar else (tr.running or tr.finished)) for tr in prestart))
        if not self._stopping and not self._failed():
            launch(main)
            await self._until(lambda: self._stopping or self._failed() or all(tr.started.is_set() for tr in main))
            if not self._stopping and not self._failed():
                launch(self._phase("poststart"))
            leader = next((tr for tr in main if tr.task.leader), None)
            await self._until(lambda: self._stopping or self._failed() or all(tr.finished for tr in main)
                              or (leader is not None and leader.finished))
        # main work is over: stop whatever still runs (sidecars, the leader's followers)
        reason = "Leader task finished" if any(tr.task.leader and tr.finished for tr in main) else \
            "Main tasks have finished"
        await asyncio.gather(*(tr.kill(reason) for tr in main + sidecars + self._phase("poststart")
                               if not tr.finished))
        await asyncio.gather(*(runs[n] for n in list(runs)), return_exceptions=True)
        poststop = self._phase("poststop")
        if poststop and any(tr.started.is_set() for tr in main):
            launch(poststop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(runs[tr.task.name] for tr in poststop),
                                                      return_exceptions=True), POSTSTOP_TIMEOUT)
        # A restored task the allocation stopped before its phase came may still run (an earlier agent
        # started it): re-attach to it so that it is stopped and destroyed, not left behind.
        leftover = [tr for tr in self.tasks if tr.task.name not in runs and tr.may_be_running]
        launch(leftover)
        await asyncio.gather(*(runs[tr.task.name] for tr in leftover), return_exceptions=True)
        # tasks never launched (the allocation stopped or failed first) are dead without running
        for tr in self.tasks:
            if tr.task.name not in runs:
                tr.skip()

    def health(self) -> tuple[bool | None, dict[str, str]]:
        return self._checks.health()

    # --- reporting and persistence ---
    def _changed(self) -> None:
        if self._detached:
            return
        states = [tr.state for tr in self.tasks]
        if any(s.state == TASK_DEAD and s.failed for s in states):
            status, desc = ALLOC_FAILED, self._setup_error or "Failed tasks"
            # one failed task fails the allocation: stop its siblings (as Nomad does); poststop tasks still run
            for tr in self.tasks:
                if tr.state.state != TASK_DEAD and tr.lifecycle_hook != "poststop" and not self._setup_error:
                    asyncio.get_running_loop().create_task(tr.kill("Sibling task failed"))
        elif all(s.state == TASK_DEAD for s in states):
            status, desc = ALLOC_COMPLETE, "All tasks have completed"
        elif any(s.state == TASK_RUNNING for s in states):
            status, desc = ALLOC_RUNNING, "Tasks are running"
        else:
            status, desc = ALLOC_PENDING, "No tasks have started"
        self._wake.set()
        if self._services is not None:
            self._services.refresh()
        healthy, checks = self.health()
        self.on_update(AllocUpdate(id=self.alloc.id, client_status=status, client_description=desc,
                                   task_states={tr.task.name: tr.state for tr in self.tasks},
                                   healthy=healthy, checks=checks, network_status=self._network.status))
        self.state_file.schedule()

    def snapshot(self) -> dict[str, Any]:
        return {
            "alloc": codec.to_plain(self.alloc),
            "job": codec.to_plain(self.job),
            "tasks": {tr.task.name: tr.snapshot() for tr in self.tasks},
            "network": codec.to_plain(self._network.status) if self._network.status is not None else None,
            "saved_at": time.time(),
        }

    def rotate_logs(self) -> None:
        """Rotate the log files of this allocation's tasks that outgrew their ``logs`` limits (cheap when not)."""
        for logs in self._logs:
            logs.rotate()

    # --- control ---
    async def update(self, alloc: Allocation) -> None:
        """The servers changed the allocation in place (its tasks are unchanged): keep the new record."""
        self.alloc = alloc
        await self.hooks.update(alloc)
        self.state_file.schedule()

    async def stop(self, reason: str = "alloc stopped") -> None:
        """Kill every task and wait for the runners to finish cleaning up (poststop tasks run)."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*(tr.kill(reason) for tr in self.tasks if tr.lifecycle_hook != "poststop"))
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def restart(self, task: str | None = None) -> list[str]:
        targets = [self.by_name[task]] if task else [tr for tr in self.tasks if tr.running]
        return [tr.task.name for tr in targets if await tr.restart()]

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def detach(self) -> None:
        """The agent is exiting and leaves the tasks running: write the state file, then let go."""
        self.state_file.save()
        self.state_file.closed = True
        self._detached = True
        for tr in self.tasks:
            tr.detach()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the run shuts its hooks down
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def destroy(self) -> None:
        """The agent forgets the allocation (its tasks have ended): the hooks remove what is left."""
        self.state_file.closed = True
        await self.hooks.destroy()
