"""The OCI runtime spec built in Python: argv rules, env, users, resources, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.agent import ocispec
from shoal.agent.drivers.base import DriverError
from shoal.agent.imagetypes import ImageConfig
from shoal.jobs.model import Resources

IMAGE = ImageConfig(entrypoint=("/entry",), cmd=("default", "cmd"), env=("PATH=/img/bin", "A=image"),
                    working_dir="/srv", user="app")
NO_ENTRY = ImageConfig(cmd=("/bin/sh",))


@pytest.mark.parametrize(
    "config, image, argv",
    [
        ({}, IMAGE, ["/entry", "default", "cmd"]),
        ({"command": "run"}, IMAGE, ["/entry", "run"]),
        ({"command": "run", "args": ["-v", 3]}, IMAGE, ["/entry", "run", "-v", "3"]),
        ({"args": ["only", "args"]}, IMAGE, ["/entry", "only", "args"]),
        ({"entrypoint": ["/other"]}, IMAGE, ["/other"]),  # docker run --entrypoint drops the image's Cmd
        ({"entrypoint": "/other", "command": "x"}, IMAGE, ["/other", "x"]),
        ({"entrypoint": []}, IMAGE, None),
        ({"entrypoint": [], "command": "/bin/echo", "args": ["hi"]}, IMAGE, ["/bin/echo", "hi"]),
        ({}, NO_ENTRY, ["/bin/sh"]),
        ({"command": "/bin/echo", "args": ["a b"]}, NO_ENTRY, ["/bin/echo", "a b"]),
        ({}, ImageConfig(), None),
    ],
)
def test_process_args_follow_docker(config: dict, image: ImageConfig, argv: list[str] | None) -> None:
    if argv is None:
        with pytest.raises(DriverError, match="nothing to run"):
            ocispec.process_args(config, image)
    else:
        assert ocispec.process_args(config, image) == argv


def test_bad_config_types() -> None:
    with pytest.raises(DriverError, match="config.command must be a string"):
        ocispec.process_args({"command": ["a", "b"]}, IMAGE)
    with pytest.raises(DriverError, match="config.args"):
        ocispec.process_args({"args": {"a": 1}}, IMAGE)


def test_env_merge() -> None:
    env = ocispec.merge_env(IMAGE.env, {"A": "task", "B": "2"}, {"HOSTNAME": "web", "A": "extra"})
    assert env == ["PATH=/img/bin", "A=task", "HOSTNAME=web", "B=2"]
    assert ocispec.merge_env([], {})[0].startswith("PATH=/usr/local/sbin:")


@pytest.fixture
def etc_rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nwheel:x:10:app,root\ndocker:x:999:app\n")
    return tmp_path


def test_users(etc_rootfs: Path, tmp_path: Path) -> None:
    assert ocispec.resolve_user("", etc_rootfs) == ocispec.ProcessUser(0, 0, (10,), "/root")
    assert ocispec.resolve_user("app", etc_rootfs) == ocispec.ProcessUser(1000, 1001, (10, 999), "/home/app")
    assert ocispec.resolve_user("app:wheel", etc_rootfs).gid == 10
    assert ocispec.resolve_user("1000:50", etc_rootfs).gid == 50
    assert ocispec.resolve_user("4242", etc_rootfs) == ocispec.ProcessUser(4242, 4242, (), "/")
    with pytest.raises(DriverError, match="user 'ghost' not found in the image's /etc/passwd"):
        ocispec.resolve_user("ghost", etc_rootfs)
    with pytest.raises(DriverError, match="group 'ghosts' not found"):
        ocispec.resolve_user("app:ghosts", etc_rootfs)
    # An /etc/passwd that is a symlink (maybe to the host's) is not followed.
    other = tmp_path / "other"
    (other / "etc").mkdir(parents=True)
    (other / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(DriverError, match="not found"):
        ocispec.resolve_user("root", other)


def test_resources_mapping() -> None:
    r = ocispec.linux_resources(Resources(cpu=500, memory=256), 100)
    assert r["memory"] == {"limit": 256 << 20, "swap": 256 << 20}
    assert r["cpu"] == {"shares": 500}
    assert r["pids"] == {"limit": 100}
    over = ocispec.linux_resources(Resources(cpu=1, memory=128, memory_max=512), swap_limit=False)
    assert over["memory"] == {"limit": 512 << 20, "reservation": 128 << 20}
    assert over["cpu"] == {"shares": 2}  # the kernel's minimum
    assert over["pids"] == {"limit": ocispec.DEFAULT_PIDS_LIMIT}
    assert "memory" not in ocispec.linux_resources(Resources(memory=0))
    assert "pids" not in ocispec.linux_resources(Resources(), 0)


def test_full_spec(tmp_path: Path) -> None:
    spec = ocispec.build_spec(
        container_id="shoal-a-web", hostname="web_1.x", rootfs=tmp_path, argv=["/bin/sh"], env=["PATH=/bin"],
        cwd="/srv", user=ocispec.ProcessUser(1000, 1000, (10,)), resources=Resources(cpu=100, memory=32),
        readonly_rootfs=True,
    )
    proc = spec["process"]
    assert proc["terminal"] is False and proc["noNewPrivileges"] is True
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert proc["cwd"] == "/srv" and proc["args"] == ["/bin/sh"]
    assert set(proc["capabilities"]["bounding"]) == set(ocispec.DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["effective"]
    assert spec["root"] == {"path": str(tmp_path), "readonly": True}
    assert spec["hostname"] == "web-1-x"
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/shoal/shoal-a-web"
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    assert all("path" not in n for n in linux["namespaces"])  # a fresh network namespace
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert "ro" in spec["mounts"][-1]["options"]
    with pytest.raises(DriverError, match="absolute"):
        ocispec.build_spec(container_id="x", hostname="x", rootfs=tmp_path, argv=["a"], env=[], cwd="rel",
                           user=ocispec.ProcessUser(0, 0), resources=Resources())
