"""Runs one allocation: its task runners in lifecycle order, its health checks, its state file.

Lifecycle (Nomad's task lifecycle hooks)::

    prestart tasks      ephemeral ones must complete successfully; sidecars must be running
    main tasks          (no lifecycle block) start together
    poststart tasks     once every main task runs
    ...                 when every main task has finished (or the leader has):
                        the sidecars are stopped, then
    poststop tasks      run to completion

One failed task fails the allocation and stops the others (poststop tasks still run).

Health: the allocation is healthy when every main task and sidecar runs and every
service check passes; ``healthy`` is None when there is nothing to check.

State file: ``ALLOC_DIR/state.msgpack`` holds the allocation, its job version and,
per task, the task state, the driver's handle and the restart counts. It is
rewritten (atomically, not fsynced: it survives an agent crash, not a power cut)
whenever any of that changes, so a restarted agent re-attaches to the same
processes instead of starting new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import structlog

from shoal import codec
from shoal.agent import logs as logfiles
from shoal.agent import spawn
from shoal.agent.checks import PASSING, CheckRunner, CheckTarget
from shoal.agent.drivers.base import Driver, DriverError, ExitResult, TaskHandle, TaskSpec
from shoal.agent.taskrunner import TaskRunner, log_paths, task_env
from shoal.jobs.model import Check, Job, Service
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

STATE_FILE = "state.msgpack"
STATE_VERSION = 1
POSTSTOP_TIMEOUT = 300.0
SAVE_DELAY = 0.2  # seconds: state changes within this window are written once


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


def _hook(tr: TaskRunner) -> str:
    life = tr.task.lifecycle
    return life.hook if life is not None and life.hook else ""


def _sidecar(tr: TaskRunner) -> bool:
    return tr.task.lifecycle is not None and tr.task.lifecycle.sidecar


def load_state(alloc_dir: Path) -> dict[str, Any] | None:
    try:
        data = (alloc_dir / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        log.warning("unreadable allocation state file; ignoring it", path=str(alloc_dir / STATE_FILE), error=str(exc))
        return None
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


class AllocRunner:
    def __init__(
        self,
        alloc: Allocation,
        job: Job,
        drivers: dict[str, Driver],
        allocs_dir: Path,
        on_update: Callable[[AllocUpdate], None],
        restored: dict[str, Any] | None = None,
    ):
        self.alloc = alloc
        self.job = job
        self.dir = allocs_dir / alloc.id
        self.on_update = on_update
        group = job.group(alloc.task_group)
        if group is None:
            raise ValueError(f"job {job.id} version {job.version} has no group {alloc.task_group!r}")
        self.group = group
        saved_tasks = (restored or {}).get("tasks") or {}
        self.tasks = [
            TaskRunner(alloc, job, group, t, drivers.get(t.driver) or MissingDriver(t.driver), self.dir, self._changed,
                       restored=saved_tasks.get(t.name))
            for t in group.tasks
        ]
        self.by_name = {tr.task.name: tr for tr in self.tasks}
        self.checks: list[CheckRunner] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._detached = False
        self._last_status = ""
        self._save_pending = False
        self.restored = restored is not None
        self._build_checks()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def start(self) -> None:
        (self.dir / "alloc" / "logs").mkdir(parents=True, exist_ok=True)
        # Written before any task starts, not coalesced: an agent killed within the save window of its
        # first task's start finds the allocation again, and re-attaches the task (``probe_handle``).
        # Without the file the allocation's containers looked unclaimed and were destroyed.
        self._save()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"alloc-{self.alloc.id[:8]}")

    # --- lifecycle ---
    def _phase(self, hook: str, sidecar: bool | None = None) -> list[TaskRunner]:
        return [tr for tr in self.tasks if _hook(tr) == hook and (sidecar is None or _sidecar(tr) == sidecar)]

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._wake.clear()
            await self._wake.wait()

    def _failed(self) -> bool:
        return any(tr.finished and tr.state.failed for tr in self.tasks)

    async def _run(self) -> None:
        runs: dict[str, asyncio.Task[None]] = {}

        def launch(trs: list[TaskRunner]) -> None:
            for tr in trs:
                if tr.task.name not in runs:
                    runs[tr.task.name] = asyncio.create_task(tr.run(), name=f"task-{tr.task.name}")

        main = self._phase("")
        sidecars = self._phase("prestart", True) + self._phase("poststart", True)
        try:
            prestart = self._phase("prestart")
            launch(prestart)
            # ephemeral prestart tasks must have completed, sidecars must be running
            await self._until(lambda: self._stopping or self._failed() or all(
                (tr.finished if not _sidecar(tr) else (tr.running or tr.finished)) for tr in prestart))
            if not self._stopping and not self._failed():
                launch(main)
                await self._until(lambda: self._stopping or self._failed()
                                  or all(tr.started.is_set() for tr in main))
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
            # tasks never launched (the allocation stopped or failed first) are dead without running
            for tr in self.tasks:
                if tr.task.name not in runs and not tr.finished:
                    tr._finish(failed=False)
        except asyncio.CancelledError:
            for r in runs.values():
                r.cancel()
            await asyncio.gather(*runs.values(), return_exceptions=True)
            raise
        except Exception:
            log.exception("allocation runner failed", alloc_id=self.alloc.id)
        finally:
            await self._stop_checks()
        self._changed()

    # --- health checks ---
    def _port(self, label: str) -> int | None:
        if not label:
            return None
        for p in getattr(self.alloc, "ports", None) or ():
            if p.label == label:
                return p.to or p.value
        for net in self.group.networks:
            for p in net.ports:
                if p.label == label:
                    return p.to or p.static or None
        return int(label) if label.isdigit() else None

    def _check_task(self, service: Service, check: Check, owner: TaskRunner | None) -> TaskRunner | None:
        if owner is not None:
            return owner
        if check.task:
            return self.by_name.get(check.task)
        label = check.port or service.port
        main = [tr for tr in self.tasks if not _hook(tr)]
        for tr in main:  # the task that publishes the port, then the leader, then the first main task
            if label and label in (tr.task.config.get("ports") or ()):
                return tr
        return next((tr for tr in main if tr.task.leader), main[0] if main else None)

    def _build_checks(self) -> None:
        services: list[tuple[Service, TaskRunner | None]] = [(s, None) for s in self.group.services]
        services += [(s, tr) for tr in self.tasks for s in tr.task.services]
        for service, owner in services:
            for i, check in enumerate(service.checks):
                tr = self._check_task(service, check, owner)
                if tr is None:
                    continue
                key = f"{service.name}.{check.name or f'{check.type}-{i}'}"
                target = CheckTarget(pid=lambda tr=tr: tr.handle.pid if tr.handle is not None and tr.running else 0,
                                     host_network=tr.driver.name == "raw_exec",
                                     run_script=lambda argv, timeout, tr=tr: self.run_in_task(tr, argv, timeout))
                self.checks.append(CheckRunner(key, service, check, self._port(check.port or service.port), target,
                                               self._changed))

    def _sync_checks(self) -> None:
        """Checks run while the allocation's tasks run."""
        if not self.checks:
            return
        active = any(tr.running for tr in self.tasks) and not self._stopping
        for c in self.checks:
            if active:
                c.start()

    async def _stop_checks(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.checks), return_exceptions=True)

    def health(self) -> tuple[bool | None, dict[str, str]]:
        statuses = {c.key: c.status for c in self.checks}
        relevant = [tr for tr in self.tasks if not _hook(tr) or _sidecar(tr)]
        if not self.checks:
            return None, statuses
        healthy = all(tr.running for tr in relevant) and all(s == PASSING for s in statuses.values())
        return healthy, statuses

    async def run_in_task(self, tr: TaskRunner, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """Run a command inside a task (script checks): (exit code or None on timeout, output)."""
        handle = tr.handle
        if handle is None:
            raise DriverError("the task is not running")
        cmd, cwd, env = exec_command(tr, handle, argv, tty=False)
        res = await spawn.run(cmd, cwd=cwd, env=env, stderr=subprocess.STDOUT, start_new_session=True,
                              timeout=timeout)
        return res.returncode, res.stdout.decode("utf-8", "replace")

    # --- reporting and persistence ---
    def _changed(self) -> None:
        if self._detached:
            return
        states = [tr.state for tr in self.tasks]
        if any(s.state == TASK_DEAD and s.failed for s in states):
            status, desc = ALLOC_FAILED, "Failed tasks"
            # one failed task fails the allocation: stop its siblings (as Nomad does); poststop tasks still run
            for tr in self.tasks:
                if tr.state.state != TASK_DEAD and _hook(tr) != "poststop":
                    asyncio.get_running_loop().create_task(tr.kill("Sibling task failed"))
        elif all(s.state == TASK_DEAD for s in states):
            status, desc = ALLOC_COMPLETE, "All tasks have completed"
        elif any(s.state == TASK_RUNNING for s in states):
            status, desc = ALLOC_RUNNING, "Tasks are running"
        else:
            status, desc = ALLOC_PENDING, "No tasks have started"
        self._last_status = status
        self._wake.set()
        self._sync_checks()
        healthy, checks = self.health()
        self.on_update(AllocUpdate(id=self.alloc.id, client_status=status, client_description=desc,
                                   task_states={tr.task.name: tr.state for tr in self.tasks},
                                   healthy=healthy, checks=checks))
        self._schedule_save()

    def _schedule_save(self) -> None:
        """Coalesce the changes of the next ``SAVE_DELAY`` seconds into one write. A task started in that
        window is still found after a crash: its container record and runc know it (``probe_handle``)."""
        if self._save_pending:
            return
        self._save_pending = True
        try:
            asyncio.get_running_loop().call_later(SAVE_DELAY, self._save)
        except RuntimeError:
            self._save()

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "alloc": codec.to_plain(self.alloc),
            "job": codec.to_plain(self.job),
            "tasks": {tr.task.name: tr.snapshot() for tr in self.tasks},
            "saved_at": time.time(),
        }

    def _save(self) -> None:
        self._save_pending = False
        if self._detached or not self.dir.is_dir():
            return
        tmp = self.dir / f".{STATE_FILE}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_bytes(msgpack.packb(self.snapshot(), use_bin_type=True))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError as exc:
            log.warning("cannot write the allocation state file", alloc_id=self.alloc.id, error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()

    # --- logs ---
    def rotate_logs(self) -> None:
        """Rotate the log files of this allocation's tasks that outgrew their ``logs`` limits (cheap when not)."""
        for tr in self.tasks:
            if tr.task.logs.disabled:
                continue
            limit = tr.task.logs.max_file_size * logfiles.MB
            for path in log_paths(self.dir, tr.task.name):
                try:
                    if path.stat().st_size > limit:
                        logfiles.rotate_if_needed(path, limit, tr.task.logs.max_files)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("log rotation failed", path=str(path), error=str(exc))

    # --- control ---
    async def stop(self, reason: str = "alloc stopped") -> None:
        """Kill every task and wait for the runners to finish cleaning up (poststop tasks run)."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*(tr.kill(reason) for tr in self.tasks if _hook(tr) != "poststop"))
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def restart(self, task: str | None = None) -> list[str]:
        targets = [self.by_name[task]] if task else [tr for tr in self.tasks if tr.running]
        done = [tr.task.name for tr in targets if await tr.restart()]
        return done

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def detach(self) -> None:
        """The agent is exiting and leaves the tasks running: write the state file, then let go."""
        self._save()
        self._detached = True
        for tr in self.tasks:
            tr.detach()
        await self._stop_checks()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def destroy_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def exec_command(tr: TaskRunner, handle: TaskHandle, argv: list[str], *, tty: bool) -> tuple[list[str], str | None,
                                                                                             dict[str, str] | None]:
    """(command line, cwd, env) that runs ``argv`` in a task: inside its container, or on the host for raw_exec."""
    exec_argv = getattr(tr.driver, "exec_argv", None)
    if exec_argv is not None:
        return exec_argv(handle, argv, tty=tty), None, None
    if tr.driver.name == "raw_exec":
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               **task_env(tr.alloc, tr.job, tr.group, tr.task, tr.alloc_dir)}
        return list(argv), str(tr.alloc_dir / tr.task.name), env
    raise DriverError(f"the {tr.driver.name} driver cannot run commands in its tasks")
