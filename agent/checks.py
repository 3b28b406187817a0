"""Service health checks: tcp, http and script, run by the agent for its allocations.

A check reaches the task where it listens: a container (or exec task) has its
own network namespace, so tcp and http checks connect to 127.0.0.1:PORT from a
socket created inside that namespace (a short-lived thread joins it with
``setns``; the socket keeps the namespace, the event loop uses it). raw_exec
tasks share the host's network. Script checks run inside the task (``runc exec``
for containers), with the check's timeout.

Statuses are Consul's: ``passing``, ``warning``, ``critical``. tcp: the connection
is accepted; http: 2xx passing, 429 warning, anything else critical; script:
exit 0 passing, 1 warning, other critical. Checks start ``critical`` until they pass.

A check with a ``check_restart`` (limit > 0) also restarts its task when it stays unhealthy:
the runner feeds each result to an ``UnhealthyRestart`` (checkrestart.py, pure) and calls
the target's ``restart`` when that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from shoal.agent.checkrestart import CRITICAL as CRITICAL, PASSING as PASSING, WARNING as WARNING
from shoal.agent.checkrestart import UnhealthyRestart
from shoal.jobs.model import Check, Service

log = structlog.get_logger("shoal.agent.checks")

CLONE_NEWNET = 0x40000000
MAX_OUTPUT = 4096

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(slots=True)
class CheckResult:
    status: str
    output: str = ""
    time: float = 0.0


def socket_in_netns(pid: int | None) -> socket.socket:
    """A non-blocking TCP socket in the network namespace of ``pid`` (None: ours)."""
    if pid is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        return s
    result: dict[str, object] = {}

    def enter() -> None:  # this thread only: setns changes the calling thread's namespace
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns: {os.strerror(err)}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            result["socket"] = s
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    t = threading.Thread(target=enter, name=f"netns-{pid}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["socket"]  # type: ignore[return-value]


async def tcp_check(pid: int | None, port: int, timeout: float) -> CheckResult:
    loop = asyncio.get_running_loop()
    try:
        s = await asyncio.to_thread(socket_in_netns, pid)
    except OSError as exc:
        return CheckResult(CRITICAL, f"cannot enter the task's network namespace: {exc}")
    try:
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), timeout)
        return CheckResult(PASSING, f"TCP connect 127.0.0.1:{port}: Success")
    except TimeoutError:
        return CheckResult(CRITICAL, f"TCP connect 127.0.0.1:{port}: timed out after {timeout:g}s")
    except OSError as exc:
        return CheckResult(CRITICAL, f"TCP connect 127.0.0.1:{port}: {_why(exc)}")
    finally:
        s.close()


async def http_check(pid: int | None, port: int, path: str, timeout: float) -> CheckResult:
    loop = asyncio.get_running_loop()
    path = path or "/"
    if not path.startswith("/"):
        path = "/" + path
    try:
        s = await asyncio.to_thread(socket_in_netns, pid)
    except OSError as exc:
        return CheckResult(CRITICAL, f"cannot enter the task's network namespace: {exc}")

    async def talk() -> bytes:
        await loop.sock_connect(s, ("127.0.0.1", port))
        req = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: shoal-health-check\r\n\r\n"
        await loop.sock_sendall(s, req.encode())
        data = b""
        while b"\r\n" not in data and len(data) < MAX_OUTPUT:
            chunk = await loop.sock_recv(s, MAX_OUTPUT)
            if not chunk:
                break
            data += chunk
        return data

    url = f"http://127.0.0.1:{port}{path}"
    try:
        data = await asyncio.wait_for(talk(), timeout)
    except TimeoutError:
        return CheckResult(CRITICAL, f"HTTP GET {url}: timed out after {timeout:g}s")
    except OSError as exc:
        return CheckResult(CRITICAL, f"HTTP GET {url}: {_why(exc)}")
    finally:
        s.close()
    line = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return CheckResult(CRITICAL, f"HTTP GET {url}: not an HTTP response: {line[:100]!r}")
    code = int(parts[1])
    status = PASSING if 200 <= code < 300 else WARNING if code == 429 else CRITICAL
    return CheckResult(status, f"HTTP GET {url}: {line}")


def _why(exc: OSError) -> str:
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


ScriptRunner = Callable[[list[str], float], Awaitable[tuple[int | None, str]]]


async def script_check(run: ScriptRunner, argv: list[str], timeout: float) -> CheckResult:
    try:
        code, output = await run(argv, timeout)
    except Exception as exc:
        return CheckResult(CRITICAL, f"cannot run {argv[0]!r}: {exc}")
    if code is None:
        return CheckResult(CRITICAL, f"timed out after {timeout:g}s")
    status = PASSING if code == 0 else WARNING if code == 1 else CRITICAL
    return CheckResult(status, output[-MAX_OUTPUT:])


@dataclass(slots=True)
class CheckTarget:
    """Where one check runs: the task's namespace pid (None: the host), how to run scripts in it,
    and how to restart what the check watches when its check_restart says so (None: never)."""

    pid: Callable[[], int | None]  # the task's current pid (changes across restarts); 0 = not running
    host_network: bool
    run_script: ScriptRunner | None
    restart: Callable[[str], Awaitable[None]] | None = None  # given the reason, for the task event


class CheckRunner:
    """Runs one check every ``interval`` while its task runs; calls ``on_change`` when its status changes,
    and restarts the task through ``target.restart`` when the check's check_restart calls for it.
    ``clock`` (monotonic seconds) times the check_restart grace."""

    def __init__(self, key: str, service: Service, check: Check, port: int | None, target: CheckTarget,
                 on_change: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.service = service
        self.check = check
        self.port = port
        self.target = target
        self.on_change = on_change
        self.clock = clock
        self.result = CheckResult(CRITICAL, "not run yet")
        cr = check.check_restart
        self.restarts: UnhealthyRestart | None = (
            UnhealthyRestart(cr) if cr is not None and cr.limit > 0 and target.restart is not None else None)
        self._pid: int | None = None  # the task's pid when last seen; check_restart's grace starts when it changes
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> str:
        return self.result.status

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"check-{self.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> CheckResult:
        c = self.check
        pid = self.target.pid()
        if not pid:
            return CheckResult(CRITICAL, "the task is not running")
        ns_pid = None if self.target.host_network else pid
        if c.type in ("tcp", "http"):
            if self.port is None:
                return CheckResult(CRITICAL, f"no port for check {c.name or c.type!r}: name a port label of the "
                                             "group's network with a static or `to` value")
            if c.type == "tcp":
                return await tcp_check(ns_pid, self.port, c.timeout)
            return await http_check(ns_pid, self.port, c.path, c.timeout)
        if c.type == "script":
            if self.target.run_script is None:
                return CheckResult(CRITICAL, "script checks are not supported for this task's driver")
            return await script_check(self.target.run_script, [c.command, *c.args], c.timeout)
        return CheckResult(CRITICAL, f"unknown check type {c.type!r}")

    def follow_task(self, pid: int | None) -> None:
        """Tell the check_restart decision whether the task runs, and when it (re)started."""
        if self.restarts is not None:
            if not pid:
                self.restarts.task_stopped()
            elif pid != self._pid:
                self.restarts.task_started(self.clock())
        self._pid = pid

    async def restart_if_unhealthy(self, pid: int | None, status: str) -> bool:
        """Count a result the task at ``pid`` gave; restart the task if check_restart says so. True if it did."""
        if self.restarts is None or self.target.restart is None or not pid or pid != self.target.pid():
            return False  # the task stopped or restarted meanwhile: the result is not about this run
        if not self.restarts.observe(status, self.clock()):
            return False
        reason = f"healthcheck: check {json.dumps(self.check.name or self.key)} unhealthy"
        log.info("restarting a task: its check is unhealthy", check=self.key, status=status,
                 limit=self.restarts.config.limit)
        try:
            await self.target.restart(reason)
        except Exception as exc:  # a check never takes the agent down
            log.warning("restarting an unhealthy task failed", check=self.key, error=str(exc))
        return True

    async def _loop(self) -> None:
        while True:
            pid = self.target.pid()
            self.follow_task(pid)
            try:
                result = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a check never takes the agent down
                result = CheckResult(CRITICAL, f"check failed to run: {exc}")
            result.time = time.time()
            changed = result.status != self.result.status
            self.result = result
            if changed:
                log.info("check status changed", check=self.key, status=result.status, output=result.output[:200])
                self.on_change()
            await self.restart_if_unhealthy(pid, result.status)
            await asyncio.sleep(max(0.05, self.check.interval))
