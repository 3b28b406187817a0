"""The driver interface: how the agent starts, waits on, stops and cleans up one task.

A driver turns a ``TaskSpec`` into a running process and hands back a
``TaskHandle``: a plain record the agent persists so that a restarted agent can
re-attach to the task (``recover``). Drivers never talk to servers.

``Driver`` is the base class every driver extends: five methods each driver
implements, and optional capabilities with their default behaviour (no probe,
no leftovers, no exec), so the agent never asks a driver what it happens to have.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.jobs.model import Resources

DEV_NULL = Path("/dev/null")
HOST_NETNS = "host"


@dataclass(slots=True, frozen=True)
class Mount:
    """A host path bind-mounted into a task that has its own filesystem."""

    source: Path
    destination: str  # absolute, inside the task
    readonly: bool = False


@dataclass(slots=True)
class TaskSpec:
    """What a task runner asks a driver to start. Built by the task runner, then completed by its
    task hooks' ``prestart`` (directories, env, mounts, log files): see ``agent/hooks/base.py``."""

    alloc_id: str
    job_id: str
    group: str
    task: str
    config: dict[str, Any]
    env: dict[str, str]
    resources: Resources
    alloc_dir: Path  # the allocation's directory; relative volume paths stay inside it
    task_dir: Path  # private to this task, inside alloc_dir; the driver may create anything under it
    stdout_path: Path = DEV_NULL
    stderr_path: Path = DEV_NULL
    mounts: list[Mount] = field(default_factory=list)  # honoured by drivers with fs isolation
    # drivers with net isolation: "" a namespace of its own (loopback only), HOST_NETNS the host's,
    # else the path of the allocation's namespace (hooks/network.py) to join
    netns: str = ""
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


@dataclass(slots=True, frozen=True)
class ExecCommand:
    """A command line that runs something in a task, with the cwd and env to spawn it with (None: inherit)."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None


@dataclass(slots=True, frozen=True)
class Capabilities:
    fs_isolation: bool = False  # its own root filesystem: the task's dirs are mounted at /alloc, /local, /secrets
    net_isolation: bool = False  # its own network namespace: checks connect from inside it


class DriverError(Exception):
    """A task could not be started or managed; the message is shown to the user."""

    def __init__(self, message: str, recoverable: bool = False):
        super().__init__(message)
        self.recoverable = recoverable


class Driver(abc.ABC):
    name: str = ""
    capabilities: Capabilities = Capabilities()

    def fingerprint(self) -> dict[str, str] | None:
        """Node attributes this driver contributes (``driver.<name>`` = "1" and details), or None if unusable here."""
        return None

    @abc.abstractmethod
    async def start(self, spec: TaskSpec) -> TaskHandle: ...

    @abc.abstractmethod
    async def wait(self, handle: TaskHandle) -> ExitResult:
        """Return when the task has exited. Cancel-safe."""

    @abc.abstractmethod
    async def stop(self, handle: TaskHandle, signal: str, timeout: float) -> None:
        """Send ``signal``; after ``timeout`` seconds, kill."""

    @abc.abstractmethod
    async def destroy(self, handle: TaskHandle) -> None:
        """Remove every trace of the task: processes, containers, mounts, cgroups. Idempotent."""

    @abc.abstractmethod
    async def recover(self, handle: TaskHandle) -> bool:
        """Re-attach to a task started by an earlier agent process; False if it is gone."""

    def probe_handle(self, alloc_id: str, task: str) -> TaskHandle | None:
        """A handle for a task an earlier agent process began to start but did not save as started
        (``recover`` completes it), or None: this driver keeps no record of starts."""
        return None

    def leftover_handles(self) -> list[TaskHandle]:
        """Handles of every task started and not yet destroyed, by this driver's own records (the agent
        destroys those no allocation's state file claims). None kept: an empty list."""
        return []

    def exec_command(self, handle: TaskHandle, argv: list[str], *, tty: bool, spec: TaskSpec) -> ExecCommand:
        """How to run ``argv`` in the running task ``handle`` (started from ``spec``)."""
        raise DriverError(f"the {self.name} driver cannot run commands in its tasks")


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def log_fds(spec: TaskSpec) -> Iterator[tuple[int, int]]:
    """O_APPEND fds on the task's stdout and stderr files (one fd when both are one file), for the task
    to inherit; closed on exit. The logs hook made their directory."""
    out_fd = _open_log(spec.stdout_path)
    err_fd = out_fd
    try:
        if spec.stderr_path != spec.stdout_path:
            err_fd = _open_log(spec.stderr_path)
        yield out_fd, err_fd
    finally:
        os.close(out_fd)
        if err_fd != out_fd:
            os.close(err_fd)


def wait_key(handle: TaskHandle) -> str:
    return f"{handle.id}:{handle.pid}"  # one process: a restarted task (same id) gets a new key
