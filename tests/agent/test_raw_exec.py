"""The raw_exec driver: host processes in their own session and process group."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from shoal.agent import procwait
from shoal.agent.drivers.base import DriverError, TaskHandle
from shoal.agent.drivers.raw_exec import RawExecDriver, session_members


async def _wait_for_file(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text()):
            return content
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_fingerprint_and_config(raw_exec_driver: RawExecDriver, make_spec, aio) -> None:
    assert raw_exec_driver.fingerprint() == {"driver.raw_exec": "1"}
    with pytest.raises(DriverError, match="config.command is required"):
        aio(raw_exec_driver.start(make_spec({"args": ["x"]})))
    with pytest.raises(DriverError, match="command 'no-such-program-xyz' not found"):
        aio(raw_exec_driver.start(make_spec({"command": "no-such-program-xyz"})))
    with pytest.raises(DriverError, match="user 'no-such-user-xyz' does not exist"):
        aio(raw_exec_driver.start(make_spec({"command": "true"}, user="no-such-user-xyz")))


def test_output_cwd_env_and_exit_code(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"command": "sh", "args": ["-c", 'echo "$PWD $GREETING"; env | sort; echo err >&2; exit 3']},
                     env={"GREETING": "hello"})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        return handle, await raw_exec_driver.wait(handle)

    handle, result = aio(scenario())
    assert result.exit_code == 3 and result.signal == 0 and not result.successful()
    lines = spec.stdout_path.read_text().splitlines()
    assert lines[0] == f"{spec.task_dir} hello"
    env_names = {line.split("=", 1)[0] for line in lines[1:]}
    assert {"PATH", "GREETING"} <= env_names and "HOME" not in env_names  # a minimal environment
    assert spec.stderr_path.read_text() == "err\n"
    assert handle.id == str(handle.pid) and handle.state["pgid"] == handle.pid


def test_own_session_and_process_group(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"command": "sleep", "args": ["30"]})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        assert procwait.process_group(handle.pid) == handle.pid
        assert os.getsid(handle.pid) == handle.pid
        await raw_exec_driver.stop(handle, "SIGTERM", 5)
        return await raw_exec_driver.wait(handle)

    result = aio(scenario())
    assert result.signal == 15 and result.exit_code == 143


def test_stop_escalates_to_sigkill_for_the_whole_group(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    # The shell and its sleep children ignore TERM (an ignored disposition is inherited).
    spec = make_spec({"command": "sh", "args": ["-c", "trap '' TERM; sleep 30 & echo ready; while true; do sleep 0.01; done"]})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        await _wait_for_file(spec.stdout_path, "ready")
        members = session_members(handle.pid)
        assert len(members) >= 2
        t0 = time.monotonic()
        await raw_exec_driver.stop(handle, "SIGTERM", 0.5)
        elapsed = time.monotonic() - t0
        return handle, members, elapsed, await raw_exec_driver.wait(handle)

    handle, members, elapsed, result = aio(scenario())
    assert 0.5 <= elapsed < 5
    assert result.signal == 9
    assert session_members(handle.pid) == []
    for pid in members:
        assert not procwait.pid_alive(pid)  # neither running nor a zombie left for us to reap


def test_destroy_kills_what_the_leader_left_behind(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"command": "sh", "args": ["-c", "sleep 30 & echo $!; exit 0"]})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        result = await raw_exec_driver.wait(handle)
        orphan = int((await _wait_for_file(spec.stdout_path, "\n")).split()[0])
        assert procwait.pid_alive(orphan)
        assert procwait.parent_pid(orphan) == os.getpid()  # reparented to us, the subreaper
        await raw_exec_driver.destroy(handle)
        await raw_exec_driver.destroy(handle)  # idempotent
        return handle, result, orphan

    handle, result, orphan = aio(scenario())
    assert result.exit_code == 0
    assert not procwait.pid_alive(orphan)
    assert not os.path.exists(f"/proc/{orphan}") or procwait.parent_pid(orphan) != os.getpid()  # reaped


def test_recover(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"command": "sleep", "args": ["30"]})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        fresh = RawExecDriver()
        saved = TaskHandle(driver=handle.driver, id=handle.id, pid=handle.pid, started_at=handle.started_at,
                           state=dict(handle.state))
        assert await fresh.recover(saved)
        reused = TaskHandle(driver=handle.driver, id=handle.id, pid=handle.pid, started_at=handle.started_at,
                            state={**handle.state, "pid_start_time": handle.state["pid_start_time"] - 1})
        assert not await fresh.recover(reused)  # same pid, another process: not ours
        await fresh.stop(saved, "SIGKILL", 1)
        first = await raw_exec_driver.wait(handle)
        assert not await fresh.recover(saved)
        return first

    assert aio(scenario()).signal == 9


def test_graceful_stop_and_wait_after_destroy(raw_exec_driver: RawExecDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"command": "sh", "args": ["-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"]})

    async def scenario():
        handle = tracker.add(raw_exec_driver, await raw_exec_driver.start(spec))
        await _wait_for_file(spec.stdout_path, "ready")
        await raw_exec_driver.stop(handle, "TERM", 10)
        await raw_exec_driver.destroy(handle)
        return await raw_exec_driver.wait(handle)  # still answers after destroy

    result = aio(scenario())
    assert result.exit_code == 0 and result.successful()
