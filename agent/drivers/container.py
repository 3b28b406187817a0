"""The container driver: OCI images from the local store, overlayfs rootfs, runc.

Start path (per task, nothing global held across a runc call)::

    resolve image (cached) -> unpack missing layers (once per layer, in a thread)
    -> mount overlay at TASK_DIR/rootfs (lower = layers, upper/work in TASK_DIR/overlay)
    -> TASK_DIR/bundle/config.json -> runc run -d --pid-file --bundle ID

The container's stdout/stderr are the task's log files, inherited from runc.
The container's init is reparented to the agent (a child subreaper) when
``runc run -d`` exits, so ``procwait`` reaps it and reads its real exit status;
OOM kills are read from the cgroup before ``runc delete`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal as _signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agent import cgroups, ocispec, procwait
from shoal.agent.drivers.base import DriverError, ExitResult, TaskHandle, TaskSpec
from shoal.agent.fingerprint import cpu_info
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import Image
from shoal.agent.registry_client import Credentials, RegistryConfig
from shoal.agent.runc import Runc

DEFAULT_STATE_DIR = Path("/var/lib/shoal/containers")
SUPPORTED_KEYS = frozenset({
    "image", "command", "entrypoint", "args", "work_dir", "readonly_rootfs", "pids_limit", "volumes",
    "auth", "force_pull", "cpu_hard_limit", "cap_drop",
})
_HINTS = {
    "ports": "containers have their own network namespace; ports are not published on the host",
    "network_mode": "containers get their own network namespace",
    "mount": "use volumes = [\"HOST:CONTAINER[:ro]\"]",
    "mounts": "use volumes = [\"HOST:CONTAINER[:ro]\"]",
    "auth_soft_fail": "a failed registry login fails the pull",
    "privileged": "privileged containers are not supported",
    "cap_add": "capabilities are Docker's default set (cap_drop can remove some)",
    "logging": "logs always go to the task's log files",
}
_ID_BAD_CHARS = re.compile(r"[^\w+.-]")
_STOP_GRACE = 10.0  # seconds to wait for an exit after SIGKILL

MNT_DETACH = 2
_PAGE = 4096


class _Conflict(DriverError):
    """A live container already uses this id."""


def container_id(alloc_id: str, task: str) -> str:
    """runc container id for a task: ``shoal-<alloc>-<task>`` with runc-safe characters."""
    return _ID_BAD_CHARS.sub("_", f"shoal-{alloc_id}-{task}")


# ---------------------------------------------------------------- mounts
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def _escape_overlay(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount_overlay(target: Path, lowers: list[Path], upper: Path, work: Path) -> None:
    """mount -t overlay (through mount(2); no `mount` binary)."""
    options = "lowerdir={},upperdir={},workdir={}".format(
        ":".join(_escape_overlay(str(p)) for p in lowers), _escape_overlay(str(upper)), _escape_overlay(str(work))
    )
    data = options.encode()
    if len(data) >= _PAGE:
        raise DriverError(
            f"cannot mount the rootfs at {target}: the image has {len(lowers)} layers and the overlay "
            "options exceed one page; flatten the image (fewer layers) or use a shorter image store path"
        )
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, data) != 0:
        err = ctypes.get_errno()
        raise DriverError(f"cannot mount overlayfs at {target}: {os.strerror(err)} (options: {options})")


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


# ---------------------------------------------------------------- layout
@dataclass(slots=True, frozen=True)
class _TaskPaths:
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


def _signal_name(sig: str | int) -> str:
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


def _wait_key(handle: TaskHandle) -> str:
    return f"{handle.id}:{handle.pid}"  # one process: a restarted task (same id) gets a new key


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


class ContainerDriver:
    """Runs tasks as runc containers. Registered as "container" and as "docker"."""

    name = "container"

    def __init__(
        self,
        image_store: ImageStore,
        runc_root: str | None = None,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        runc_binary: str = "runc",
        registry: RegistryConfig | None = None,
        allowed_volumes: list[Path] | tuple[Path, ...] = (),
        image_gc_delay: float | None = None,
    ) -> None:
        self.images = image_store
        self.image_manager = (ImageManager(image_store, registry) if image_gc_delay is None
                              else ImageManager(image_store, registry, gc_delay=image_gc_delay))
        self.allowed_volumes = tuple(Path(os.path.realpath(p)) for p in allowed_volumes)
        self.runc = Runc(runc_binary, runc_root)
        self.state_dir = Path(state_dir)  # one JSON record per live container, for clean-up after a crash
        self._waits: procwait.SharedWaits[ExitResult] = procwait.SharedWaits()
        self._runc_version: str | None = None

    # ------------------------------------------------------------ fingerprint
    def fingerprint(self) -> dict[str, str] | None:
        if os.geteuid() != 0 or not self.runc.available():
            return None
        if self._runc_version is None:
            self._runc_version = self.runc.version_sync()
        if self._runc_version is None:
            return None
        return {
            "driver.container": "1",
            "driver.container.runtime": "runc",
            "driver.container.runc.version": self._runc_version,
            "cgroup.version": str(cgroups.cgroup_version()),
        }

    # ---------------------------------------------------------------- config
    def config_warnings(self, config: dict[str, Any]) -> list[str]:
        """One message per config key this driver ignores (the caller decides whether that is fatal)."""
        warnings: list[str] = []
        for key in sorted(config):
            if key in SUPPORTED_KEYS:
                continue
            hint = _HINTS.get(key)
            msg = f"config.{key} is not supported by the container driver and is ignored"
            warnings.append(f"{msg} ({hint})" if hint else msg)
        return warnings

    @staticmethod
    def _validate(config: dict[str, Any]) -> tuple[str, bool, int, str]:
        image = config.get("image")
        if not image or not isinstance(image, str):
            raise DriverError("config.image is required: an image name:tag from the local store, or a rootfs path")
        readonly = config.get("readonly_rootfs", False)
        if not isinstance(readonly, bool):
            raise DriverError("config.readonly_rootfs must be true or false")
        pids = config.get("pids_limit", ocispec.DEFAULT_PIDS_LIMIT)
        if isinstance(pids, bool) or not isinstance(pids, int) or pids < 0:
            raise DriverError("config.pids_limit must be a non-negative integer (0 = no limit)")
        work_dir = config.get("work_dir") or ""
        if not isinstance(work_dir, str) or (work_dir and not work_dir.startswith("/")):
            raise DriverError("config.work_dir must be an absolute path inside the container")
        for key in ("force_pull", "cpu_hard_limit"):
            if not isinstance(config.get(key, False), bool):
                raise DriverError(f"config.{key} must be true or false")
        return image, readonly, pids, work_dir

    @staticmethod
    def _auth(config: dict[str, Any]) -> Credentials | None:
        """``auth { username password }`` (Nomad's docker driver); a list of one block is accepted too."""
        auth = config.get("auth")
        if auth is None:
            return None
        if isinstance(auth, list) and len(auth) == 1:
            auth = auth[0]
        if not isinstance(auth, dict):
            raise DriverError("config.auth must be a block: auth { username = \"...\" password = \"...\" }")
        return Credentials(str(auth.get("username") or ""), str(auth.get("password") or ""),
                           str(auth.get("identity_token") or auth.get("registry_token") or ""))

    def volume_mounts(self, volumes: Any, task_dir: Path) -> list[dict[str, Any]]:
        """Bind mounts for ``volumes = ["HOST:CONTAINER[:ro|rw]"]``.

        A relative HOST path is inside the allocation's directory (as Nomad: relative
        to the task directory, created if missing, never escaping the allocation). An
        absolute HOST path must lie under a directory the agent allows
        (``--allow-volume``) and must exist.
        """
        if volumes is None:
            return []
        if not isinstance(volumes, list) or not all(isinstance(v, str) for v in volumes):
            raise DriverError('config.volumes must be a list of "HOST:CONTAINER[:ro]" strings')
        alloc_dir = Path(os.path.realpath(task_dir.parent))
        mounts = []
        for spec in volumes:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise DriverError(f'config.volumes: {spec!r} is not "HOST:CONTAINER" or "HOST:CONTAINER:ro"')
            host, dest = parts[0], parts[1]
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in ("ro", "rw"):
                raise DriverError(f"config.volumes: {spec!r}: the mode must be ro or rw, not {mode!r}")
            if not dest.startswith("/") or ".." in dest.split("/"):
                raise DriverError(f"config.volumes: {spec!r}: the container path must be absolute, without '..'")
            if host.startswith("/"):
                real = Path(os.path.realpath(host))
                if not any(real == a or a in real.parents for a in self.allowed_volumes):
                    allowed = ", ".join(map(str, self.allowed_volumes)) or "none"
                    raise DriverError(
                        f"config.volumes: host path {host} is not allowed on this node (allowed: {allowed}); "
                        "start the agent with --allow-volume DIR to allow bind mounts from DIR"
                    )
                if not real.exists():
                    raise DriverError(f"config.volumes: host path {host} does not exist on this node")
            else:
                real = Path(os.path.realpath(task_dir / host))
                if real != alloc_dir and alloc_dir not in real.parents:
                    raise DriverError(f"config.volumes: {host!r} leaves the allocation's directory; relative host "
                                      "paths are inside it")
                real.mkdir(parents=True, exist_ok=True)
            mounts.append(ocispec.bind_mount(real, dest, readonly=mode == "ro"))
        return mounts

    def _task_mounts(self, spec: TaskSpec, paths: _TaskPaths) -> list[dict[str, Any]]:
        """Nomad's task directories: the allocation's shared dir at /alloc, the task's local/ and secrets/."""
        alloc_shared = Path(os.path.realpath(spec.task_dir)).parent / "alloc"
        local, secrets = paths.task_dir / "local", paths.task_dir / "secrets"
        for d in (alloc_shared, local):
            d.mkdir(parents=True, exist_ok=True)
        secrets.mkdir(mode=0o700, exist_ok=True)
        return [ocispec.bind_mount(alloc_shared, "/alloc"), ocispec.bind_mount(local, "/local"),
                ocispec.bind_mount(secrets, "/secrets")]

    # ----------------------------------------------------------------- start
    async def _lower_dirs(self, image: Image) -> list[Path]:
        if self.images.layers_ready(image):
            return self.images.lower_dirs(image)
        return await asyncio.to_thread(self.images.lower_dirs, image)

    def _prepare_rootfs(self, paths: _TaskPaths, lowers: list[Path]) -> None:
        unmount(paths.rootfs)  # a restart of the same task: start from a fresh rootfs
        if paths.overlay.exists():
            shutil.rmtree(paths.overlay)
        paths.upper.mkdir(parents=True)
        paths.work.mkdir()
        paths.rootfs.mkdir(exist_ok=True)
        mount_overlay(paths.rootfs, lowers, paths.upper, paths.work)

    async def start(self, spec: TaskSpec) -> TaskHandle:
        ref, readonly, pids_limit, work_dir = self._validate(spec.config)
        cid = container_id(spec.alloc_id, spec.task)
        image = await self.image_manager.get(ref, auth=self._auth(spec.config),
                                             force_pull=bool(spec.config.get("force_pull", False)),
                                             on_pull=lambda: spec.event("Driver", f"Downloading image {ref}"))
        lowers = await self._lower_dirs(image)
        paths = _TaskPaths(Path(os.path.realpath(spec.task_dir)))
        paths.task_dir.mkdir(parents=True, exist_ok=True)
        return await self._start_bundle(spec, cid, paths, image, ref, work_dir or image.config.working_dir or "/",
                                        readonly, pids_limit, lambda: self._prepare_rootfs(paths, lowers))

    def _user_root(self, paths: _TaskPaths) -> Path:
        """The filesystem whose /etc/passwd and /etc/group name the task's user."""
        return paths.rootfs

    def _extra_mounts(self, spec: TaskSpec, paths: _TaskPaths) -> list[dict[str, Any]]:
        return [*self._task_mounts(spec, paths), *self.volume_mounts(spec.config.get("volumes"), paths.task_dir)]

    async def _start_bundle(self, spec: TaskSpec, cid: str, paths: _TaskPaths, image: Image, ref: str, cwd: str,
                            readonly: bool, pids_limit: int, prepare_rootfs) -> TaskHandle:
        cgroups_path = f"/shoal/{cid}"
        state: dict[str, Any] = {
            "container_id": cid,
            "bundle": str(paths.bundle),
            "rootfs": str(paths.rootfs),
            "task_dir": str(paths.task_dir),
            "cgroups_path": cgroups_path,
            "runc_root": self.runc.root,
            "image": ref,
            "image_digest": image.digest,
        }
        if (self.state_dir / f"{cid}.json").exists():
            # Started before and not destroyed: refuse to clobber a live container.
            await self._refuse_if_running(cid)
        self._write_record(cid, state)
        try:
            prepare_rootfs()
            argv = ocispec.process_args(spec.config, image.config)
            user = ocispec.resolve_user(spec.user or image.config.user, self._user_root(paths))
            hostname = ocispec.hostname_of(spec.task)
            env = ocispec.merge_env(image.config.env, spec.env, {"HOSTNAME": hostname, "HOME": user.home})
            env += ["NOMAD_ALLOC_DIR=/alloc", "NOMAD_TASK_DIR=/local", "NOMAD_SECRETS_DIR=/secrets"]
            cap_drop = spec.config.get("cap_drop") or []
            if not isinstance(cap_drop, list) or not all(isinstance(c, str) for c in cap_drop):
                raise DriverError('config.cap_drop must be a list of capability names, e.g. ["NET_RAW"]')
            config = ocispec.build_spec(
                container_id=cid,
                hostname=hostname,
                rootfs=paths.rootfs,
                argv=argv,
                env=env,
                cwd=cwd,
                user=user,
                resources=spec.resources,
                readonly_rootfs=readonly,
                pids_limit=pids_limit,
                swap_limit=cgroups.swap_limit_supported(),
                cgroups_path=cgroups_path,
                mounts=self._extra_mounts(spec, paths),
                cap_drop=cap_drop,
                cpu_hard_limit_mhz_per_core=cpu_info()[1] if spec.config.get("cpu_hard_limit") else 0,
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
            await self._cleanup(cid, paths, cgroups_path)
            self._remove_record(cid)
            raise
        state["pid_start_time"] = procwait.process_start_time(pid)
        handle = TaskHandle(driver=self.name, id=cid, pid=pid, started_at=time.time(), state=state)
        self._watch(handle)
        return handle

    async def _run(self, cid: str, bundle: Path, spec: TaskSpec) -> int:
        out_fd = _open_log(spec.stdout_path)
        err_fd = out_fd
        try:
            if spec.stderr_path != spec.stdout_path:
                err_fd = _open_log(spec.stderr_path)
            try:
                return await self._run_once(cid, bundle, out_fd, err_fd)
            except DriverError as exc:
                if "already exists" not in str(exc):
                    raise
                # A container left by an earlier run of this task: remove it if it has stopped.
                await self._refuse_if_running(cid)
                await self.runc.delete(cid, force=True)
                return await self._run_once(cid, bundle, out_fd, err_fd)
        finally:
            os.close(out_fd)
            if err_fd != out_fd:
                os.close(err_fd)

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
        return self._waits.task(_wait_key(handle), lambda: self._collect_exit(handle))

    async def _collect_exit(self, handle: TaskHandle) -> ExitResult:
        start_time = handle.state.get("pid_start_time")
        pexit = await procwait.wait_pid(handle.pid, start_time)
        cgroups_path = str(handle.state.get("cgroups_path") or f"/shoal/{handle.id}")
        try:
            oom = cgroups.read_oom(cgroups_path)
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
        sent = await self.runc.kill(handle.id, _signal_name(signal or "SIGTERM"))
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
        cgroups_path = str(handle.state.get("cgroups_path") or f"/shoal/{cid}")
        task_dir = handle.state.get("task_dir")
        watcher = self._waits.existing(_wait_key(handle))
        if watcher is not None and not watcher.done():
            # Kill first and let the watcher reap and read the OOM state while the cgroup exists.
            await self.runc.kill(cid, "KILL", all_processes=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), _STOP_GRACE)
        paths = _TaskPaths(Path(task_dir)) if task_dir else None
        await self._cleanup(cid, paths, cgroups_path)
        self._waits.forget(_wait_key(handle))
        self._remove_record(cid)

    async def _cleanup(self, cid: str, paths: _TaskPaths | None, cgroups_path: str) -> None:
        await self.runc.delete(cid, force=True)
        if paths is not None:
            unmount(paths.rootfs)
            for d in (paths.bundle, paths.overlay):
                if d.exists():
                    shutil.rmtree(d)
            with contextlib.suppress(FileNotFoundError, OSError):
                paths.rootfs.rmdir()
        left = cgroups.remove_cgroup(cgroups_path)
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
        cid = container_id(alloc_id, task)
        if self._read_record(cid) is None:
            return None
        return TaskHandle(driver=self.name, id=cid, pid=0, started_at=0.0, state={})

    # ------------------------------------------------------------------ exec
    def exec_argv(self, handle: TaskHandle, argv: list[str], *, tty: bool = False) -> list[str]:
        """The command line that runs ``argv`` inside the task's container."""
        return [*self.runc._base(), "exec", *(["--tty"] if tty else []), handle.id, *argv]

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
