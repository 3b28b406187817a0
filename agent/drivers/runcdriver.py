"""What the runc drivers (container, exec) share: one task as one runc container.

Start path (per task, nothing global held across a runc call)::

    container record -> prepare TASK_DIR/rootfs (the subclass) -> TASK_DIR/bundle/config.json
    -> runc run -d --pid-file --bundle ID

The container's stdout/stderr are the task's log files, inherited from runc.
The container's init is reparented to the agent (a child subreaper) when
``runc run -d`` exits, so ``procwait`` reaps it and reads its real exit status;
OOM kills are read from the cgroup before ``runc delete`` removes it. Container
ids and cgroup paths come from ``agent/names.py``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal as _signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agent import cgroups, names, ocispec, procwait
from shoal.agent.drivers.base import (
    Capabilities,
    Driver,
    DriverError,
    ExecCommand,
    ExitResult,
    TaskHandle,
    TaskSpec,
    log_fds,
    wait_key,
)
from shoal.agent.fingerprint import cpu_info
from shoal.agent.imagetypes import ImageConfig
from shoal.agent.runc import Runc

DEFAULT_STATE_DIR = Path("/var/lib/shoal/containers")
_STOP_GRACE = 10.0  # seconds to wait for an exit after SIGKILL
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def unmount(target: Path) -> None:
    """Unmount ``target`` if it is a mount point; lazy unmount if it is busy. Idempotent."""
    raw = str(target).encode()
    while True:
        if _libc.umount2(raw, 0) == 0:
            continue  # unmount stacked mounts too (an earlier crash may have left one)
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not (or no longer) a mount point
        if err == errno.EBUSY:
            if _libc.umount2(raw, MNT_DETACH) == 0:
                continue
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
        raise DriverError(f"cannot unmount {target}: {os.strerror(err)}")


@dataclass(slots=True, frozen=True)
class TaskPaths:
    task_dir: Path

    @property
    def rootfs(self) -> Path:
        return self.task_dir / "rootfs"

    @property
    def bundle(self) -> Path:
        return self.task_dir / "bundle"

    @property
    def overlay(self) -> Path:
        return self.task_dir / "overlay"

    @property
    def upper(self) -> Path:
        return self.overlay / "upper"

    @property
    def work(self) -> Path:
        return self.overlay / "work"


@dataclass(slots=True, frozen=True)
class Bundle:
    """What one runc start needs beyond the spec: the process's defaults and how to make its rootfs."""

    image: ImageConfig  # env, user, working dir defaults (the image's, or the host's for exec)
    ref: str  # the image reference and digest, kept in the handle ("" for exec)
    digest: str
    cwd: str
    readonly: bool
    pids_limit: int
    prepare_rootfs: Callable[[], None]


def signal_name(sig: str | int) -> str:
    if isinstance(sig, int) or str(sig).isdigit():
        return str(int(sig))
    name = str(sig).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        _signal.Signals[name]
    except KeyError:
        raise DriverError(f"unknown signal {sig!r}") from None
    return name


def pids_limit(config: dict[str, Any]) -> int:
    pids = config.get("pids_limit", ocispec.DEFAULT_PIDS_LIMIT)
    if isinstance(pids, bool) or not isinstance(pids, int) or pids < 0:
        raise DriverError("config.pids_limit must be a non-negative integer (0 = no limit)")
    return pids


class _Conflict(DriverError):
    """A live container already uses this id."""


class RuncDriver(Driver):
    """Runs each task as a runc container; subclasses say what its root filesystem is."""

    capabilities = Capabilities(fs_isolation=True, net_isolation=True)

    def __init__(self, runc_root: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, *,
                 runc_binary: str = "runc") -> None:
        self.runc = Runc(runc_binary, runc_root)
        self.state_dir = Path(state_dir)  # one JSON record per live container, for clean-up after a crash
        self._waits: procwait.SharedWaits[ExitResult] = procwait.SharedWaits()
        self._runc_version: str | None = None

    def runc_version(self) -> str | None:
        """runc's version when it can run containers here (root, binary present), else None."""
        if os.geteuid() != 0 or not self.runc.available():
            return None
        if self._runc_version is None:
            self._runc_version = self.runc.version_sync()
        return self._runc_version

    @abc.abstractmethod
    def _extra_mounts(self, spec: TaskSpec, paths: TaskPaths) -> list[dict[str, Any]]:
        """OCI mounts beyond the defaults: the spec's mounts and what the driver adds."""

    @abc.abstractmethod
    def _user_root(self, paths: TaskPaths) -> Path:
        """The filesystem whose /etc/passwd and /etc/group name the task's user."""

    @staticmethod
    def _spec_mounts(spec: TaskSpec) -> list[dict[str, Any]]:
        """The bind mounts the task hooks asked for (the task's directories, ...)."""
        return [ocispec.bind_mount(m.source, m.destination, readonly=m.readonly) for m in spec.mounts]

    # ----------------------------------------------------------------- start
    async def _start_bundle(self, spec: TaskSpec, paths: TaskPaths, b: Bundle) -> TaskHandle:
        cid = names.container_id(spec.alloc_id, spec.task)
        cgroups_path = names.cgroup_path(cid)
        state: dict[str, Any] = {
            "container_id": cid,
            "bundle": str(paths.bundle),
            "rootfs": str(paths.rootfs),
            "task_dir": str(paths.task_dir),
            "cgroups_path": cgroups_path,
            "runc_root": self.runc.root,
            "image": b.ref,
            "image_digest": b.digest,
        }
        if (self.state_dir / f"{cid}.json").exists():
            # Started before and not destroyed: refuse to clobber a live container.
            await self._refuse_if_running(cid)
        self._write_record(cid, state)
        try:
            b.prepare_rootfs()
            argv = ocispec.process_args(spec.config, b.image)
            user = ocispec.resolve_user(spec.user or b.image.user, self._user_root(paths))
            hostname = ocispec.hostname_of(spec.task)
            env = ocispec.merge_env(b.image.env, spec.env, {"HOSTNAME": hostname, "HOME": user.home})
            cap_drop = spec.config.get("cap_drop") or []
            if not isinstance(cap_drop, list) or not all(isinstance(c, str) for c in cap_drop):
                raise DriverError('config.cap_drop must be a list of capability names, e.g. ["NET_RAW"]')
            config = ocispec.build_spec(
                container_id=cid,
                hostname=hostname,
                rootfs=paths.rootfs,
                argv=argv,
                env=env,
                cwd=b.cwd,
                user=user,
                resources=spec.resources,
                readonly_rootfs=b.readonly,
                pids_limit=b.pids_limit,
                swap_limit=cgroups.swap_limit_supported(),
                mounts=self._extra_mounts(spec, paths),
                cap_drop=cap_drop,
                cpu_hard_limit_mhz_per_core=cpu_info()[1] if spec.config.get("cpu_hard_limit") else 0,
                netns=spec.netns,
            )
            if paths.bundle.exists():
                shutil.rmtree(paths.bundle)
            paths.bundle.mkdir()
            (paths.bundle / "config.json").write_text(json.dumps(config))
            pid = await self._run(cid, paths.bundle, spec)
        except _Conflict:
            unmount(paths.rootfs)
            raise
        except BaseException:
            await self._cleanup(cid, paths)
            self._remove_record(cid)
            raise
        state["pid_start_time"] = procwait.process_start_time(pid)
        handle = TaskHandle(driver=self.name, id=cid, pid=pid, started_at=time.time(), state=state)
        self._watch(handle)
        return handle

    async def _run(self, cid: str, bundle: Path, spec: TaskSpec) -> int:
        with log_fds(spec) as (out_fd, err_fd):
            try:
                return await self._run_once(cid, bundle, out_fd, err_fd)
            except DriverError as exc:
                if "already exists" not in str(exc):
                    raise
                # A container left by an earlier run of this task: remove it if it has stopped.
                await self._refuse_if_running(cid)
                await self.runc.delete(cid, force=True)
                return await self._run_once(cid, bundle, out_fd, err_fd)

    async def _refuse_if_running(self, cid: str) -> None:
        existing = await self.runc.state(cid)
        if existing is not None and existing.running:
            raise _Conflict(
                f"container {cid} is already running (pid {existing.pid}); stop and destroy it before starting "
                "the task again"
            )

    async def _run_once(self, cid: str, bundle: Path, out_fd: int, err_fd: int) -> int:
        log_file = bundle / "runc.log"
        with contextlib.suppress(FileNotFoundError):
            log_file.unlink()
        return await self.runc.run_detached(
            cid, bundle, pid_file=bundle / "init.pid", stdout=out_fd, stderr=err_fd, log_file=log_file
        )

    # ------------------------------------------------------------------ wait
    def _watch(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        return self._waits.task(wait_key(handle), lambda: self._collect_exit(handle))

    async def _collect_exit(self, handle: TaskHandle) -> ExitResult:
        start_time = handle.state.get("pid_start_time")
        pexit = await procwait.wait_pid(handle.pid, start_time)
        try:
            oom = cgroups.read_oom(names.cgroup_path(handle.id))
        except OSError as exc:
            oom = cgroups.OomState(False, detail=str(exc))
        if pexit.exit_code is None:
            if oom.killed:
                return ExitResult(137, signal=9, oom_killed=True,
                                  message="OOM killed: the task used more memory than its limit")
            return ExitResult(-1, message=f"exit status unknown: {pexit.reason}", known=False)
        message = ""
        if oom.killed:
            message = "OOM killed: the task used more memory than its limit"
        elif pexit.signal:
            message = f"killed by signal {_signal.Signals(pexit.signal).name}" if pexit.signal in _signal.valid_signals() else f"killed by signal {pexit.signal}"
        return ExitResult(pexit.exit_code, signal=pexit.signal, oom_killed=oom.killed, message=message)

    async def wait(self, handle: TaskHandle) -> ExitResult:
        return await asyncio.shield(self._watch(handle))

    # ------------------------------------------------------------------ stop
    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        exited = self._watch(handle)
        if exited.done():
            return
        sent = await self.runc.kill(handle.id, signal_name(signal or "SIGTERM"))
        if sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), max(timeout, 0.0))
                return
        await self.runc.kill(handle.id, "KILL", all_processes=True)
        try:
            await asyncio.wait_for(asyncio.shield(exited), _STOP_GRACE)
        except TimeoutError:
            raise DriverError(
                f"container {handle.id} (pid {handle.pid}) did not exit {_STOP_GRACE:.0f}s after SIGKILL", recoverable=True
            ) from None

    # --------------------------------------------------------------- destroy
    async def destroy(self, handle: TaskHandle) -> None:
        cid = handle.id
        task_dir = handle.state.get("task_dir")
        watcher = self._waits.existing(wait_key(handle))
        if watcher is not None and not watcher.done():
            # Kill first and let the watcher reap and read the OOM state while the cgroup exists.
            await self.runc.kill(cid, "KILL", all_processes=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), _STOP_GRACE)
        await self._cleanup(cid, TaskPaths(Path(task_dir)) if task_dir else None)
        self._waits.forget(wait_key(handle))
        self._remove_record(cid)

    async def _cleanup(self, cid: str, paths: TaskPaths | None) -> None:
        await self.runc.delete(cid, force=True)
        if paths is not None:
            unmount(paths.rootfs)
            for d in (paths.bundle, paths.overlay):
                if d.exists():
                    shutil.rmtree(d)
            with contextlib.suppress(FileNotFoundError, OSError):
                paths.rootfs.rmdir()
        left = cgroups.remove_cgroup(names.cgroup_path(cid))
        if left:
            raise DriverError(f"container {cid}: cgroup directories could not be removed: {', '.join(map(str, left))}",
                              recoverable=True)

    # --------------------------------------------------------------- recover
    async def recover(self, handle: TaskHandle) -> bool:
        """Re-attach to a container started by an earlier agent process (same runc id, same pid).

        A handle with pid 0 (the agent died while starting it) is completed from
        runc's state and the container record.
        """
        state = await self.runc.state(handle.id)
        if state is None or state.status not in ("running", "paused"):
            return False
        if handle.pid == 0:
            record = self._read_record(handle.id)
            if record is None:
                return False
            handle.pid = state.pid
            handle.state = {**record, **handle.state}
            handle.state["pid_start_time"] = procwait.process_start_time(state.pid)
            handle.started_at = handle.started_at or time.time()
        if state.pid != handle.pid:
            # The container with this task's id is the task: restarted after the handle was saved. Adopt it.
            handle.pid = state.pid
            handle.state["pid_start_time"] = procwait.process_start_time(state.pid)
        start_time = handle.state.get("pid_start_time")
        if start_time is not None and procwait.process_start_time(handle.pid) != start_time:
            return False
        self._watch(handle)
        return True

    def probe_handle(self, alloc_id: str, task: str) -> TaskHandle | None:
        """A handle (pid 0) for a task whose start an earlier agent did not see finish, if it left a record."""
        cid = names.container_id(alloc_id, task)
        if self._read_record(cid) is None:
            return None
        return TaskHandle(driver=self.name, id=cid, pid=0, started_at=0.0, state={})

    # ------------------------------------------------------------------ exec
    def exec_command(self, handle: TaskHandle, argv: list[str], *, tty: bool, spec: TaskSpec) -> ExecCommand:
        """``runc exec`` in the task's container."""
        return ExecCommand([*self.runc._base(), "exec", *(["--tty"] if tty else []), handle.id, *argv])

    # ----------------------------------------------------------- bookkeeping
    def _write_record(self, cid: str, state: dict[str, Any]) -> None:
        """Note the container on disk before it exists, so a crashed agent can still clean it up."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / f".{cid}.json.tmp"
            tmp.write_text(json.dumps({"id": cid, "state": state}))
            os.rename(tmp, self.state_dir / f"{cid}.json")
        except OSError as exc:
            raise DriverError(f"cannot write the container record in {self.state_dir}: {exc}") from exc

    def _read_record(self, cid: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.state_dir / f"{cid}.json").read_text())["state"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _remove_record(self, cid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / f"{cid}.json").unlink()

    def leftover_handles(self) -> list[TaskHandle]:
        """Handles (pid 0) for every container started and not yet destroyed, to ``destroy`` after a crash."""
        out: list[TaskHandle] = []
        if not self.state_dir.is_dir():
            return out
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                out.append(TaskHandle(driver=self.name, id=str(record["id"]), pid=0, started_at=0.0,
                                      state=dict(record["state"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out
