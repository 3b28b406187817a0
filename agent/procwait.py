"""Wait for any process to exit without polling, and reap it when it is ours.

``wait_pid`` opens a pidfd (``os.pidfd_open``), which pins the identity of the
process: a pid that is reused later can never be confused with the one we hold.
The pidfd becomes readable when the process exits; the event loop watches it with
``add_reader``. If the process is our child (directly, or because we are a child
subreaper and its parent exited, as with the init of a ``runc run -d``
container), its status is collected with ``waitid(P_PIDFD, ...)``, which also
reaps it. Otherwise (e.g. after an agent restart) the process is not ours to
reap and the exit status is reported as unknown.

``SharedWaits`` lets several callers wait on one exit: the first waiter starts the
reaping task, everyone else awaits the same result, and cancelling a waiter never
cancels the reaping.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal as _signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

_libc: ctypes.CDLL | None = None


def _libc_handle() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def become_subreaper(enabled: bool = True) -> None:
    """Make this process a child subreaper: orphaned descendants are reparented to it.

    The agent calls this at start-up so that a container's init, whose parent
    (``runc run -d``) exits right after starting it, becomes our child and its exit
    status can be reaped by ``wait_pid``. ``enabled=False`` turns it off again.
    """
    libc = _libc_handle()
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if enabled else 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_subreaper() -> bool:
    libc = _libc_handle()
    value = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_GET_CHILD_SUBREAPER): {os.strerror(err)}")
    return value.value != 0


@dataclass(slots=True, frozen=True)
class ProcExit:
    """How a process ended. ``exit_code`` is None when the status could not be collected."""

    pid: int
    exit_code: int | None
    signal: int = 0
    reason: str = ""  # why the status is unknown, if it is

    @property
    def known(self) -> bool:
        return self.exit_code is not None


def _read_stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    end = data.rfind(")")
    if end < 0:
        return None
    return data[end + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None if gone.

    Stored next to a pid, it detects pid reuse: a different process with the same
    pid has a different start time.
    """
    fields = _read_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def process_group(pid: int) -> int | None:
    fields = _read_stat_fields(pid)
    if fields is None or len(fields) < 3:
        return None
    return int(fields[2])


def parent_pid(pid: int) -> int | None:
    fields = _read_stat_fields(pid)
    if fields is None or len(fields) < 2:
        return None
    return int(fields[1])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if given) started at ``start_time``."""
    fields = _read_stat_fields(pid)
    if fields is None or not fields:
        return False
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or (len(fields) >= 20 and int(fields[19]) == start_time)


def _decode(pid: int, info: os.waitid_result) -> ProcExit:
    if info.si_code == os.CLD_EXITED:
        return ProcExit(pid, info.si_status)
    if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return ProcExit(pid, 128 + info.si_status, signal=info.si_status)
    # CLD_STOPPED / CLD_CONTINUED cannot come back with only WEXITED; be explicit anyway.
    return ProcExit(pid, None, reason=f"unexpected waitid code {info.si_code}")


def _try_collect(pid: int, pidfd: int) -> ProcExit | None:
    """Reap the process behind ``pidfd`` if it has exited. None: still running."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        # Not our child (started by an earlier agent, or someone else reaped it).
        return None
    if info is None:
        return None
    return _decode(pid, info)


# Process-wide reaping state: a process can be reaped only once, so every waiter on
# one pid (in one event loop) shares one reaping task, and recent statuses are kept
# by (pid, start time) for waiters that come late.
_inflight: dict[int, asyncio.Future[ProcExit]] = {}
_reaped: OrderedDict[tuple[int, int], ProcExit] = OrderedDict()
_REAPED_KEEP = 1024


async def wait_pid(pid: int, start_time: int | None = None) -> ProcExit:
    """Wait until ``pid`` exits; reap it and return its status if it is our child.

    ``start_time`` (from ``process_start_time`` when the process was started)
    guards against pid reuse: if the pid now belongs to another process, the
    original one is long gone and its status is unknown. Concurrent waiters on
    one pid share a single reaping task. Cancel-safe: cancelling a waiter does
    not stop the reaping, and a later wait (with ``start_time``) gets the status.
    """
    if start_time is not None:
        cached = _reaped.get((pid, start_time))
        if cached is not None:
            return cached
    loop = asyncio.get_running_loop()
    shared = _inflight.get(pid)
    if shared is not None and not shared.done() and shared.get_loop() is loop:
        # A pid cannot be reused before the process we are reaping is gone, so the
        # in-flight task is for the same process unless start times differ.
        if start_time is None or process_start_time(pid) in (start_time, None):
            return await asyncio.shield(shared)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return ProcExit(pid, None, reason="the process had already exited and been reaped")
    try:
        actual = process_start_time(pid)
    except BaseException:
        os.close(pidfd)
        raise
    if start_time is not None and actual != start_time:
        # Either another process now owns this pid, or ours vanished between
        # pidfd_open and the check. In both cases ours is gone.
        os.close(pidfd)
        return ProcExit(pid, None, reason="the process is gone (its pid was reused)")
    task = loop.create_task(_reap(pid, pidfd, actual), name=f"reap:{pid}")

    def done(t: asyncio.Future[ProcExit]) -> None:
        if _inflight.get(pid) is t:
            del _inflight[pid]

    task.add_done_callback(done)
    _inflight[pid] = task
    return await asyncio.shield(task)


async def _reap(pid: int, pidfd: int, start_time: int | None) -> ProcExit:
    """Wait on ``pidfd`` (owned: closed here) and collect the status if the process is our child."""
    try:
        result = _try_collect(pid, pidfd)  # already a zombie child?
        if result is None:
            result = await _wait_readable_then_collect(pid, pidfd)
        if result.known and start_time is not None:
            _reaped[(pid, start_time)] = result
            while len(_reaped) > _REAPED_KEEP:
                _reaped.popitem(last=False)
        return result
    finally:
        os.close(pidfd)


async def _wait_readable_then_collect(pid: int, pidfd: int) -> ProcExit:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(pidfd, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(pidfd)
    # The process has exited. Our child: collect (this also reaps the zombie).
    while True:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return ProcExit(pid, None, reason="the process was not started by this agent process")
        if info is not None:
            return _decode(pid, info)
        # A readable pidfd of an exited child is always waitable; guard anyway.
        await asyncio.sleep(0.001)


def signal_process(pid: int, sig: int, start_time: int | None = None) -> bool:
    """Send ``sig`` to ``pid`` through a pidfd (no pid-reuse race). False if it is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if start_time is not None and process_start_time(pid) != start_time:
            return False
        try:
            _signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        os.close(pidfd)


T = TypeVar("T")


class SharedWaits(Generic[T]):
    """One background task per key computing an exit result; any number of waiters.

    The task is shielded from waiter cancellation, and its result outlives
    ``forget`` (in a small bounded cache) so that a late ``wait``, even after the
    task was destroyed, still gets the status that the first one reaped. Keys
    must name one process (e.g. container id plus pid), never a reusable name.
    """

    __slots__ = ("_tasks", "_finished", "_keep")

    def __init__(self, keep: int = 256) -> None:
        self._tasks: dict[str, asyncio.Future[T]] = {}
        self._finished: OrderedDict[str, T] = OrderedDict()
        self._keep = keep

    def task(self, key: str, factory: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        existing = self._tasks.get(key)
        if existing is not None and existing.get_loop() is loop:
            return existing
        fut: asyncio.Future[T]
        if key in self._finished:
            fut = loop.create_future()
            fut.set_result(self._finished[key])
        else:
            fut = loop.create_task(factory(), name=f"wait:{key}")  # type: ignore[arg-type]
        self._tasks[key] = fut
        return fut

    def existing(self, key: str) -> asyncio.Future[T] | None:
        fut = self._tasks.get(key)
        if fut is None:
            return None
        try:
            if fut.get_loop() is not asyncio.get_running_loop():
                return None
        except RuntimeError:
            return None
        return fut

    async def wait(self, key: str, factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        fut = self.task(key, factory)
        if timeout is None:
            return await asyncio.shield(fut)
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    def forget(self, key: str) -> None:
        """Drop the task; keep its result if it has one. A pending task runs on (never cancelled)."""
        fut = self._tasks.pop(key, None)
        if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
            self._finished[key] = fut.result()
            self._finished.move_to_end(key)
            while len(self._finished) > self._keep:
                self._finished.popitem(last=False)
