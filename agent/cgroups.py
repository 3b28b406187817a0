"""cgroup v1/v2 detection, OOM-kill state and clean-up for a container's cgroup.

runc creates the cgroup from the spec's ``linux.cgroupsPath`` (``/shoal/<id>``):
on v1 that is a directory in each mounted hierarchy
(``/sys/fs/cgroup/memory/shoal/<id>``, ...), on v2 one directory in the unified
tree (``/sys/fs/cgroup/shoal/<id>``).

The host is v2 only when /sys/fs/cgroup itself is a cgroup2 mount with
controllers; a hybrid host (v1 hierarchies plus an empty cgroup2 at
/sys/fs/cgroup/unified) is v1 for resource control.

OOM state must be read before ``runc delete`` removes the cgroup.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")

# Controllers runc knows on v1 (a named hierarchy such as name=systemd is kept under its name).
V1_CONTROLLERS = frozenset(
    {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
     "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"}
)


@dataclass(slots=True, frozen=True)
class CgroupLayout:
    version: int  # 1 or 2
    v1_mounts: dict[str, Path] = field(default_factory=dict)  # controller (or name=X) -> mount point
    v2_root: Path | None = None  # the unified mount used for resource control (v2 only)


@dataclass(slots=True, frozen=True)
class OomState:
    killed: bool
    kills: int = 0
    detail: str = ""  # how it was determined, for messages and debugging


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in path:
        return path
    out: list[str] = []
    i = 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str, root: Path = CGROUP_ROOT) -> CgroupLayout:
    """Work out the cgroup layout from the text of /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    root_fstype = ""
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        pre_fields = pre.split()
        post_fields = post.split()
        if len(pre_fields) < 5 or len(post_fields) < 3:
            continue
        mountpoint = Path(_unescape(pre_fields[4]))
        fstype, super_opts = post_fields[0], post_fields[2]
        if mountpoint == root:
            root_fstype = fstype  # the last mount on a path wins, as in the kernel
        if fstype == "cgroup":
            for opt in super_opts.split(","):
                if opt in V1_CONTROLLERS or opt.startswith("name="):
                    v1[opt] = mountpoint
    if root_fstype == "cgroup2":
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        if controllers:
            return CgroupLayout(version=2, v2_root=root)
    return CgroupLayout(version=1, v1_mounts=v1)


@lru_cache(maxsize=1)
def detect() -> CgroupLayout:
    """The host's cgroup layout (cached: it does not change while the agent runs)."""
    try:
        text = MOUNTINFO.read_text()
    except OSError:
        text = ""
    return parse_mountinfo(text)


def cgroup_version() -> int:
    return detect().version


def _rel(cgroups_path: str) -> str:
    rel = cgroups_path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise ValueError(f"invalid cgroups path {cgroups_path!r}")
    return rel


def cgroup_dirs(cgroups_path: str, layout: CgroupLayout | None = None) -> list[Path]:
    """Every directory a cgroups path maps to (one per v1 hierarchy, or one on v2)."""
    layout = layout or detect()
    rel = _rel(cgroups_path)
    if layout.version == 2:
        assert layout.v2_root is not None
        return [layout.v2_root / rel]
    seen: set[Path] = set()
    dirs: list[Path] = []
    for mount in layout.v1_mounts.values():
        if mount not in seen:  # co-mounted controllers (cpu,cpuacct) share one directory
            seen.add(mount)
            dirs.append(mount / rel)
    return dirs


def controller_dir(cgroups_path: str, controller: str, layout: CgroupLayout | None = None) -> Path | None:
    """The directory holding ``controller``'s files for this cgroup, or None if not mounted."""
    layout = layout or detect()
    rel = _rel(cgroups_path)
    if layout.version == 2:
        assert layout.v2_root is not None
        return layout.v2_root / rel
    mount = layout.v1_mounts.get(controller)
    return None if mount is None else mount / rel


def cgroup_exists(cgroups_path: str, layout: CgroupLayout | None = None) -> bool:
    """True if any directory of this cgroup still exists."""
    return any(d.is_dir() for d in cgroup_dirs(cgroups_path, layout))


def swap_limit_supported(layout: CgroupLayout | None = None) -> bool:
    """Whether a memory+swap limit can be set (v1 memsw accounting, v2 memory.swap.max)."""
    layout = layout or detect()
    if layout.version == 2:
        assert layout.v2_root is not None
        # Only children have memory.swap.max; the root's controllers tell us it is available.
        try:
            return "memory" in (layout.v2_root / "cgroup.controllers").read_text().split()
        except OSError:
            return False
    mount = layout.v1_mounts.get("memory")
    return mount is not None and (mount / "memory.memsw.limit_in_bytes").exists()


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def _read_int(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if raw == "max":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def read_oom(cgroups_path: str, layout: CgroupLayout | None = None) -> OomState:
    """Whether the kernel OOM-killed a process in this cgroup. Call before ``runc delete``."""
    layout = layout or detect()
    mem = controller_dir(cgroups_path, "memory", layout)
    if mem is None or not mem.is_dir():
        return OomState(False, detail="memory cgroup not found (already deleted?)")
    if layout.version == 2:
        try:
            events = _read_kv(mem / "memory.events")
        except OSError as exc:
            return OomState(False, detail=f"memory.events unreadable: {exc}")
        kills = events.get("oom_kill", 0) + events.get("oom_group_kill", 0)
        return OomState(kills > 0, kills, "memory.events")
    try:
        control = _read_kv(mem / "memory.oom_control")
    except OSError:
        control = {}
    if "oom_kill" in control:
        kills = control["oom_kill"]
        return OomState(kills > 0, kills, "memory.oom_control")
    # Kernels before 4.13 have no oom_kill counter: the limit was hit and usage peaked at it.
    failcnt = _read_int(mem / "memory.failcnt") or 0
    limit = _read_int(mem / "memory.limit_in_bytes")
    peak = _read_int(mem / "memory.max_usage_in_bytes") or 0
    if failcnt > 0 and limit is not None and peak >= limit - 4096 * 16:
        return OomState(True, 0, f"memory.failcnt={failcnt}, max usage {peak} reached limit {limit}")
    return OomState(False, 0, "memory.failcnt")


@dataclass(slots=True, frozen=True)
class CgroupLimits:
    memory_limit: int | None  # bytes; None = unlimited
    memory_reservation: int | None
    cpu_shares: int | None  # v1 cpu.shares
    cpu_weight: int | None  # v2 cpu.weight (runc converts shares to a weight)
    pids_max: int | None


_V1_UNLIMITED = 1 << 62


def read_limits(cgroups_path: str, layout: CgroupLayout | None = None) -> CgroupLimits:
    """The resource limits applied to a cgroup (for diagnostics and tests)."""
    layout = layout or detect()
    mem = controller_dir(cgroups_path, "memory", layout)
    cpu = controller_dir(cgroups_path, "cpu", layout)
    pids = controller_dir(cgroups_path, "pids", layout)

    def unlimited(v: int | None) -> int | None:
        return None if v is None or v >= _V1_UNLIMITED else v

    if layout.version == 2:
        return CgroupLimits(
            memory_limit=_read_int(mem / "memory.max") if mem else None,
            memory_reservation=unlimited(_read_int(mem / "memory.low")) if mem else None,
            cpu_shares=None,
            cpu_weight=_read_int(cpu / "cpu.weight") if cpu else None,
            pids_max=_read_int(pids / "pids.max") if pids else None,
        )
    return CgroupLimits(
        memory_limit=unlimited(_read_int(mem / "memory.limit_in_bytes")) if mem else None,
        memory_reservation=unlimited(_read_int(mem / "memory.soft_limit_in_bytes")) if mem else None,
        cpu_shares=_read_int(cpu / "cpu.shares") if cpu else None,
        cpu_weight=None,
        pids_max=_read_int(pids / "pids.max") if pids else None,
    )


def _procs(directory: Path) -> list[int]:
    pids: list[int] = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        if "cgroup.procs" in filenames:
            try:
                pids.extend(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
            except OSError:
                continue
    return pids


def remove_cgroup(cgroups_path: str, layout: CgroupLayout | None = None, timeout: float = 2.0) -> list[Path]:
    """Kill what is left in a task's cgroup and remove its directories (bottom-up).

    Used by ``destroy`` when runc no longer knows the container but its cgroup
    survived (e.g. an agent crash between start and delete). Only processes inside
    this task's own cgroup are signalled. Returns the directories that could not be
    removed (empty on success).
    """
    dirs = [d for d in cgroup_dirs(cgroups_path, layout) if d.is_dir()]
    if not dirs:
        return []
    for d in dirs:
        for pid in _procs(d):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    remaining: list[Path] = []
    for d in dirs:
        while True:
            try:
                for dirpath, _dirs, _files in os.walk(d, topdown=False):
                    os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    remaining.append(d)
                    break
                time.sleep(0.01)
    return remaining
