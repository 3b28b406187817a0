"""A thin async wrapper over the ``runc`` binary.

Every call is one ``runc`` subprocess; nothing here holds a lock, so different
containers are created, killed and deleted in parallel. Failures raise
``DriverError`` carrying runc's own error message.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agent import spawn
from shoal.agent.drivers.base import DriverError

DEFAULT_ROOT = "/run/runc"


@dataclass(slots=True, frozen=True)
class ContainerState:
    id: str
    pid: int
    status: str  # creating | created | running | paused | stopped
    bundle: str
    created: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "created", "paused")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerState:
        return cls(
            id=str(data.get("id", "")),
            pid=int(data.get("pid") or 0),
            status=str(data.get("status", "")),
            bundle=str(data.get("bundle", "")),
            created=str(data.get("created", "")),
        )


def _error_text(stderr: bytes, log_file: Path | None = None) -> str:
    """runc's error message: from its JSON log file if we have one, else from stderr."""
    messages: list[str] = []
    if log_file is not None:
        try:
            for line in log_file.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    messages.append(str(entry["msg"]))
        except OSError:
            pass
    if not messages:
        for line in stderr.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if not line:
                continue
            # logrus text format: time="..." level=error msg="..."
            if 'msg="' in line:
                line = line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
            messages.append(line)
    return "; ".join(dict.fromkeys(messages)) or "no error output"


_LIMITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _limit() -> asyncio.Semaphore:
    """At most 8 runc processes per CPU at a time (per event loop): a hundred at once (starting or stopping
    a hundred tasks) only thrash the CPUs, and starve the agent's own heartbeats."""
    loop = asyncio.get_running_loop()
    sem = _LIMITS.get(loop)
    if sem is None:
        sem = _LIMITS[loop] = asyncio.Semaphore(max(8, 8 * (os.cpu_count() or 1)))
    return sem


class Runc:
    """``runc [--root ROOT] ...`` as coroutines."""

    __slots__ = ("binary", "root")

    def __init__(self, binary: str = "runc", root: str | None = None) -> None:
        self.binary = binary
        self.root = root  # None: runc's default (/run/runc as root), so `runc list` shows our containers

    def available(self) -> bool:
        return shutil.which(self.binary) is not None

    def _base(self) -> list[str]:
        return [self.binary] if self.root is None else [self.binary, "--root", self.root]

    async def _spawn(self, argv: list[str], what: str, **kwargs: Any) -> spawn.Completed:
        """Run one runc command (within the per-loop limit); a missing binary is a clear error."""
        try:
            async with _limit():
                return await spawn.run(argv, **kwargs)
        except FileNotFoundError:
            raise DriverError(f"{what}: the runc binary ({self.binary}) is not installed") from None

    async def _run(self, *args: str, what: str) -> bytes:
        res = await self._spawn([*self._base(), *args], what)
        if res.returncode != 0:
            raise DriverError(f"{what}: runc failed: {_error_text(res.stderr)}", recoverable=True)
        return res.stdout

    def version_sync(self) -> str | None:
        """``runc --version``'s version number, or None if runc cannot run (for fingerprinting)."""
        try:
            res = subprocess.run([self.binary, "--version"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode != 0:
            return None
        first = res.stdout.decode("utf-8", "replace").splitlines()[:1]
        if not first:
            return None
        # "runc version 1.1.5+ds1"
        return first[0].split("version", 1)[-1].strip() or None

    async def run_detached(
        self,
        container_id: str,
        bundle: Path,
        *,
        pid_file: Path,
        stdout: int,
        stderr: int,
        log_file: Path | None = None,
    ) -> int:
        """``runc run -d``: create and start the container; return its init's pid.

        ``stdout``/``stderr`` are file descriptors the container inherits (with
        ``terminal: false`` and ``-d`` runc passes its own stdio through).
        """
        base = self._base()
        if log_file is not None:
            base += ["--log", str(log_file), "--log-format", "json"]
        res = await self._spawn(
            [*base, "run", "--detach", "--pid-file", str(pid_file), "--bundle", str(bundle), container_id],
            f"cannot start container {container_id}", stdout=stdout, stderr=stderr,
        )
        if res.returncode != 0:
            raise DriverError(
                f"cannot start container {container_id}: {_error_text(b'', log_file)}",
                recoverable=False,
            )
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise DriverError(f"container {container_id} started but its pid file {pid_file} is unreadable: {exc}") from exc

    async def state(self, container_id: str) -> ContainerState | None:
        """The container's state, or None if runc does not know it."""
        res = await self._spawn([*self._base(), "state", container_id], f"runc state {container_id}")
        out = res.stdout
        if res.returncode != 0:
            text = _error_text(res.stderr)
            if "does not exist" in text or "not exist" in text:
                return None
            raise DriverError(f"runc state {container_id} failed: {text}", recoverable=True)
        return ContainerState.from_json(json.loads(out))

    async def kill(self, container_id: str, signal: str, *, all_processes: bool = False) -> bool:
        """Send ``signal`` (name or number). False if the container is gone or already stopped."""
        args = ["kill"]
        if all_processes:
            args.append("--all")
        sig = signal.removeprefix("SIG") if not signal.isdigit() else signal
        try:
            await self._run(*args, container_id, sig, what=f"runc kill {container_id} {sig}")
        except DriverError as exc:
            text = str(exc)
            if "does not exist" in text or "not running" in text or "process already finished" in text:
                return False
            raise
        return True

    async def delete(self, container_id: str, *, force: bool = True) -> None:
        """``runc delete [--force]``; deleting an unknown container is not an error."""
        args = ["delete"]
        if force:
            args.append("--force")
        try:
            await self._run(*args, container_id, what=f"runc delete {container_id}")
        except DriverError as exc:
            if "does not exist" in str(exc):
                return
            raise

    async def list(self) -> list[ContainerState]:
        out = await self._run("list", "--format", "json", what="runc list")
        data = json.loads(out or b"null") or []
        return [ContainerState.from_json(item) for item in data]

