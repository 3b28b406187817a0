"""The seconds from an allocation becoming healthy to its address being answered by the DNS
server of every agent of a dev cluster (3 servers, 3 clients, network-namespace hosts).

One `web` allocation runs busybox httpd with an http check on /health every 200 ms. Each
sample makes it unhealthy (removes /health), waits until no agent answers its address, then
makes it healthy again (writes /health). The moment it became healthy is the agent's own:
the timestamp of its "check status changed" log line (passing). The moment it is resolvable
everywhere is the latest of each agent's first answer holding the address: a UDP socket made
inside each client host's namespace asks its agent (127.0.0.1:8600) every 2 ms. Both clocks
are this machine's. The path measured is the whole of it: check result -> registration
change -> ``Service.Sync`` -> Raft commit -> every agent's blocking ``Service.Catalog`` ->
its view -> the DNS answer.

``measure_propagation`` returns the figures for bench/dns.py's JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import dnslib

from shoal.devcluster import DevCluster
from shoal.devcluster.hosts import Host
from shoal.devcluster.rootfs import build_busybox_rootfs
from shoal.devcluster.waiting import wait_for
from shoal.netoverlay import netns

HTTPD = "mkdir -p /www && echo ok > /www/health && exec httpd -f -p 8080 -h /www"
POLL = 0.002  # seconds between two questions to one agent
CHECK_KEY = "web.alive"


def web_job() -> dict[str, Any]:
    return {"id": "web", "groups": [{
        "name": "web", "count": 1, "networks": [{"mode": "bridge", "ports": [{"label": "http", "to": 8080}]}],
        "services": [{"name": "web", "port": "http", "checks": [
            {"name": "alive", "type": "http", "port": "http", "path": "/health", "interval": 0.2, "timeout": 1.0}]}],
        "tasks": [{"name": "httpd", "driver": "container",
                   "config": {"image": "busybox:latest", "command": "/bin/sh", "args": ["-c", HTTPD]},
                   "resources": {"cpu": 20, "memory": 16}, "kill_timeout": 1.0}]}]}


def socket_in(host: Host) -> socket.socket:
    """A UDP socket in the host's namespace, connected to its agent's DNS server (it keeps the namespace)."""
    def make() -> socket.socket:
        fd = os.open(host.netns_path, os.O_RDONLY)
        try:
            if netns._libc.setns(fd, netns.CLONE_NEWNET) != 0:
                raise OSError("setns failed")
        finally:
            os.close(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", 8600))
        s.setblocking(False)
        return s

    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(s=make()))
    t.start()
    t.join()
    return box["s"]


def answers(s: socket.socket, query: bytes, address: str) -> bool | None:
    """Send one question; True/False when its answer came (holds ``address`` or not), None if none yet."""
    with contextlib.suppress(BlockingIOError):
        while True:  # drop answers to earlier questions
            s.recv(4096)
    s.send(query)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            reply = dnslib.DNSRecord.parse(s.recv(4096))
        except BlockingIOError:
            time.sleep(0.0002)
            continue
        return any(str(rr.rdata) == address for rr in reply.rr)
    return None


def first_seen(socks: list[socket.socket], address: str, want: bool, timeout: float) -> list[float]:
    """Per agent, the first time (time.time()) its answer held ``address`` (want) or did not."""
    query = dnslib.DNSRecord.question("web.service.shoal").pack()
    seen: list[float | None] = [None] * len(socks)
    deadline = time.monotonic() + timeout
    while None in seen:
        if time.monotonic() > deadline:
            raise RuntimeError(f"web.service.shoal did not {'' if want else 'stop to '}answer {address} on every "
                               f"agent within {timeout} s: {seen}")
        for i, s in enumerate(socks):
            if seen[i] is None and answers(s, query, address) is want:
                seen[i] = time.time()
        time.sleep(POLL)
    return [t for t in seen if t is not None]


def passing_since(log: Path, after: float) -> float | None:
    """The timestamp of the agent's latest "check status changed ... passing" line after ``after``."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if '"check status changed"' not in line or CHECK_KEY not in line:
            continue
        rec = json.loads(line)
        ts = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        if rec.get("status") == "passing" and ts > after:
            found = ts
    return found


def in_task(c: DevCluster, alloc_id: str, script: str) -> None:
    r = c.cli("alloc", "exec", alloc_id, "sh", "-c", script, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"alloc exec {script!r}: {r.stderr}")


def measure_propagation(samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-dns-") as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "busybox")
        with DevCluster(Path(tmp) / "cluster", servers=3, clients=3, images={"busybox:latest": rootfs},
                        log_level="info") as c:
            c.call("Job.Register", {"job": web_job()})
            alloc = wait_for(lambda: next((c.call("Alloc.Get", {"alloc_id": a["id"]})["allocation"]
                                           for a in c.allocations("web") if a["client_status"] == "running"), None),
                             60, "the web allocation running")
            address = alloc["network_status"]["address"]
            host = next(h for h in c.clients if c.nodes()[h.name]["id"] == alloc["node_id"])
            socks = [socket_in(h) for h in c.clients]
            try:
                first_seen(socks, address, True, 30)
                seconds = []
                for _ in range(samples):
                    in_task(c, alloc["id"], "rm -f /www/health")
                    first_seen(socks, address, False, 10)
                    time.sleep(random.uniform(0, 0.2))  # not in step with the check's interval
                    start = time.time()
                    in_task(c, alloc["id"], "echo ok > /www/health")
                    everywhere = max(first_seen(socks, address, True, 10))
                    healthy = wait_for(lambda: passing_since(host.log_path("client"), start), 5,
                                       "the agent's log line for the passing check")
                    seconds.append(everywhere - healthy)
            finally:
                for s in socks:
                    s.close()
    seconds.sort()
    return {"healthy_to_resolvable_p50_seconds": round(statistics.median(seconds), 4),
            "healthy_to_resolvable_p99_seconds": round(seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))], 4),
            "healthy_to_resolvable_max_seconds": round(seconds[-1], 4),
            "healthy_to_resolvable_samples": len(seconds), "agents": 3}
