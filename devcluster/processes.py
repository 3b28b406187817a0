"""A host's ``shoal agent`` processes: started with ``nsenter --net``, killed, or stopped cleanly.

Only the network namespace is entered: the mount namespace, and so /sys/fs/cgroup, is
shared, and runc works from such an agent. Each process logs (JSON) to
``<host>/logs/<role>.log``, appended across restarts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoal.devcluster.cleanup import kill_netns_processes, remove_containers_under, unmount_under
from shoal.devcluster.hosts import Host, HostProcess


def shoal_command() -> list[str]:
    """How to run the ``shoal`` CLI of this installation."""
    script = Path(sys.executable).parent / "shoal"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "shoal.cli.main"]


def server_args(h: Host, servers: list[Host]) -> list[str]:
    """``shoal agent`` flags for a server host: it joins the other servers and expects all of them."""
    join = [s.api for s in servers if s is not h]
    return ["--server", "--data-dir", str(h.data_dir), "--bind", h.api, "--raft-bind", h.raft,
            "--join", ",".join(join), "--bootstrap-expect", str(len(servers)), "--node-name", h.name]


def client_args(h: Host, servers: list[Host], raw_exec: bool) -> list[str]:
    """``shoal agent`` flags for a client host."""
    args = ["--client", "--data-dir", str(h.data_dir), "--servers", ",".join(s.api for s in servers),
            "--client-bind", f"{h.address}:0", "--node-name", h.name, "--image-dir", str(h.image_dir)]
    return [*args, "--raw-exec"] if raw_exec else args


def spawn(h: Host, role: str, args: list[str], *, log_level: str, env: dict[str, str]) -> HostProcess:
    """Start ``shoal agent ARGS`` in the host's namespace, as ``h.procs[role]``."""
    log = open(h.log_path(role), "ab")
    try:
        log.write(f"=== {time.strftime('%H:%M:%S')} start {role}\n".encode())
        log.flush()
        full_env = {**os.environ, "TMPDIR": str(h.run_dir), "PYTHONFAULTHANDLER": "1", **env}
        full_env.pop("SHOAL_ADDR", None)
        popen = subprocess.Popen(
            [*h.nsenter(), *shoal_command(), "agent", *args, "--log-level", log_level, "--log-json"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, cwd=h.dir,
            start_new_session=True,
        )
    finally:
        log.close()
    proc = h.procs[role] = HostProcess(role, popen)
    return proc


def kill(h: Host, containers: bool) -> None:
    """SIGKILL every process of the host (and, ``containers``, its runc containers and mounts)."""
    for p in h.procs.values():
        p.expected_exit = True
        if p.running():
            with contextlib.suppress(ProcessLookupError):
                p.popen.kill()
    kill_netns_processes(h.netns_path)
    for p in h.procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=10)
    if containers:
        remove_containers_under(h.dir)
        unmount_under(h.dir)


def stop(h: Host, timeout: float = 30.0) -> bool:
    """SIGTERM the host's shoal processes and wait for them (a clean shutdown).

    A process still there after ``timeout`` s gets SIGABRT (with PYTHONFAULTHANDLER set,
    it writes every thread's traceback to its log), then SIGKILL. Returns True if any
    process had to be forced so.
    """
    forced = False
    for p in h.procs.values():
        if p.running():
            p.expected_exit = True
            p.popen.terminate()
    deadline = time.monotonic() + timeout
    for role, p in h.procs.items():
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            forced = True
            print(f"devcluster: {h.name} {role} (pid {p.pid}) still running {timeout}s after SIGTERM; "
                  f"SIGABRT for a traceback in {h.log_path(role)}, then SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGABRT)
            try:
                p.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
    return forced
