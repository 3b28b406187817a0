"""Sustained job-register writes on a 3-server cluster on loopback: writes/s and commit latency.

Each write is a `Job.Register` RPC to the leader, acknowledged only after a Raft majority
committed it. Two loads, each on the same cluster:

- **At the target rate** (open loop, ``--rate``, default 2,000 writes/s): writes are sent on a
  fixed schedule whatever the answers do, and each latency is counted from when its write was due,
  so a slow cluster cannot hide behind fewer requests (no coordinated omission). This is the
  commit latency a user sees while the cluster sustains that rate: ``at_rate_p50_ms``,
  ``at_rate_p99_ms``.
- **Saturated** (closed loop, ``--clients``, default 64): each client sends its next write as soon as
  the last one is acknowledged, so the cluster runs flat out: ``writes_per_s`` is the most it
  sustains. Writes arriving together share a Raft entry (group commit). Its latencies
  (``p50_ms``, ``p99_ms``) are mostly queueing: by Little's law their mean is clients / writes_per_s.

Baseline, in the same run: the same clients calling `Status.Leader` (a round trip to the leader
on the same call streams that touches neither Raft nor the state), the ceiling of any write on
this machine. ``write_to_rpc_ratio`` = writes/s ÷ that baseline. The leader's and followers'
CPU use are printed too (cores busy during the saturated run), and the CPU each process spent per
write: the three servers and this client share the machine's cores. So does the rest of the host
when this runs in a VM: ``at_rate_cpu_steal_percent`` and ``cpu_steal_percent`` are the share of
each run's CPU time the hypervisor gave to others (/proc/stat's steal), to read the figures by.
Usage: python bench/raft_write.py [--rate 2000] [--clients 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.cluster import ServerCluster, ServerProc  # noqa: E402

from shoal.gcpolicy import freeze_long_lived_objects  # noqa: E402
from shoal.rpc.transport import RpcClient  # noqa: E402


def job(i: int, prefix: str = "bench") -> dict:
    return {"id": f"{prefix}-{i}", "groups": [{"name": "g", "count": 0, "tasks": [
        {"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}, "resources": {"cpu": 10, "memory": 10}}]}]}


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat's first line: user, nice, system, idle, iowait,
    irq, softirq, steal)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """Of the time between the two readings, the share the hypervisor gave this VM's CPUs to others:
    a busy host makes every figure here worse."""
    delta = [b - a for a, b in zip(before, after)]
    return round(100 * delta[7] / max(1, sum(delta)), 1)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(address: str, clients: int, seconds: float, channels: int,
               method: str = "Job.Register") -> tuple[list[float], float]:
    conns = [RpcClient(address, timeout=30) for _ in range(channels)]
    latencies: list[float] = []
    counter = iter(range(10**9))
    stop_at = time.monotonic() + seconds

    async def client(k: int) -> None:
        c = conns[k % channels]
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            await c.call(method, {"job": job(next(counter))} if method == "Job.Register" else {})
            latencies.append(time.perf_counter() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.monotonic() - t0
    for c in conns:
        await c.close()
    return latencies, elapsed


async def paced(address: str, rate: float, seconds: float, channels: int) -> tuple[list[float], float]:
    """Open loop: ``rate`` writes/s for ``seconds``, sent when due whatever the answers do. Latencies are
    counted from each write's due time. Returns them and the achieved writes/s.

    Writes go out in 5 ms ticks, about ten to a tick at 2,000/s, and the call streams carry each
    tick's writes as one message, as a busy client's would. That adds 2.5 ms on average to the
    measured latencies. In 1 ms ticks, two writes to a message, the cluster spent more CPU per write
    and fell behind at 2,000/s on the 2-core machine this was written on."""
    conns = [RpcClient(address, timeout=30) for _ in range(channels)]
    latencies: list[float] = []
    total = int(rate * seconds)

    async def write(i: int, due: float) -> None:
        await conns[i % channels].call("Job.Register", {"job": job(i, "paced")})
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    tasks: list[asyncio.Task] = []
    while len(tasks) < total:
        now = time.perf_counter()
        due_now = min(total, int((now - start) * rate) + 1)
        for i in range(len(tasks), due_now):
            tasks.append(asyncio.ensure_future(write(i, start + i / rate)))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    return latencies, total / elapsed


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def measure(cluster: ServerCluster, leader: ServerProc, args: argparse.Namespace) -> dict:
    """Warm-up, the no-op baseline, the paced run and the saturated run, in that order, on one event
    loop: gRPC's completion queue stays bound to the loop that first used it, and a second loop left it
    calling into a closed one. Returns the figures."""
    address = leader.address
    await load(address, 8, 1.0, 2)  # warm up
    # the baseline first: after the writes, the leader is still scheduling their evaluations
    base_lat, base_elapsed = await load(address, args.clients, min(args.seconds, 5.0), args.channels,
                                        method="Status.Leader")
    machine = cpu_times()
    paced_lat, paced_rate = await paced(address, args.rate, args.seconds, args.channels)
    paced_steal = steal_percent(machine, cpu_times())
    before = {s.address: cpu_seconds(s.proc.pid) for s in cluster.servers}
    client_cpu = time.process_time()
    machine = cpu_times()
    lat, elapsed = await load(address, args.clients, args.seconds, args.channels)
    steal = steal_percent(machine, cpu_times())
    client_cpu = time.process_time() - client_cpu
    cores = {s.address: (cpu_seconds(s.proc.pid) - before[s.address]) / elapsed for s in cluster.servers}
    follower_cores = max(cores[s.address] for s in cluster.servers if s is not leader)
    lat.sort()
    paced_lat.sort()
    n = len(lat)
    return {
        "servers": 3,
        "offered_writes_per_s": args.rate,
        "at_rate_writes_per_s": round(paced_rate, 1),
        "at_rate_p50_ms": round(1000 * quantile(paced_lat, 0.5), 2),
        "at_rate_p99_ms": round(1000 * quantile(paced_lat, 0.99), 2),
        "at_rate_cpu_steal_percent": paced_steal,
        "clients": args.clients,
        "writes": n,
        "seconds": round(elapsed, 3),
        "writes_per_s": round(n / elapsed, 1),
        "p50_ms": round(1000 * quantile(lat, 0.5), 2),
        "p99_ms": round(1000 * quantile(lat, 0.99), 2),
        "mean_ms": round(1000 * statistics.fmean(lat), 2),
        "cpu_steal_percent": steal,
        "leader_cores": round(cores[leader.address], 2),
        "follower_cores": round(follower_cores, 2),
        "leader_cpu_ms_per_write": round(1000 * cores[leader.address] / (n / elapsed), 3),
        "follower_cpu_ms_per_write": round(1000 * follower_cores / (n / elapsed), 3),
        "client_cpu_ms_per_write": round(1000 * client_cpu / n, 3),
        "rpc_baseline_per_s": round(len(base_lat) / base_elapsed, 1),
        "write_to_rpc_ratio": round((n / elapsed) / (len(base_lat) / base_elapsed), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000.0, help="writes/s of the open-loop run")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    # The servers' GC policy in this load generator too: its thousands of tasks and futures made
    # its own full collections stall it for tens of milliseconds, which counted as commit latency.
    freeze_long_lived_objects()
    uvloop.install()  # the servers' event loop: the load generator shares the machine's cores with them
    with tempfile.TemporaryDirectory(prefix="shoal-raft-bench-") as tmp:
        cluster = ServerCluster(Path(tmp), 3)
        try:
            figures = asyncio.run(measure(cluster, cluster.start().wait_leader(), args))
        finally:
            cluster.stop()
    n = figures["writes"]
    print(f"at {args.rate:g} writes/s offered ({figures['at_rate_writes_per_s']} achieved): commit latency "
          f"p50 {figures['at_rate_p50_ms']} ms, p99 {figures['at_rate_p99_ms']} ms "
          f"(CPU steal {figures['at_rate_cpu_steal_percent']}%)")
    print(f"saturated, {args.clients} clients: {n} committed job registrations in {figures['seconds']:.1f}s on 3 servers: "
          f"{figures['writes_per_s']} writes/s, p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; leader "
          f"{figures['leader_cores']} cores busy ({figures['leader_cpu_ms_per_write']} ms CPU per write); "
          f"CPU steal {figures['cpu_steal_percent']}%")
    print(f"baseline: {figures['rpc_baseline_per_s']} no-op RPCs/s to the same leader with the same clients "
          f"(writes reach {figures['write_to_rpc_ratio']:.0%} of it)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
