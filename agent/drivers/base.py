"""The driver interface: how the agent starts, waits on, stops and cleans up one task.

A driver turns a ``TaskSpec`` into a running process and hands back a
``TaskHandle``: a plain record the agent persists so that a restarted agent can
re-attach to the task (``recover``). Drivers never talk to servers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shoal.jobs.model import Resources


@dataclass(slots=True)
class TaskSpec:
    alloc_id: str
    job_id: str
    group: str
    task: str
    config: dict[str, Any]
    env: dict[str, str]
    resources: Resources
    task_dir: Path  # private to this task; the driver may create anything under it
    stdout_path: Path
    stderr_path: Path
    user: str = ""
    kill_signal: str = "SIGTERM"
    kill_timeout: float = 5.0
    on_event: Callable[[str, str], None] | None = None  # (type, message): a task event, e.g. "Driver"

    def event(self, type_: str, message: str) -> None:
        if self.on_event is not None:
            self.on_event(type_, message)


@dataclass(slots=True)
class TaskHandle:
    driver: str
    id: str  # the driver's name for the task (runc container id, or a pid as text)
    pid: int
    started_at: float
    state: dict[str, Any] = field(default_factory=dict)  # driver-specific, plain values only


@dataclass(slots=True)
class ExitResult:
    exit_code: int
    signal: int = 0
    oom_killed: bool = False
    message: str = ""
    known: bool = True  # False: the process ended while no agent could collect its status

    def successful(self) -> bool:
        return self.exit_code == 0 and self.signal == 0 and not self.oom_killed


class DriverError(Exception):
    """A task could not be started or managed; the message is shown to the user."""

    def __init__(self, message: str, recoverable: bool = False):
        super().__init__(message)
        self.recoverable = recoverable


class Driver(Protocol):
    name: str

    def fingerprint(self) -> dict[str, str] | None:
        """Node attributes this driver contributes (``driver.<name>`` = "1" and details), or None if unusable here."""

    async def start(self, spec: TaskSpec) -> TaskHandle: ...

    async def wait(self, handle: TaskHandle) -> ExitResult:
        """Return when the task has exited. Cancel-safe."""

    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        """Send ``signal``; after ``timeout`` seconds, kill."""

    async def destroy(self, handle: TaskHandle) -> None:
        """Remove every trace of the task: processes, containers, mounts, cgroups. Idempotent."""

    async def recover(self, handle: TaskHandle) -> bool:
        """Re-attach to a task started by an earlier agent process; False if it is gone."""
