"""Which driver runs which ``task.driver`` name on this agent."""

from __future__ import annotations

from pathlib import Path

from shoal.agent.drivers.base import Driver
from shoal.agent.drivers.container import DEFAULT_STATE_DIR, ContainerDriver
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.agent.images import ImageStore


def build_drivers(
    image_store: ImageStore,
    *,
    raw_exec_enabled: bool,
    runc_root: str | None = None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
) -> dict[str, Driver]:
    """Map driver names to drivers: "container" and Nomad's "docker" share one container driver;
    "raw_exec" only when the agent's configuration enables it."""
    container = ContainerDriver(image_store, runc_root=runc_root, state_dir=state_dir)
    drivers: dict[str, Driver] = {"container": container, "docker": container}
    if raw_exec_enabled:
        drivers["raw_exec"] = RawExecDriver()
    return drivers
