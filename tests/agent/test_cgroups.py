"""cgroup layout detection and OOM state, on fake hierarchies (no root needed)."""

from __future__ import annotations

from pathlib import Path

from shoal.agent import cgroups

HYBRID = """\
25 1 0:22 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/pids rw,relatime shared:12 - cgroup cgroup rw,pids
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/systemd rw,relatime shared:14 - cgroup cgroup rw,xattr,name=systemd
31 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw
"""


def test_hybrid_host_is_v1() -> None:
    layout = cgroups.parse_mountinfo(HYBRID)
    assert layout.version == 1
    assert layout.v1_mounts["memory"] == Path("/sys/fs/cgroup/memory")
    assert layout.v1_mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1_mounts["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    dirs = cgroups.cgroup_dirs("/shoal/c1", layout)
    assert Path("/sys/fs/cgroup/memory/shoal/c1") in dirs
    assert len(dirs) == len(set(dirs))


def test_unified_host_is_v2_only_with_controllers(tmp_path: Path) -> None:
    text = f"30 1 0:27 / {tmp_path} rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    (tmp_path / "cgroup.controllers").write_text("")
    assert cgroups.parse_mountinfo(text, tmp_path).version == 1  # cgroup2 without controllers
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    layout = cgroups.parse_mountinfo(text, tmp_path)
    assert layout.version == 2 and layout.v2_root == tmp_path
    assert cgroups.cgroup_dirs("/shoal/c1", layout) == [tmp_path / "shoal" / "c1"]


def test_this_host_is_detected() -> None:
    layout = cgroups.detect()
    assert layout.version in (1, 2)
    assert cgroups.cgroup_version() == layout.version
    if layout.version == 1:
        assert "memory" in layout.v1_mounts


def _v1(tmp_path: Path) -> cgroups.CgroupLayout:
    return cgroups.CgroupLayout(version=1, v1_mounts={"memory": tmp_path / "memory", "pids": tmp_path / "pids",
                                                      "cpu": tmp_path / "cpu"})


def test_v1_oom_from_oom_control(tmp_path: Path) -> None:
    layout = _v1(tmp_path)
    mem = tmp_path / "memory" / "shoal" / "c1"
    assert not cgroups.cgroup_exists("/shoal/c1", layout)
    assert cgroups.read_oom("/shoal/c1", layout).killed is False
    mem.mkdir(parents=True)
    assert cgroups.cgroup_exists("/shoal/c1", layout)
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert cgroups.read_oom("/shoal/c1", layout) == cgroups.OomState(False, 0, "memory.oom_control")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroups.read_oom("/shoal/c1", layout).kills == 2


def test_v1_oom_fallback_for_old_kernels(tmp_path: Path) -> None:
    layout = _v1(tmp_path)
    mem = tmp_path / "memory" / "shoal" / "c1"
    mem.mkdir(parents=True)
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (mem / "memory.failcnt").write_text("0\n")
    (mem / "memory.limit_in_bytes").write_text(str(16 << 20))
    (mem / "memory.max_usage_in_bytes").write_text(str(3 << 20))
    assert not cgroups.read_oom("/shoal/c1", layout).killed
    (mem / "memory.failcnt").write_text("17\n")
    (mem / "memory.max_usage_in_bytes").write_text(str(16 << 20))
    assert cgroups.read_oom("/shoal/c1", layout).killed


def test_v2_oom_from_memory_events(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(version=2, v2_root=tmp_path)
    d = tmp_path / "shoal" / "c1"
    d.mkdir(parents=True)
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cgroups.read_oom("/shoal/c1", layout) == cgroups.OomState(True, 1, "memory.events")
    (d / "memory.max").write_text("16777216\n")
    (d / "pids.max").write_text("max\n")
    (d / "cpu.weight").write_text("4\n")
    limits = cgroups.read_limits("/shoal/c1", layout)
    assert limits.memory_limit == 16 << 20 and limits.pids_max is None and limits.cpu_weight == 4


def test_remove_cgroup_removes_empty_dirs(tmp_path: Path) -> None:
    # rmdir on a real cgroupfs removes a group with only control files; on a plain fs we
    # model an empty group by an empty directory (with a nested child group).
    layout = _v1(tmp_path)
    for controller in ("memory", "pids", "cpu"):
        (tmp_path / controller / "shoal" / "c1" / "child").mkdir(parents=True)
    assert cgroups.remove_cgroup("/shoal/c1", layout) == []
    assert not cgroups.cgroup_exists("/shoal/c1", layout)
    assert (tmp_path / "memory" / "shoal").is_dir()  # the shared parent stays
