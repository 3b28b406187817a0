"""Fixtures for the failover drills: a busybox image, and real clusters of network-namespace hosts
torn down after every drill (logs kept under the test's tmp dir and shown when a drill fails)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.devcluster import DevCluster
from shoal.devcluster.rootfs import build_busybox_rootfs


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "drills need root (network namespaces, runc)"
    for tool in ("runc", "nsenter", "nft", "ip"):
        if shutil.which(tool) is None:
            return f"drills need {tool} (make deps)"
    if not Path("/bin/busybox").exists():
        return "drills need busybox-static (make deps)"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = _why_not()
    if why:
        pytest.skip(why)
    return build_busybox_rootfs(tmp_path_factory.mktemp("drill-image") / "busybox")


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path, busybox_rootfs: Path) -> Iterator[Callable[..., DevCluster]]:
    made: list[DevCluster] = []

    def make(servers: int = 3, clients: int = 0) -> DevCluster:
        c = DevCluster(tmp_path / f"cluster{len(made)}", servers=servers, clients=clients,
                       images={"busybox:latest": busybox_rootfs} if clients else None)
        made.append(c)
        return c.start(timeout=60)

    try:
        yield make
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
        for c in made:
            if failed:
                print(f"\n=== cluster {c.root} logs (tail) ===")
                for h in c.hosts.values():
                    text = h.log()
                    print(text[-3000:])
            c.close()
