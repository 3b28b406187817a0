"""Which driver runs which ``task.driver`` name on this agent."""

from __future__ import annotations

from pathlib import Path

from shoal.agent.drivers.base import Driver, DriverError, ExitResult, TaskHandle, TaskSpec
from shoal.agent.drivers.container import DEFAULT_STATE_DIR, ContainerDriver
from shoal.agent.drivers.exec import ExecDriver
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.agent.imagemgr import ImageManager


def build_drivers(
    images: ImageManager,
    *,
    raw_exec_enabled: bool,
    runc_root: str | None = None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    allowed_volumes: list[Path] | tuple[Path, ...] = (),
) -> dict[str, Driver]:
    """Map driver names to drivers: "container" and Nomad's "docker" share one container driver;
    "exec" runs host programs isolated by runc; "raw_exec" only when the agent's configuration enables it."""
    container = ContainerDriver(images, runc_root=runc_root, state_dir=state_dir, allowed_volumes=allowed_volumes)
    exec_driver = ExecDriver(runc_root=runc_root, state_dir=state_dir)
    drivers: dict[str, Driver] = {"container": container, "docker": container, "exec": exec_driver}
    if raw_exec_enabled:
        drivers["raw_exec"] = RawExecDriver()
    return drivers


class MissingDriver(Driver):
    """Stands in for a driver this node does not have: every start fails, clearly."""

    def __init__(self, name: str):
        self.name = name

    async def start(self, spec: TaskSpec) -> TaskHandle:
        raise DriverError(f"driver {self.name!r} is not available on this node")

    async def wait(self, handle: TaskHandle) -> ExitResult:
        raise DriverError("unreachable")

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        return None

    async def destroy(self, handle: TaskHandle) -> None:
        return None

    async def recover(self, handle: TaskHandle) -> bool:
        return False


def driver_for(drivers: dict[str, Driver], name: str) -> Driver:
    return drivers.get(name) or MissingDriver(name)
