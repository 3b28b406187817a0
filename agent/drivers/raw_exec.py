"""The raw_exec driver: run a command directly on the host, without isolation.

The task runs in ``task_dir`` in its own session and process group (setsid),
with a minimal PATH plus the task's env, stdout/stderr to the task's log files.
Stopping signals the whole process group, then SIGKILLs whatever is left of the
session after the timeout. Whether raw_exec is *enabled* is the agent's
configuration, not this driver's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal as _signal
import subprocess
import time
from typing import Any

from shoal.agent import procwait
from shoal.agent.drivers.base import Driver, DriverError, ExecCommand, ExitResult, TaskHandle, TaskSpec, log_fds, wait_key

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KILL_GRACE = 10.0


def _signal_number(sig: str | int) -> int:
    if isinstance(sig, int) or str(sig).isdigit():
        return int(sig)
    name = str(sig).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise DriverError(f"unknown signal {sig!r}") from None


def session_members(sid: int, *, zombies: bool = False, parent: int | None = None) -> list[int]:
    """Pids whose process group or session is ``sid`` (the task's leader pid).

    ``zombies`` includes exited, unreaped processes; ``parent`` keeps only that parent's children.
    """
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = data[data.rfind(")") + 2 :].split()
        if len(fields) < 4 or (not zombies and fields[0] in ("Z", "X")):
            continue
        if parent is not None and int(fields[1]) != parent:
            continue
        if int(fields[2]) == sid or int(fields[3]) == sid:
            members.append(int(entry))
    return members


class RawExecDriver(Driver):
    """Runs ``config.command`` with ``config.args`` as a host process group (no isolation: the
    default ``capabilities``)."""

    name = "raw_exec"

    def __init__(self) -> None:
        self._waits: procwait.SharedWaits[ExitResult] = procwait.SharedWaits()
        # Popen objects of our children: kept until reaped so that subprocess never reaps them itself.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def fingerprint(self) -> dict[str, str] | None:
        return {"driver.raw_exec": "1"}

    @staticmethod
    def _argv(config: dict[str, Any]) -> list[str]:
        command = config.get("command")
        if not command or not isinstance(command, str):
            raise DriverError("config.command is required for raw_exec: the program to run")
        args = config.get("args") or []
        if isinstance(args, str) or not all(isinstance(a, (str, int, float)) for a in args):
            raise DriverError("config.args must be a list of strings")
        return [command, *(str(a) for a in args)]

    @staticmethod
    def _env(spec: TaskSpec) -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, **{str(k): str(v) for k, v in spec.env.items()}}

    @staticmethod
    def _user(user: str) -> tuple[int, int] | None:
        if not user:
            return None
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise DriverError(f"user {user!r} does not exist on this host") from None
        if os.geteuid() != 0:
            if entry.pw_uid != os.geteuid():
                raise DriverError(f"cannot run as user {user!r}: the agent is not running as root")
            return None  # already that user
        return entry.pw_uid, entry.pw_gid

    async def start(self, spec: TaskSpec) -> TaskHandle:
        argv = self._argv(spec.config)
        ids = self._user(spec.user)
        env = self._env(spec)
        with log_fds(spec) as (out_fd, err_fd):
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.task_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_fd,
                    stderr=err_fd,
                    start_new_session=True,
                    close_fds=True,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                )
            except FileNotFoundError:
                raise DriverError(f"command {argv[0]!r} not found (PATH={env['PATH']})") from None
            except PermissionError as exc:
                raise DriverError(f"cannot execute {argv[0]!r}: {exc.strerror}") from None
            except OSError as exc:
                raise DriverError(f"cannot start {argv[0]!r}: {exc}") from None
        pid = proc.pid
        self._children[pid] = proc
        handle = TaskHandle(
            driver=self.name,
            id=str(pid),
            pid=pid,
            started_at=time.time(),
            state={"pgid": pid, "pid_start_time": procwait.process_start_time(pid), "command": argv[0]},
        )
        self._watch(handle)
        return handle

    def _watch(self, handle: TaskHandle) -> asyncio.Future[ExitResult]:
        return self._waits.task(wait_key(handle), lambda: self._collect_exit(handle))

    async def _collect_exit(self, handle: TaskHandle) -> ExitResult:
        pexit = await procwait.wait_pid(handle.pid, handle.state.get("pid_start_time"))
        proc = self._children.pop(handle.pid, None)
        if proc is not None and pexit.exit_code is not None:
            proc.returncode = pexit.exit_code  # we reaped it: subprocess must not try
        if pexit.exit_code is None:
            return ExitResult(-1, message=f"exit status unknown: {pexit.reason}", known=False)
        message = ""
        if pexit.signal:
            try:
                message = f"killed by signal {_signal.Signals(pexit.signal).name}"
            except ValueError:
                message = f"killed by signal {pexit.signal}"
        return ExitResult(pexit.exit_code, signal=pexit.signal, message=message)

    async def wait(self, handle: TaskHandle) -> ExitResult:
        return await asyncio.shield(self._watch(handle))

    def _leader_is_ours(self, handle: TaskHandle) -> bool:
        """False if the leader's pid now belongs to another process (then the group id is not ours either)."""
        start_time = handle.state.get("pid_start_time")
        current = procwait.process_start_time(handle.pid)
        return current is None or start_time is None or current == start_time

    def _signal_group(self, handle: TaskHandle, sig: int) -> bool:
        if not self._leader_is_ours(handle):
            return False
        try:
            os.killpg(int(handle.state.get("pgid", handle.pid)), sig)
        except ProcessLookupError:
            return False
        return True

    def _kill_session(self, handle: TaskHandle) -> None:
        """SIGKILL the group, then every process left in the task's session (until none is left)."""
        if not self._leader_is_ours(handle):
            return
        sid = int(handle.state.get("pgid", handle.pid))
        self._signal_group(handle, _signal.SIGKILL)
        for _round in range(10):  # a member may fork (or leave the group) while we kill
            members = session_members(sid)
            if not members:
                return
            for pid in members:
                procwait.signal_process(pid, _signal.SIGKILL)

    async def _reap_session(self, handle: TaskHandle) -> None:
        """Reap the task's processes that were reparented to us (we are a subreaper) and have died."""
        sid = int(handle.state.get("pgid", handle.pid))
        me = os.getpid()
        for _round in range(10):
            orphans = session_members(sid, zombies=True, parent=me)  # the leader too: wait_pid joins its watcher
            if not orphans:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(procwait.wait_pid(p) for p in orphans)), _KILL_GRACE)

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        exited = self._watch(handle)
        if not exited.done() and self._signal_group(handle, _signal_number(signal or "SIGTERM")):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), max(timeout, 0.0))
        self._kill_session(handle)
        try:
            await asyncio.wait_for(asyncio.shield(exited), _KILL_GRACE)
        except TimeoutError:
            raise DriverError(f"task pid {handle.pid} did not exit {_KILL_GRACE:.0f}s after SIGKILL",
                              recoverable=True) from None
        await self._reap_session(handle)

    async def destroy(self, handle: TaskHandle) -> None:
        self._kill_session(handle)
        watcher = self._waits.existing(wait_key(handle))
        if watcher is not None and not watcher.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), _KILL_GRACE)
        await self._reap_session(handle)
        self._waits.forget(wait_key(handle))

    async def recover(self, handle: TaskHandle) -> bool:
        if not procwait.pid_alive(handle.pid, handle.state.get("pid_start_time")):
            return False
        self._watch(handle)
        return True

    def exec_command(self, handle: TaskHandle, argv: list[str], *, tty: bool, spec: TaskSpec) -> ExecCommand:
        """The command on the host, in the task's directory, with the task's env."""
        return ExecCommand(list(argv), cwd=str(spec.task_dir), env=self._env(spec))
