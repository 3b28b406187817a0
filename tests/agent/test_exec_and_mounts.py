"""The exec driver, bind-mounted volumes, task directories and CPU hard limits (root only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.agent import cgroups, ocispec
from shoal.agent.drivers.base import DriverError
from shoal.agent.drivers.container import ContainerDriver
from shoal.agent.drivers.exec import ExecDriver
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore
from shoal.jobs.model import Resources

pytestmark = pytest.mark.root


@pytest.fixture
def exec_driver(tmp_path: Path, subreaper: None) -> ExecDriver:
    return ExecDriver(state_dir=tmp_path / "container-state")


def test_exec_runs_host_programs_isolated(exec_driver: ExecDriver, make_spec, tracker, aio, assert_gone) -> None:
    spec = make_spec({"command": "/bin/sh", "args": ["-c", "echo pid=$$; ls /; touch /usr/x 2>/dev/null || echo ro-usr;"
                                                     " echo data > /local/f; id -u; hostname; cat /etc/shadow 2>&1 | head -c 40"]},
                     task="job1")

    async def scenario():
        handle = tracker.add(exec_driver, await exec_driver.start(spec))
        return handle, await exec_driver.wait(handle)

    handle, result = aio(scenario())
    out = spec.stdout_path.read_text()
    assert result.exit_code == 0, out + spec.stderr_path.read_text()
    assert "pid=1\n" in out  # its own pid namespace
    assert "ro-usr" in out and "\n0\n" in out and "job1" in out
    assert "root:" not in out  # /etc/shadow is not mounted in
    assert (spec.task_dir / "local" / "f").read_text() == "data\n"
    assert (spec.task_dir / "rootfs" / "tmp").is_dir()
    aio(exec_driver.destroy(handle))
    assert_gone(handle.id, spec.task_dir)
    assert exec_driver.fingerprint() == {"driver.exec": "1"}


def test_exec_needs_a_command(exec_driver: ExecDriver, make_spec, aio) -> None:
    with pytest.raises(DriverError, match="config.command is required for exec"):
        aio(exec_driver.start(make_spec({"args": ["x"]})))


def test_volumes_and_task_dirs(shared_store: ImageStore, make_spec, tracker, aio, tmp_path: Path, subreaper) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from-host\n")
    driver = ContainerDriver(ImageManager(shared_store), state_dir=tmp_path / "records", allowed_volumes=[shared])
    spec = make_spec({"image": "busybox", "command": "sh", "volumes": [f"{shared}:/data:ro", "scratch:/scratch"],
                      "args": ["-c", "cat /data/in.txt; echo x > /data/no 2>/dev/null || echo ro; echo s > /scratch/s;"
                                     " echo a > /alloc/a; echo $NOMAD_ALLOC_DIR $NOMAD_TASK_DIR; ls -d /local /secrets"]})

    async def scenario():
        handle = tracker.add(driver, await driver.start(spec))
        return await driver.wait(handle)

    result = aio(scenario())
    out = spec.stdout_path.read_text()
    assert result.exit_code == 0, out + spec.stderr_path.read_text()
    assert out.splitlines() == ["from-host", "ro", "/alloc /local", "/local", "/secrets"]
    assert (spec.task_dir / "scratch" / "s").read_text() == "s\n"
    assert (spec.task_dir.parent / "alloc" / "a").read_text() == "a\n"
    assert not (shared / "no").exists()

    for volumes, message in [
        (["/etc:/etc2"], r"host path /etc is not allowed on this node \(allowed: .*shared\).*--allow-volume"),
        ([f"{shared}/missing:/m"], "does not exist"),
        (["../../../x:/x"], "leaves the allocation's directory"),
        (["a:relative"], "must be absolute"),
        (["a:/b:rx"], "mode must be ro or rw"),
        ("a:/b", "must be a list"),
    ]:
        with pytest.raises(DriverError, match=message):
            aio(driver.start(make_spec({"image": "busybox", "command": "true", "volumes": volumes})))
    assert len(driver.leftover_handles()) == 1  # only the task that ran; refused starts left nothing


def test_cpu_hard_limit_and_cap_drop(container_driver: ContainerDriver, make_spec, tracker, aio) -> None:
    spec = make_spec({"image": "busybox", "command": "sh", "cpu_hard_limit": True, "cap_drop": ["NET_RAW", "chown"],
                      "args": ["-c", "grep CapEff /proc/self/status; sleep 30"]},
                     resources=Resources(cpu=500, memory=32))

    async def scenario():
        handle = tracker.add(container_driver, await container_driver.start(spec))
        config = json.loads((Path(handle.state["bundle"]) / "config.json").read_text())
        cpu_dir = cgroups.controller_dir(handle.state["cgroups_path"], "cpu")
        if cgroups.cgroup_version() == 1:
            quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
        else:
            quota = int((cpu_dir / "cpu.max").read_text().split()[0])
        await container_driver.stop(handle, "SIGKILL", 1)
        return config, quota

    config, quota = aio(scenario())
    mhz = __import__("shoal.agent.fingerprint", fromlist=["cpu_info"]).cpu_info()[1]
    assert quota == ocispec.cpu_quota(500, mhz) == config["linux"]["resources"]["cpu"]["quota"]
    caps = config["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in caps and "CAP_CHOWN" not in caps and "CAP_KILL" in caps
    assert config["process"]["noNewPrivileges"] is True
