"""Build the OCI runtime spec (a bundle's config.json) for one task.

Defaults follow Docker's: its capability set, masked and read-only paths, the
standard /proc, /dev, /sys and cgroup mounts, no new privileges. Resources
follow Nomad's mapping: memory MB -> memory limit (memory_max, when larger, is
the hard limit and memory the reservation), cpu MHz -> cpu shares 1:1 (min 2).
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agent import names
from shoal.agent.drivers.base import HOST_NETNS, DriverError
from shoal.agent.imagetypes import DEFAULT_PATH_ENV, ImageConfig
from shoal.jobs.model import Resources

OCI_VERSION = "1.0.2-dev"
DEFAULT_PIDS_LIMIT = 4096
CPU_PERIOD_US = 100_000
MB = 1024 * 1024

# Docker's default capability set (moby/oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Docker's masked and read-only paths (moby/oci/defaults.go).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

DEFAULT_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
)


@dataclass(slots=True, frozen=True)
class ProcessUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise DriverError(f"config.{key} must be a string or a list of strings, not {type(value).__name__}")


def process_args(config: Mapping[str, Any], image: ImageConfig) -> list[str]:
    """argv for the task, with Docker's rules over the image's Entrypoint and Cmd.

    ``entrypoint`` replaces the image's Entrypoint (and then the image's Cmd is
    dropped, as with ``docker run --entrypoint``); ``command`` plus ``args``
    replace the Cmd; ``args`` alone replace the Cmd too (Nomad's docker driver).
    """
    has_entrypoint = config.get("entrypoint") is not None
    entrypoint = _as_list(config.get("entrypoint"), "entrypoint") if has_entrypoint else list(image.entrypoint)
    command = config.get("command")
    if command is not None and not isinstance(command, str):
        raise DriverError("config.command must be a string (put further arguments in config.args)")
    args = _as_list(config.get("args"), "args")
    if command:
        cmd = [command, *args]
    elif args:
        cmd = args
    elif has_entrypoint:
        cmd = []
    else:
        cmd = list(image.cmd)
    argv = entrypoint + cmd
    if not argv:
        raise DriverError(
            "nothing to run: the image has no Entrypoint or Cmd; set config.command (and config.args)"
        )
    return argv


def merge_env(image_env: Sequence[str], task_env: Mapping[str, str], extra: Mapping[str, str] | None = None) -> list[str]:
    """Image Env, then ``extra`` defaults that the image lacks, then the task's env (which wins)."""
    merged: dict[str, str] = {}
    for item in image_env:
        key, sep, value = item.partition("=")
        if sep:
            merged[key] = value
    if "PATH" not in merged:
        merged["PATH"] = DEFAULT_PATH_ENV.partition("=")[2]
    for key, value in (extra or {}).items():
        merged.setdefault(key, value)
    for key, value in task_env.items():
        merged[str(key)] = str(value)
    return [f"{k}={v}" for k, v in merged.items()]


def _read_rootfs_file(rootfs: Path, rel: str) -> list[list[str]]:
    """Colon-separated records of a file in the container's rootfs (no symlinks followed)."""
    path = rootfs / rel
    try:
        if stat.S_ISLNK(os.lstat(path.parent).st_mode):
            return []
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        text = f.read(4 << 20).decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(user: str, rootfs: Path) -> ProcessUser:
    """``user``, ``uid``, ``user:group`` or ``uid:gid``, resolved against the rootfs's /etc/passwd and /etc/group."""
    user = user.strip()
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _read_rootfs_file(rootfs, "etc/passwd")
    entry: list[str] | None = None
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if len(e) >= 7 and e[2] == name), None)
        gid = int(entry[3]) if entry and entry[3].isdigit() else (0 if uid == 0 else uid)
    else:
        entry = next((e for e in passwd if len(e) >= 7 and e[0] == name), None)
        if entry is None or not entry[2].isdigit() or not entry[3].isdigit():
            raise DriverError(
                f"user {name!r} not found in the image's /etc/passwd; use a numeric uid[:gid] or add the user"
            )
        uid, gid = int(entry[2]), int(entry[3])
    groups = _read_rootfs_file(rootfs, "etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if len(e) >= 3 and e[0] == group), None)
            if g is None or not g[2].isdigit():
                raise DriverError(f"group {group!r} not found in the image's /etc/group; use a numeric gid")
            gid = int(g[2])
    extra: list[int] = []
    if entry is not None:
        for g in groups:
            if len(g) >= 4 and g[2].isdigit() and entry[0] in g[3].split(","):
                gid_extra = int(g[2])
                if gid_extra != gid and gid_extra not in extra:
                    extra.append(gid_extra)
    home = entry[5] if entry is not None and entry[5] else "/"
    return ProcessUser(uid, gid, tuple(extra), home)


def cpu_quota(cpu_mhz: int, mhz_per_core: int, period: int = CPU_PERIOD_US) -> int:
    """CFS quota (µs per ``period``) that caps a task at ``cpu_mhz`` on cores of ``mhz_per_core`` (min 1 ms)."""
    return max(1000, int(period * cpu_mhz / max(1, mhz_per_core)))


def linux_resources(
    resources: Resources,
    pids_limit: int = DEFAULT_PIDS_LIMIT,
    *,
    swap_limit: bool = True,
    cpu_hard_limit_mhz_per_core: int = 0,
) -> dict[str, Any]:
    """``linux.resources`` for Nomad-style resources.

    cpu: shares = MHz (a relative weight; runc maps it to ``cpu.weight`` on cgroup v2);
    with a hard limit (``cpu_hard_limit_mhz_per_core`` > 0) also a CFS quota
    (``cpu.cfs_quota_us`` on v1, ``cpu.max`` on v2).
    """
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if resources.memory > 0:
        hard_mb = max(resources.memory_max, resources.memory)
        memory: dict[str, Any] = {"limit": hard_mb * MB}
        if resources.memory_max > resources.memory:
            memory["reservation"] = resources.memory * MB
        if swap_limit:
            memory["swap"] = hard_mb * MB  # memory+swap = memory: no swapping past the limit
        out["memory"] = memory
    if resources.cpu > 0:
        out["cpu"] = {"shares": min(max(resources.cpu, 2), 262144)}
        if cpu_hard_limit_mhz_per_core > 0:
            out["cpu"]["quota"] = cpu_quota(resources.cpu, cpu_hard_limit_mhz_per_core)
            out["cpu"]["period"] = CPU_PERIOD_US
    if pids_limit > 0:
        out["pids"] = {"limit": pids_limit}
    return out


def build_spec(
    *,
    container_id: str,
    hostname: str,
    rootfs: Path,
    argv: Sequence[str],
    env: Sequence[str],
    cwd: str,
    user: ProcessUser,
    resources: Resources,
    readonly_rootfs: bool = False,
    pids_limit: int = DEFAULT_PIDS_LIMIT,
    swap_limit: bool = True,
    mounts: Sequence[dict[str, Any]] = (),
    cap_drop: Sequence[str] = (),
    cpu_hard_limit_mhz_per_core: int = 0,
    netns: str = "",
) -> dict[str, Any]:
    """The complete config.json for one container. ``mounts`` come after the defaults."""
    drop = {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper() for c in cap_drop}
    caps = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    if not cwd.startswith("/"):
        raise DriverError(f"work_dir {cwd!r} must be an absolute path")
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid,
                     **({"additionalGids": list(user.additional_gids)} if user.additional_gids else {})},
            "args": list(argv),
            "env": list(env),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [nofile_rlimit()],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": bool(readonly_rootfs)},
        "hostname": hostname_of(hostname),
        "mounts": [dict(m, options=list(m["options"])) for m in DEFAULT_MOUNTS] + [dict(m) for m in mounts],
        "linux": {
            "cgroupsPath": names.cgroup_path(container_id),
            "resources": linux_resources(resources, pids_limit, swap_limit=swap_limit,
                                         cpu_hard_limit_mhz_per_core=cpu_hard_limit_mhz_per_core),
            "namespaces": namespaces(netns),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def namespaces(netns: str) -> list[dict[str, str]]:
    """The container's namespaces: a network one of its own (""), the host's (HOST_NETNS), or the one at a path."""
    out = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns == "":
        out.append({"type": "network"})
    elif netns != HOST_NETNS:
        out.append({"type": "network", "path": netns})
    return out


def bind_mount(source: str | Path, destination: str, *, readonly: bool = False) -> dict[str, Any]:
    """An OCI bind mount (recursive, nosuid, nodev)."""
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"]}


def nofile_rlimit() -> dict[str, Any]:
    """RLIMIT_NOFILE for the container: the agent's own hard limit (raising it needs CAP_SYS_RESOURCE)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1048576:
        hard = 1048576
    return {"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard}


def hostname_of(name: str) -> str:
    """A valid hostname from a task name (letters, digits and '-', at most 63 characters)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name).strip("-")
    return (cleaned or "task")[:63]
