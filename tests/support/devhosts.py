"""Helpers for end-to-end tests on a dev cluster of network-namespace hosts: a module-wide
cluster with a busybox image, and lookups of allocations and hosts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shoal.devcluster import DevCluster
from shoal.devcluster.hosts import Host
from shoal.devcluster.rootfs import build_busybox_rootfs


def busybox_cluster(tmp_path_factory: pytest.TempPathFactory, name: str, clients: int = 3,
                    **kwargs: Any) -> Iterator[DevCluster]:
    """3 servers and ``clients`` clients with busybox:latest on every client, for a module-scoped
    fixture; ``kwargs`` go to ``DevCluster`` (e.g. ``client_flags``). Torn down even when a test fails."""
    root = tmp_path_factory.mktemp(name)
    rootfs = build_busybox_rootfs(root / "busybox")
    c = DevCluster(root / "cluster", servers=3, clients=clients, images={"busybox:latest": rootfs}, **kwargs)
    try:
        c.start(timeout=90)
        yield c
    finally:
        c.close()


def running(c: DevCluster, job_id: str, n: int) -> list[dict[str, Any]] | None:
    """At least ``n`` allocations of ``job_id`` running with their network up (full records), else None."""
    allocs = [a for a in c.allocations(job_id) if a["client_status"] == "running" and a["desired_status"] == "run"]
    if len(allocs) < n:
        return None
    full = [c.call("Alloc.Get", {"alloc_id": a["id"]})["allocation"] for a in allocs]
    return full if all((a.get("network_status") or {}).get("address") for a in full) else None


def host_of(c: DevCluster, node_id: str) -> Host:
    return c.host(next(name for name, n in c.nodes().items() if n["id"] == node_id))


def node_id_of(c: DevCluster, host: Host) -> str:
    return c.nodes()[host.name]["id"]
