"""Fingerprint the host: CPU, memory, disk, kernel, OS, arch, and what the drivers report."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from pathlib import Path

from shoal import __version__
from shoal.agent import cgroups
from shoal.jobs.structs import NodeResources


def cpu_info() -> tuple[int, int]:
    """(cores, MHz per core). Falls back to 1000 MHz when /proc/cpuinfo has no clock."""
    cores = os.cpu_count() or 1
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                mhz = max(mhz, float(line.split(":", 1)[1]))
    except (OSError, ValueError):
        pass
    return cores, int(mhz) or 1000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k] = v.strip('"')
    except OSError:
        pass
    return out


def fingerprint(data_dir: Path, driver_attrs: dict[str, str]) -> tuple[NodeResources, dict[str, str]]:
    """(total resources, attributes). What is reserved for the host is the agent's configuration; it goes in
    ``Node.reserved`` and the scheduler subtracts it."""
    cores, mhz = cpu_info()
    mem = memory_mb()
    usage = shutil.disk_usage(data_dir)
    disk_free = usage.free // (1024 * 1024)
    rel = os_release()
    uname = platform.uname()
    attrs = {
        "kernel.name": uname.system.lower(),
        "kernel.version": uname.release,
        "os.name": rel.get("ID", ""),
        "os.version": rel.get("VERSION_ID", ""),
        "cpu.arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
        "cpu.numcores": str(cores),
        "cpu.frequency": str(mhz),
        "cpu.totalcompute": str(cores * mhz),
        "memory.totalbytes": str(mem * 1024 * 1024),
        "unique.hostname": socket.gethostname(),
        "unique.storage.bytesfree": str(disk_free * 1024 * 1024),
        "unique.storage.bytestotal": str(usage.total),
        "unique.storage.volume": str(data_dir),
        "kernel.arch": uname.machine,
        "cpu.modelname": cpu_model(),
        "cgroup.version": str(cgroups.cgroup_version()),
        "driver.runc": "1" if shutil.which("runc") else "0",
        "shoal.version": __version__,
        **driver_attrs,
    }
    return NodeResources(cpu=cores * mhz, memory=mem, disk=disk_free, cores=cores), attrs
