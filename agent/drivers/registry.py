"""Which driver runs which ``task.driver`` name on this agent."""

from __future__ import annotations

from pathlib import Path

from shoal.agent.drivers.base import Driver
from shoal.agent.drivers.container import DEFAULT_STATE_DIR, ContainerDriver
from shoal.agent.drivers.exec import ExecDriver
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.agent.imagestore import ImageStore
from shoal.agent.registry_client import RegistryConfig


def build_drivers(
    image_store: ImageStore,
    *,
    raw_exec_enabled: bool,
    runc_root: str | None = None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    registry: RegistryConfig | None = None,
    allowed_volumes: list[Path] | tuple[Path, ...] = (),
    image_gc_delay: float | None = None,
) -> dict[str, Driver]:
    """Map driver names to drivers: "container" and Nomad's "docker" share one container driver;
    "exec" runs host programs isolated by runc; "raw_exec" only when the agent's configuration enables it."""
    container = ContainerDriver(image_store, runc_root=runc_root, state_dir=state_dir, registry=registry,
                                allowed_volumes=allowed_volumes, image_gc_delay=image_gc_delay)
    exec_driver = ExecDriver(image_store, runc_root=runc_root, state_dir=state_dir,
                             allowed_volumes=allowed_volumes)
    drivers: dict[str, Driver] = {"container": container, "docker": container, "exec": exec_driver}
    if raw_exec_enabled:
        drivers["raw_exec"] = RawExecDriver()
    return drivers
