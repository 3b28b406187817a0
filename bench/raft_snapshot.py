"""Does a Raft snapshot stall the leader? Commit latency while a large state is snapshotted.

A single in-process Raft node holds a state of --allocs allocations (loaded into the FSM
directly), then commits writes one after another while log compaction writes a snapshot of
that state. Prints write latency p50/p99/max during the snapshot and before it, and the
snapshot's own duration; ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.cluster import free_port  # noqa: E402

from shoal import codec  # noqa: E402
from shoal.jobs.model import Job, Task, TaskGroup  # noqa: E402
from shoal.jobs.structs import Allocation, Node  # noqa: E402
from shoal.raft import ops  # noqa: E402
from shoal.raft.fsm import FSM  # noqa: E402
from shoal.raft.node import RaftConfig, RaftNode  # noqa: E402


def load_state(fsm: FSM, allocs: int) -> None:
    nodes = max(1, allocs // 20)
    for i in range(nodes):
        fsm.apply(ops.NODE_REGISTER, codec.encode(ops.NodeRegister(node=Node(id=f"n{i}", name=f"n{i}"))))
    for j in range(allocs // 20):
        job = Job(id=f"j{j}", groups=[TaskGroup(name="g", count=20, tasks=[Task(name="t", driver="container", config={"image": "busybox"})])])
        fsm.apply(ops.JOB_REGISTER, codec.encode(ops.JobRegister(job=job)))
        batch = [Allocation(id=f"a{j}-{k}", job_id=f"j{j}", node_id=f"n{(j + k) % nodes}", task_group="g", name=f"j{j}.g[{k}]")
                 for k in range(20)]
        fsm.apply(ops.PLAN_APPLY, codec.encode(ops.PlanApply(job_id=f"j{j}", allocs=batch)))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0.0


async def run(allocs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="shoal-snap-") as tmp:
        fsm = FSM()
        t = time.monotonic()
        load_state(fsm, allocs)
        load_s = time.monotonic() - t
        node = RaftNode(RaftConfig(bind=f"127.0.0.1:{free_port()}", peers=[], data_dir=Path(tmp), min_timeout=0.4,
                                   max_timeout=0.8, compaction_min_entries=300, compaction_min_time=3600), fsm)
        node.start(asyncio.get_running_loop())
        while not node.is_leader:
            await asyncio.sleep(0.02)
        before, during = [], []
        i = 0
        deadline = time.monotonic() + 120
        while node.last_snapshot_seconds == 0.0 and time.monotonic() < deadline:
            t = time.perf_counter()
            await node.submit(ops.JOB_REGISTER, ops.JobRegister(job=Job(id=f"w{i}", groups=[])))
            dt = time.perf_counter() - t
            (during if node._snap_status else before).append(dt)  # noqa: SLF001  (bench reads the state)
            i += 1
        snap_s = node.last_snapshot_seconds
        node.stop()
    return {
        "allocs": allocs,
        "state_load_seconds": round(load_s, 2),
        "snapshot_seconds": round(snap_s, 3),
        "writes_during_snapshot": len(during),
        "before_p99_ms": round(1000 * pct(before, 0.99), 2),
        "during_p50_ms": round(1000 * pct(during, 0.5), 2),
        "during_p99_ms": round(1000 * pct(during, 0.99), 2),
        "during_max_ms": round(1000 * max(during, default=0.0), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--allocs", type=int, default=100_000)
    args = ap.parse_args()
    f = asyncio.run(run(args.allocs))
    print(f"snapshot of {f['allocs']} allocations took {f['snapshot_seconds']}s off the Raft thread; "
          f"{f['writes_during_snapshot']} writes committed meanwhile, p99 {f['during_p99_ms']} ms "
          f"(max {f['during_max_ms']} ms; before: p99 {f['before_p99_ms']} ms)")
    print(json.dumps(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
