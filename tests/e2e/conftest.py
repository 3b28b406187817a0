from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.cluster import DevAgent, build_busybox_rootfs


def _can_run_containers() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("runc", "busybox"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make deps)"
    return None


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    why = _can_run_containers()
    if why:
        pytest.skip(why)
    from shoal.agent.imageimport import import_rootfs
    from shoal.agent.imagestore import ImageStore

    root = tmp_path_factory.mktemp("images")
    rootfs = build_busybox_rootfs(root / "rootfs")
    store = root / "store"
    import_rootfs(ImageStore(store), rootfs, "busybox:latest")
    return store


@pytest.fixture
def dev_agent(tmp_path: Path, image_dir: Path):
    agent = DevAgent(root=tmp_path / "agent", image_dir=image_dir)
    try:
        yield agent.start()
    finally:
        agent.stop()
