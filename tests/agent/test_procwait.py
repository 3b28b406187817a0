"""procwait: pidfd-based waiting, reaping, pid-reuse guards, shared waits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from shoal.agent import procwait


def _spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)


def _reaped(proc: subprocess.Popen[bytes], result: procwait.ProcExit) -> None:
    # We reaped it through the pidfd; tell subprocess so it never waits on the pid again.
    proc.returncode = result.exit_code


def test_subreaper_can_be_set_and_read(subreaper: None) -> None:
    assert procwait.is_subreaper()


def test_exit_code_of_a_child(aio) -> None:
    proc = _spawn("sh", "-c", "sleep 0.1; exit 7")
    start = procwait.process_start_time(proc.pid)
    result = aio(procwait.wait_pid(proc.pid, start))
    _reaped(proc, result)
    assert result.known and result.exit_code == 7 and result.signal == 0
    assert not os.path.exists(f"/proc/{proc.pid}/stat") or procwait.process_start_time(proc.pid) != start


def test_already_exited_child_is_collected(aio) -> None:
    proc = _spawn("true")
    deadline = time.monotonic() + 5
    while procwait.pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    result = aio(procwait.wait_pid(proc.pid))  # a zombie by now
    _reaped(proc, result)
    assert result.exit_code == 0


def test_signalled_child(aio) -> None:
    proc = _spawn("sleep", "30")

    async def scenario() -> procwait.ProcExit:
        waiter = asyncio.create_task(procwait.wait_pid(proc.pid))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        assert procwait.signal_process(proc.pid, signal.SIGKILL)
        return await waiter

    result = aio(scenario())
    _reaped(proc, result)
    assert result.signal == signal.SIGKILL and result.exit_code == 128 + signal.SIGKILL


def test_not_our_child_reports_unknown(aio) -> None:
    # sh is our child; the sleep it starts in the background is its child, not ours.
    parent = subprocess.Popen(["sh", "-c", "sleep 0.3 & echo $!; wait"], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        t0 = time.monotonic()
        result = aio(procwait.wait_pid(grandchild))
        assert time.monotonic() - t0 >= 0.1  # it really waited for the exit
        assert not result.known and "not started by this agent" in result.reason
    finally:
        parent.wait(10)


def test_pid_reuse_and_missing_pid(aio) -> None:
    proc = _spawn("sleep", "30")
    try:
        real = procwait.process_start_time(proc.pid)
        assert real is not None
        stale = aio(procwait.wait_pid(proc.pid, real - 1))
        assert not stale.known and "reused" in stale.reason
        assert not procwait.signal_process(proc.pid, signal.SIGKILL, real - 1)
        assert procwait.pid_alive(proc.pid, real)
    finally:
        proc.kill()
        proc.wait()
    gone = aio(procwait.wait_pid(proc.pid))
    assert not gone.known and "already exited" in gone.reason


def test_cancelled_wait_does_not_lose_the_status(aio) -> None:
    proc = _spawn("sh", "-c", "sleep 0.2; exit 4")
    start = procwait.process_start_time(proc.pid)

    async def scenario() -> tuple[procwait.ProcExit, procwait.ProcExit]:
        first = asyncio.create_task(procwait.wait_pid(proc.pid, start))
        await asyncio.sleep(0.02)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        joined = await procwait.wait_pid(proc.pid)  # joins the reaping still in flight
        late = await procwait.wait_pid(proc.pid, start)  # reaped by now: the kept status
        return joined, late

    joined, late = aio(scenario())
    _reaped(proc, joined)
    assert joined.exit_code == 4 and late.exit_code == 4


def test_concurrent_waiters_share_one_reaping(aio) -> None:
    proc = _spawn("sh", "-c", "sleep 0.1; exit 6")
    start = procwait.process_start_time(proc.pid)

    async def scenario() -> list[procwait.ProcExit]:
        return list(await asyncio.gather(procwait.wait_pid(proc.pid, start), procwait.wait_pid(proc.pid),
                                         procwait.wait_pid(proc.pid, start)))

    results = aio(scenario())
    _reaped(proc, results[0])
    assert [r.exit_code for r in results] == [6, 6, 6]


def test_shared_waits_give_every_waiter_the_one_status(aio) -> None:
    proc = _spawn("sh", "-c", "sleep 0.2; exit 5")
    waits: procwait.SharedWaits[procwait.ProcExit] = procwait.SharedWaits()

    async def scenario() -> list[procwait.ProcExit]:
        factory = lambda: procwait.wait_pid(proc.pid)  # noqa: E731
        a = asyncio.create_task(waits.wait("k", factory))
        b = asyncio.create_task(waits.wait("k", factory))
        c = asyncio.create_task(waits.wait("k", factory))
        await asyncio.sleep(0.02)
        c.cancel()  # a waiter going away must not cancel the reaping
        results = await asyncio.gather(a, b)
        late = await waits.wait("k", factory)  # after the exit: the cached status
        return [*results, late]

    results = aio(scenario())
    _reaped(proc, results[0])
    assert [r.exit_code for r in results] == [5, 5, 5]


def test_helpers_on_a_live_process() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert procwait.process_group(proc.pid) == proc.pid
        assert procwait.parent_pid(proc.pid) == os.getpid()
        assert procwait.pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not procwait.pid_alive(proc.pid)
