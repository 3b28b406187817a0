"""One real PySyncObj node: commits, group commit, snapshots that survive a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shoal.jobs.model import Job, Task, TaskGroup
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.raft.node import RaftConfig, RaftNode
from support.cluster import free_port


def job(i: int) -> ops.JobRegister:
    return ops.JobRegister(job=Job(id=f"j{i}", groups=[TaskGroup(name="g", tasks=[Task(name="t", driver="raw_exec")])]))


async def _leader(node: RaftNode) -> None:
    deadline = time.monotonic() + 10
    while not node.is_leader:
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.02)


def test_group_commit_snapshot_and_restart(tmp_path: Path):
    cfg = RaftConfig(bind=f"127.0.0.1:{free_port()}", peers=[], data_dir=tmp_path, min_timeout=0.4, max_timeout=0.8,
                     compaction_min_entries=100, compaction_min_time=0.5)

    async def first() -> int:
        node = RaftNode(cfg, FSM())
        node.start(asyncio.get_running_loop())
        try:
            await _leader(node)
            results = await asyncio.gather(*(node.submit(ops.JOB_REGISTER, job(i)) for i in range(400)))
            assert sorted(i for i, _ in results) == list(range(1, 401))  # one index per write, none lost
            await node.submit(ops.JOB_REGISTER, job(1000))
            deadline = time.monotonic() + 20
            while node.last_snapshot_seconds == 0.0:  # compaction runs in the background
                assert time.monotonic() < deadline, "no snapshot was written"
                await node.submit(ops.NOOP, {})
                await asyncio.sleep(0.05)
            for i in range(1001, 1011):  # written after the snapshot: replayed from the journal
                await node.submit(ops.JOB_REGISTER, job(i))
            return node.fsm.store.index
        finally:
            node.stop()

    index = asyncio.run(first())
    assert (tmp_path / "raft.snapshot").exists()

    async def second() -> None:
        fsm = FSM()
        node = RaftNode(cfg, fsm)
        node.start(asyncio.get_running_loop())
        try:
            await _leader(node)
            await node.barrier()
            snap = fsm.store.snapshot()
            assert len(snap.jobs()) == 411
            assert snap.index >= index
        finally:
            node.stop()

    asyncio.run(second())
