"""The container driver against the host's runc, overlayfs and cgroups (root only)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from shoal.agent import cgroups
from shoal.agent.drivers.base import DriverError, TaskHandle
from shoal.agent.drivers.container import ContainerDriver
from shoal.agent.drivers.registry import build_drivers
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore
from shoal.agent.names import container_id
from shoal.jobs.model import Resources

pytestmark = pytest.mark.root


def _runc_ids() -> list[str]:
    return subprocess.run(["runc", "list", "-q"], capture_output=True, text=True, check=True).stdout.split()


async def _wait_for_file(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text()):
            return content
        await asyncio.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_fingerprint_and_registry(container_driver: ContainerDriver, shared_store: ImageStore) -> None:
    fp = container_driver.fingerprint()
    assert fp is not None
    assert fp["driver.container"] == "1" and fp["driver.container.runtime"] == "runc"
    assert fp["driver.container.runc.version"].startswith("1.")
    assert fp["cgroup.version"] == str(cgroups.cgroup_version())
    drivers = build_drivers(ImageManager(shared_store), raw_exec_enabled=False)
    assert drivers["docker"] is drivers["container"] and "raw_exec" not in drivers
    assert drivers["container"].name == "container"
    assert set(build_drivers(ImageManager(shared_store), raw_exec_enabled=True)) == {"container", "docker", "exec", "raw_exec"}


def test_config_errors(container_driver: ContainerDriver, make_spec, aio) -> None:
    with pytest.raises(DriverError, match="config.image is required"):
        aio(container_driver.start(make_spec({"command": "sh"})))
    with pytest.raises(DriverError, match=r"image nosuch:1 not found in .*shoal image import-rootfs"):
        aio(container_driver.start(make_spec({"image": "nosuch:1"})))
    with pytest.raises(DriverError, match="pids_limit"):
        aio(container_driver.start(make_spec({"image": "busybox", "pids_limit": "many"})))


def test_echo_to_stdout_and_stderr(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"image": "busybox:latest", "command": "/bin/sh",
                      "args": ["-c", "echo hello $GREETING from $(hostname) in $(pwd) as $(id -u); echo oops >&2"],
                      "work_dir": "/tmp"}, env={"GREETING": "world"}, task="echo")

    async def scenario() -> tuple[TaskHandle, object]:
        handle = tracker.add(container_driver, await container_driver.start(spec))
        return handle, await container_driver.wait(handle)

    handle, result = aio(scenario())
    assert result.exit_code == 0 and result.successful()
    assert spec.stdout_path.read_text() == "hello world from echo in /tmp as 0\n"
    assert spec.stderr_path.read_text() == "oops\n"
    assert handle.id == container_id(spec.alloc_id, "echo")
    assert handle.state["cgroups_path"] == f"/shoal/{handle.id}"
    config = json.loads((Path(handle.state["bundle"]) / "config.json").read_text())
    assert config["root"]["path"] == handle.state["rootfs"]
    aio(container_driver.destroy(handle))
    assert_gone(handle.id, spec.task_dir)
    aio(container_driver.destroy(handle))  # idempotent


def test_exit_code_propagates(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sh", "args": ["-c", "exit 3"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        first, second = await asyncio.gather(container_driver.wait(handle), container_driver.wait(handle))
        return first, second, await container_driver.wait(handle)

    results = aio(scenario())
    assert [r.exit_code for r in results] == [3, 3, 3]
    assert not results[0].successful() and not results[0].oom_killed


def test_image_user_env_and_readonly_rootfs(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sh", "readonly_rootfs": True,
                      "args": ["-c", "id; echo HOME=$HOME; touch /x 2>/dev/null && echo writable || echo readonly; "
                                     "echo ok > /tmp/../dev/shm/f && cat /dev/shm/f"]},
                     user="app")

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        return await container_driver.wait(handle)

    result = aio(scenario())
    out = spec.stdout_path.read_text()
    assert result.exit_code == 0, spec.stderr_path.read_text()
    assert "uid=1000(app) gid=1000(app)" in out and "2000(extra)" in out
    assert "HOME=/home/app" in out and "readonly" in out and "writable" not in out and "ok" in out


def test_stop_escalates_to_sigkill(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"image": "busybox", "command": "sh",
                      "args": ["-c", "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        await _wait_for_file(spec.stdout_path, "ready")
        t0 = time.monotonic()
        await container_driver.stop(handle, "SIGTERM", 0.5)
        elapsed = time.monotonic() - t0
        return handle, elapsed, await container_driver.wait(handle)

    handle, elapsed, result = aio(scenario())
    assert 0.5 <= elapsed < 5
    assert "got TERM" in spec.stdout_path.read_text()  # TERM was delivered and trapped
    assert result.signal == 9 and result.exit_code == 137 and not result.oom_killed
    aio(container_driver.destroy(handle))
    assert_gone(handle.id, spec.task_dir)


def test_stop_graceful(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sh",
                      "args": ["-c", "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        await _wait_for_file(spec.stdout_path, "ready")
        t0 = time.monotonic()
        await container_driver.stop(handle, "TERM", 10)
        return time.monotonic() - t0, await container_driver.wait(handle)

    elapsed, result = aio(scenario())
    assert elapsed < 3 and result.exit_code == 0 and result.signal == 0


def test_oom_kill_is_reported(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"image": "busybox", "command": "sh", "args": ["-c", "x=a; while true; do x=$x$x; done"]},
                     resources=Resources(cpu=100, memory=16))

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        return handle, await container_driver.wait(handle)

    handle, result = aio(scenario())
    assert result.oom_killed, result
    assert result.signal == 9 and not result.successful() and "OOM" in result.message
    aio(container_driver.destroy(handle))
    assert_gone(handle.id, spec.task_dir)


def test_limits_visible_in_the_cgroup(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sleep", "args": ["30"], "pids_limit": 77},
                     resources=Resources(cpu=250, memory=48, memory_max=96))

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        limits = cgroups.read_limits(handle.state["cgroups_path"])
        procs_file = cgroups.controller_dir(handle.state["cgroups_path"], "pids") / "cgroup.procs"
        procs = procs_file.read_text().split()
        await container_driver.stop(handle, "SIGKILL", 1)
        return handle, limits, procs

    handle, limits, procs = aio(scenario())
    assert str(handle.pid) in procs
    assert limits.memory_limit == 96 << 20
    assert limits.memory_reservation == 48 << 20
    assert limits.pids_max == 77
    if cgroups.cgroup_version() == 1:
        assert limits.cpu_shares == 250
    else:
        assert limits.cpu_weight is not None and limits.cpu_weight > 1


def test_recover_reattaches(container_driver: ContainerDriver, shared_store: ImageStore, make_spec, tracker, aio,
                            tmp_path: Path, assert_gone) -> None:
    spec = make_spec({"image": "busybox", "command": "sleep", "args": ["30"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        # A new driver (as after an agent restart) re-attaches from the persisted handle alone.
        saved = TaskHandle(**json.loads(json.dumps({"driver": handle.driver, "id": handle.id, "pid": handle.pid,
                                                    "started_at": handle.started_at, "state": handle.state})))
        fresh = ContainerDriver(ImageManager(shared_store), state_dir=tmp_path / "container-state")
        assert await fresh.recover(saved)
        assert [h.id for h in fresh.leftover_handles()] == [handle.id]
        # A handle saved before the task was restarted (an older pid): the container with the task's id is adopted.
        older = TaskHandle(driver=saved.driver, id=saved.id, pid=saved.pid + 1, started_at=saved.started_at,
                           state=dict(saved.state, pid_start_time=1))
        assert await fresh.recover(older) and older.pid == saved.pid
        assert older.state["pid_start_time"] == saved.state["pid_start_time"]
        await fresh.stop(saved, "SIGKILL", 1)
        result = await fresh.wait(saved)
        assert not await fresh.recover(saved)  # stopped: nothing to re-attach to
        await fresh.destroy(saved)
        return handle, result

    handle, result = aio(scenario())
    assert result.signal == 9
    assert_gone(handle.id, spec.task_dir)
    unknown = TaskHandle(driver="container", id="shoal-nope-x", pid=1, started_at=0.0)
    assert not aio(container_driver.recover(unknown))


def test_restart_of_the_same_task_reuses_the_id(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sh",
                      "args": ["-c", "test -e /marker && echo dirty; echo run; touch /marker; sleep 0.3; exit 1"]})

    async def scenario():
        first = tracker.add(container_driver, await container_driver.start(spec))
        r1 = await container_driver.wait(first)
        # No destroy in between: the stopped container and the old rootfs must be replaced.
        second = tracker.add(container_driver, await container_driver.start(spec))
        t0 = time.monotonic()
        r2 = await container_driver.wait(second)
        return first, second, r1, r2, time.monotonic() - t0

    first, second, r1, r2, waited = aio(scenario())
    assert first.id == second.id and first.pid != second.pid
    assert r1.exit_code == r2.exit_code == 1
    assert waited >= 0.25  # the second wait is on the second process, not the first one's cached status
    assert spec.stdout_path.read_text() == "run\nrun\n"  # and it got a fresh rootfs


def test_refuses_to_clobber_a_running_container(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sleep", "args": ["30"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        with pytest.raises(DriverError, match="already running"):
            await container_driver.start(spec)
        state = await container_driver.runc.state(handle.id)
        assert state is not None and state.status == "running"
        await container_driver.stop(handle, "KILL", 1)

    aio(scenario())


def test_bad_command_is_a_clear_error(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"image": "busybox", "command": "/no/such/program"})
    with pytest.raises(DriverError, match="no such file or directory") as err:
        aio(container_driver.start(spec))
    assert "/no/such/program" in str(err.value)
    assert_gone(container_id(spec.alloc_id, spec.task), spec.task_dir)
    assert container_driver.leftover_handles() == []


def test_plain_rootfs_image(container_driver: ContainerDriver, busybox_rootfs: Path, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": str(busybox_rootfs), "command": "sh", "args": ["-c", "echo from-dir > /written; cat /written"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        return await container_driver.wait(handle)

    assert aio(scenario()).exit_code == 0
    assert spec.stdout_path.read_text() == "from-dir\n"
    assert not (busybox_rootfs / "written").exists()  # the directory is only a lower layer


def test_destroy_a_running_container(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"image": "busybox", "command": "sh", "args": ["-c", "sleep 30 & sleep 30"]})

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        await container_driver.destroy(handle)
        return handle, await container_driver.wait(handle)

    handle, result = aio(scenario())
    assert result.signal == 9
    assert_gone(handle.id, spec.task_dir)


def test_parallel_starts(container_driver: ContainerDriver, make_spec, tracker, aio, assert_gone) -> None:
    n = 10
    specs = [make_spec({"image": "busybox", "command": "sleep", "args": ["30"]}, task=f"p{i}") for i in range(n)]

    async def scenario():
        # Sequential first (the benchmark's shape), then all at once.
        seq_t0 = time.monotonic()
        handles = []
        for spec in specs[: n // 2]:
            handles.append(tracker.add(container_driver, await container_driver.start(spec)))
        seq = (time.monotonic() - seq_t0) / (n // 2)
        par_t0 = time.monotonic()
        more = await asyncio.gather(*(container_driver.start(s) for s in specs[n // 2 :]))
        par = time.monotonic() - par_t0
        handles += [tracker.add(container_driver, h) for h in more]
        running = set(_runc_ids())
        assert all(h.id in running for h in handles)
        await asyncio.gather(*(container_driver.stop(h, "SIGKILL", 1) for h in handles))
        await asyncio.gather(*(container_driver.destroy(h) for h in handles))
        return handles, seq, par

    handles, seq, par = aio(scenario())
    print(f"\ncontainer start: {seq * 1000:.1f} ms each sequentially; {n - n // 2} in parallel: {par * 1000:.1f} ms")
    assert seq < 1.0
    for h, spec in zip(handles, specs):
        assert_gone(h.id, spec.task_dir)


def test_crash_cleanup_from_records_and_custom_runc_root(shared_store: ImageStore, make_spec, tracker, aio,
                                                         tmp_path: Path, subreaper, assert_gone) -> None:
    runc_root = tmp_path / "runc-root"
    driver = ContainerDriver(ImageManager(shared_store), runc_root=str(runc_root), state_dir=tmp_path / "records")
    spec = make_spec({"image": "busybox", "command": "sleep", "args": ["30"]})

    async def scenario():
        handle = tracker.add(driver, await driver.start(spec))
        listed = await driver.runc.list()
        assert [(c.id, c.status, c.pid) for c in listed] == [(handle.id, "running", handle.pid)]
        assert handle.id not in _runc_ids()  # it lives under the custom root only
        # The agent crashed and lost its handles: the records are enough to clean up.
        after_crash = ContainerDriver(ImageManager(shared_store), runc_root=str(runc_root), state_dir=tmp_path / "records")
        leftovers = after_crash.leftover_handles()
        assert [h.id for h in leftovers] == [handle.id]
        for h in leftovers:
            await after_crash.destroy(h)
        assert await driver.runc.list() == []
        assert after_crash.leftover_handles() == []
        return handle, await driver.wait(handle)

    handle, result = aio(scenario())
    assert result.signal == 9
    assert_gone(handle.id, spec.task_dir)
