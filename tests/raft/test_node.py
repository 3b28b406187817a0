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


def test_followers_apply_every_commit_without_further_writes(tmp_path: Path):
    """The leader holds its commit notification for the next entry (``COMMIT_NOTIFY_DELAY``); when none
    comes, the notification still goes out: followers at rest apply all that was committed."""
    binds = [f"127.0.0.{i}:{free_port()}" for i in (1, 2, 3)]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        nodes = [RaftNode(RaftConfig(bind=b, peers=[p for p in binds if p != b], data_dir=tmp_path / str(i),
                                     min_timeout=0.4, max_timeout=0.8, leader_fallback_timeout=1.0), FSM())
                 for i, b in enumerate(binds)]
        for n in nodes:
            n.start(loop)
        try:
            deadline = time.monotonic() + 20
            while not any(n.is_leader for n in nodes):
                assert time.monotonic() < deadline, "no leader"
                await asyncio.sleep(0.02)
            leader = next(n for n in nodes if n.is_leader)
            followers = [n for n in nodes if n is not leader]
            await asyncio.gather(*(leader.submit(ops.JOB_REGISTER, job(i)) for i in range(50)))
            for i in range(50, 55):  # one at a time: each the last entry for a while
                index, _ = await leader.submit(ops.JOB_REGISTER, job(i))
                deadline = time.monotonic() + 5
                while min(f.fsm.store.index for f in followers) < index:
                    assert time.monotonic() < deadline, f"followers stopped at {[f.fsm.store.index for f in followers]}, committed {index}"
                    await asyncio.sleep(0.001)
            for f in followers:
                assert len(f.fsm.store.snapshot().jobs()) == 55
        finally:
            for n in nodes:
                n.stop()

    asyncio.run(main())
