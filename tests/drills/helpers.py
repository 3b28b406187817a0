"""What the failover drills share: job specs, a bounded write load, instance counting, figures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.devcluster import DevCluster
from shoal.errors import NoLeader, ShoalError, Unavailable
from shoal.rpc.transport import RpcClient

RESULTS_ENV = "SHOAL_DRILL_RESULTS"
_CID = re.compile(r"^shoal-([0-9a-f-]{36})-")


def write_job(i: int, prefix: str = "w") -> dict[str, Any]:
    """A small job for write load: registering it is one Raft write (it is never placed: no clients)."""
    return {
        "id": f"{prefix}-{i:05d}",
        "groups": [{"name": "g", "count": 1, "tasks": [
            {"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}, "resources": {"cpu": 10, "memory": 10}}
        ]}],
    }


def sleep_job(job_id: str, count: int) -> dict[str, Any]:
    """``count`` busybox containers that sleep (and exit 0 on SIGTERM)."""
    return {
        "id": job_id,
        "groups": [{"name": "g", "count": count, "tasks": [{
            "name": "sleep", "driver": "container",
            "config": {"image": "busybox:latest", "command": "/bin/sh",
                       "args": ["-c", "trap 'exit 0' TERM; sleep 3600 & wait"]},
            "resources": {"cpu": 20, "memory": 16},
            "kill_timeout": 2.0,
        }]}],
    }


def report(drill: str, **figures: Any) -> dict[str, Any]:
    """One JSON line of a drill's figures: printed, and appended to $SHOAL_DRILL_RESULTS if set."""
    line: dict[str, Any] = {"drill": drill}
    if os.environ.get("SHOAL_DRILL_RUN", "").isdigit():
        line["run"] = int(os.environ["SHOAL_DRILL_RUN"])
    line.update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()})
    text = json.dumps(line, sort_keys=False)
    print(text, flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text + "\n")
    return line


# ------------------------------------------------------------------ write load
@dataclass
class WriteLoad:
    """Concurrent writers registering jobs through every server; retryable errors are retried."""

    addresses: list[str]
    total: int
    writers: int = 8
    prefix: str = "w"
    retry_for: float = 60.0
    pause: float = 0.0  # between one writer's writes (bounds the rate of an open-ended load)
    acked: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    attempts: list[tuple[float, float]] = field(default_factory=list)  # (sent, acknowledged) of each acked write
    retryable_errors: int = 0
    other_errors: list[str] = field(default_factory=list)
    stop: bool = False

    async def run(self, on_progress=None) -> None:
        ids = iter(range(self.total))

        async def writer(k: int) -> None:
            conns = [RpcClient(a, timeout=15) for a in self.addresses]
            try:
                for i in ids:
                    if self.stop:
                        return
                    deadline = time.monotonic() + self.retry_for
                    attempt = k
                    while True:
                        sent = time.monotonic()
                        try:
                            await conns[attempt % len(conns)].call("Job.Register", {"job": write_job(i, self.prefix)},
                                                                   timeout=12)
                            now = time.monotonic()
                            self.acked.append(f"{self.prefix}-{i:05d}")
                            self.ack_times.append(now)
                            self.attempts.append((sent, now))
                            if on_progress is not None:
                                await on_progress(len(self.acked))
                            if self.pause:
                                await asyncio.sleep(self.pause)
                            break
                        except (NoLeader, Unavailable):  # retryable: try another server
                            self.retryable_errors += 1
                            attempt += 1
                            if time.monotonic() > deadline:
                                self.other_errors.append(f"{self.prefix}-{i:05d}: still unavailable after {self.retry_for}s")
                                break
                            await asyncio.sleep(0.05)
                        except ShoalError as exc:
                            self.other_errors.append(f"{self.prefix}-{i:05d}: {exc.code}: {exc}")
                            break
            finally:
                for c in conns:
                    await c.close()

        await asyncio.gather(*(writer(k) for k in range(self.writers)))

    def max_gap(self, start: float) -> float:
        """The longest time without an acknowledged write."""
        times = [start, *sorted(self.ack_times)]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def lost_writes(cluster: DevCluster, acked: list[str], prefix: str) -> list[str]:
    """Acknowledged job ids missing from a consistent read (through the leader)."""
    jobs = {j["id"] for j in cluster.call("Job.List", {}, timeout=30)["jobs"] if j["id"].startswith(prefix + "-")}
    return sorted(set(acked) - jobs)


def stale_job_ids(address: str, prefix: str) -> set[str] | None:
    from shoal.rpc.sync import call

    try:
        return {j["id"] for j in call(address, "Job.List", {"stale": True}, timeout=5)["jobs"] if j["id"].startswith(prefix + "-")}
    except ShoalError:
        return None


def replicas_disagree(cluster: DevCluster, hosts, acked: list[str], prefix: str, timeout: float = 30.0) -> dict[str, dict]:
    """Wait (up to ``timeout``) until each host's own state (a stale read) holds exactly the jobs the
    leader has, and every acknowledged one. Returns what still differs per host: {} when all agree."""
    want = {j["id"] for j in cluster.call("Job.List", {}, timeout=30)["jobs"] if j["id"].startswith(prefix + "-")}
    want_acked = set(acked)
    deadline = time.monotonic() + timeout
    diff: dict[str, dict] = {}
    for h in hosts:
        while True:
            got = stale_job_ids(h.api, prefix)
            if got is not None and got == want and want_acked <= got:
                diff.pop(h.name, None)
                break
            diff[h.name] = {"unreachable": True} if got is None else {
                "missing": len(want - got), "extra": len(got - want), "acked_missing": len(want_acked - got)}
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return diff


# ------------------------------------------------------------------ instances of a job
def alloc_of(container_id: str) -> str | None:
    m = _CID.match(container_id)
    return m.group(1) if m else None


def running_instances(cluster: DevCluster, job_id: str) -> dict[str, list[str]]:
    """Host name -> ids of this job's allocations with a running container there (ground truth: runc)."""
    allocs = {a["id"] for a in cluster.allocations(job_id)}
    out: dict[str, list[str]] = {}
    for host, containers in cluster.running_containers().items():
        ids = [a for a in (alloc_of(c["id"]) for c in containers) if a in allocs]
        if ids:
            out[host] = ids
    return out


def node_names(cluster: DevCluster) -> dict[str, str]:
    """Node id -> node (host) name."""
    return {n["id"]: name for name, n in cluster.nodes().items()}


def job_running_on(cluster: DevCluster, job_id: str, exclude_host: str | None = None) -> int:
    """Allocations the servers want running, that run, on hosts other than ``exclude_host``, and
    whose containers runc shows running on that same host."""
    names = node_names(cluster)
    running = running_instances(cluster, job_id)
    n = 0
    for a in cluster.allocations(job_id):
        host = names.get(a["node_id"])
        if a["desired_status"] == "run" and a["client_status"] == "running" and host != exclude_host \
                and a["id"] in running.get(host, []):
            n += 1
    return n
