"""Finding and removing what a dev cluster made: processes in its namespaces, runc containers, mounts, cgroups.

Everything here is idempotent and never raises for what is already gone: teardown
runs after failures, and a later cluster sweeps what a SIGKILLed one left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shoal.agent.allocstate import load_state
from shoal.agent.names import container_id
from shoal.netoverlay.bridge import remove_leftovers
from shoal.netoverlay.netns import Route
from shoal.devcluster.hosts import NETNS_DIR


# ------------------------------------------------------------------ processes
def _netns_inode(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(ns_path: Path | str) -> list[int]:
    """Every process whose network namespace is the one bound at ``ns_path``."""
    ino = _netns_inode(ns_path)
    if ino is None:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _reap_if_ours(pids: Iterable[int]) -> None:
    """Reap those of ``pids`` that are our own children (orphans reparented to us as a subreaper)."""
    me = os.getpid()
    for pid in pids:
        if _parent_pid(pid) == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def kill_netns_processes(ns_path: Path | str, rounds: int = 100) -> int:
    """SIGKILL every process in a network namespace until none is left (bounded). Returns how many."""
    killed: set[int] = set()
    for _ in range(rounds):
        pids = [p for p in pids_in_netns(ns_path) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.02)
        _reap_if_ours(pids)
    return len(killed)


# ------------------------------------------------------------------ containers, mounts, cgroups
def runc_containers() -> list[dict[str, Any]]:
    """``runc list`` as JSON (id, pid, status, bundle); empty when runc is missing."""
    try:
        p = subprocess.run(["runc", "list", "--format", "json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return json.loads(p.stdout) or []


def is_under(path: str, root: Path) -> bool:
    r = str(root)
    return path == r or path.startswith(r.rstrip("/") + "/")


def containers_under(root: Path, containers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The runc containers (of ``containers``, default all) whose bundle lies under ``root``."""
    return [c for c in (runc_containers() if containers is None else containers)
            if is_under(c.get("bundle") or "", root)]


def remove_containers_under(root: Path) -> list[str]:
    """``runc delete --force`` every container whose bundle lies under ``root`` (and reap its init if ours)."""
    gone = []
    for c in containers_under(root):
        subprocess.run(["runc", "kill", c["id"], "KILL"], capture_output=True, timeout=30)
        subprocess.run(["runc", "delete", "--force", c["id"]], capture_output=True, timeout=30)
        gone.append(c["id"])
        if c.get("pid"):
            _reap_if_ours([int(c["pid"])])
    return gone


def mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if is_under(target, root):
                out.append(target)
    return out


def unmount_under(root: Path) -> None:
    """Unmount (lazily if busy) every mount under ``root``, deepest first, stacked mounts too."""
    for _ in range(5):
        targets = sorted(set(mounts_under(root)), key=len, reverse=True)
        if not targets:
            return
        for t in targets:
            if subprocess.run(["umount", t], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", t], capture_output=True)


def remove_shoal_cgroups(container_ids: Iterable[str]) -> None:
    """Remove the (empty) cgroup directories runc made for these containers, in every hierarchy."""
    ids = set(container_ids)
    if not ids:
        return
    base = Path("/sys/fs/cgroup")
    roots = [base] + [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()] if base.is_dir() else []
    for r in roots:
        for cid in ids:
            d = r / "shoal" / cid
            if d.is_dir():
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()


def _alloc_ids(root: Path) -> set[str]:
    return {d.name for allocs in root.glob("*/data/client/allocs") for d in allocs.iterdir() if d.is_dir()}


def _alloc_container_ids(root: Path) -> set[str]:
    """Container ids the allocations under ``root`` may have used: one per task of each state file."""
    ids = set()
    for allocs in root.glob("*/data/client/allocs"):
        for alloc_dir in allocs.iterdir():
            state = load_state(alloc_dir) if alloc_dir.is_dir() else None
            alloc, job = (state or {}).get("alloc") or {}, (state or {}).get("job") or {}
            group = next((g for g in job.get("groups") or () if g.get("name") == alloc.get("task_group")), None)
            for task in (group or {}).get("tasks") or ():
                ids.add(container_id(str(alloc.get("id") or alloc_dir.name), str(task.get("name") or "")))
    return ids


# ------------------------------------------------------------------ everything
def sweep(root: Path | None, netns: list[str], bridge: str, veths: list[str]) -> None:
    """Remove a cluster: the processes in its namespaces, its containers, mounts and cgroups under
    ``root``, then the namespaces, the veths and the bridge."""
    for ns in netns:
        kill_netns_processes(NETNS_DIR / ns)
    if root is not None and root.exists():
        cids = set(remove_containers_under(root)) | _alloc_container_ids(root)
        unmount_under(root)
        remove_shoal_cgroups(cids)
    from pyroute2 import IPRoute, netns as pnetns

    if root is not None and root.exists():
        with Route() as ip:  # allocations' namespaces (their veths went with the hosts' namespaces)
            remove_leftovers(ip, sorted(_alloc_ids(root)), node=False)
    for ns in netns:
        if (NETNS_DIR / ns).exists():
            with contextlib.suppress(Exception):
                pnetns.remove(ns)
    with IPRoute() as ip:
        for name in [*veths, bridge]:
            if not name:
                continue
            idx = ip.link_lookup(ifname=name)
            if idx:
                with contextlib.suppress(Exception):
                    ip.link("del", index=idx[0])
