"""The leader managers on leadership flips (gain, lose, gain again), over a real single-node Raft and FSM:
each manager rebuilt from the replicated state on every gain, nothing of them left running after a loss.

The flip is driven by calling ``LeaderDuties.start``/``stop`` as ``Server`` does on a leadership change
(the Raft node itself stays leader). Nothing sleeps: the tests wait on the state watch for what they expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shoal import codec
from shoal.jobs.model import Job
from shoal.jobs.structs import EVAL_BLOCKED, EVAL_COMPLETE, EVAL_PENDING, NODE_DOWN, Allocation, Evaluation, Node, NodeResources
from shoal.raft import ops
from shoal.raft.change import Change
from shoal.raft.fsm import FSM
from shoal.raft.node import RaftConfig, RaftNode
from shoal.raft.state import StateSnapshot
from shoal.server.leader import LeaderDuties
from shoal.server.leader_manager import LeaderContext, LeaderManager
from shoal.server.usage import UsageIndexer
from shoal.server.watch import TOPICS, StateWatch
from support.cluster import free_port


@dataclass
class Replicated:
    fsm: FSM
    raft: RaftNode
    watch: StateWatch
    usage: UsageIndexer

    def duties(self, *, workers: int = 2, heartbeat_ttl: float = 60.0) -> LeaderDuties:
        return LeaderDuties(self.fsm.store, self.raft, self.watch, self.usage, workers=workers, heartbeat_ttl=heartbeat_ttl)

    async def until(self, what: str, done: Callable[[StateSnapshot], bool], timeout: float = 20.0) -> StateSnapshot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            snap = self.fsm.store.snapshot()
            if done(snap):
                return snap
            left = deadline - loop.time()
            assert left > 0, f"timed out waiting for {what}"
            await self.watch.wait(TOPICS, left, snap.index)


@contextlib.asynccontextmanager
async def replicated(tmp_path: Path) -> AsyncIterator[Replicated]:
    """A server's state machinery (FSM, state watch, usage index) under one real Raft node, once it leads."""
    loop = asyncio.get_running_loop()
    fsm = FSM()
    watch = StateWatch(loop)
    fsm.listeners.append(watch.on_apply)
    usage = UsageIndexer(fsm.store)
    fsm.add_indexer(usage)
    elected = asyncio.Event()
    raft = RaftNode(RaftConfig(bind=f"127.0.0.1:{free_port()}", peers=[], data_dir=tmp_path, min_timeout=0.4,
                               max_timeout=0.8), fsm, on_leadership=lambda leading: elected.set() if leading else None)
    raft.start(loop)
    try:
        await asyncio.wait_for(elected.wait(), 20)
        yield Replicated(fsm, raft, watch, usage)
    finally:
        raft.stop()


def leading(tmp_path: Path, scenario: Callable[[Replicated], Awaitable[None]]) -> None:
    async def main() -> None:
        async with replicated(tmp_path) as r:
            await scenario(r)

    asyncio.run(main())


def node(node_id: str) -> Node:
    return Node(id=node_id, name=node_id, status="ready", drivers=["raw_exec"],
                resources=NodeResources(cpu=4000, memory=8192, disk=100000))


def job(job_id: str) -> Job:
    return codec.from_plain(Job, {"id": job_id, "groups": [{"name": "g", "count": 1, "tasks": [
        {"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}, "resources": {"cpu": 500, "memory": 256}}]}]})


async def register(r: Replicated, job_id: str) -> Evaluation:
    j = job(job_id)
    ev = Evaluation.for_job(j, f"eval-{job_id}", "job-register", time.time(), status=EVAL_PENDING)
    await r.raft.submit(ops.JOB_REGISTER, ops.JobRegister(job=j, eval=ev, now=ev.create_time))
    return ev


async def blocked_eval(r: Replicated, job_id: str) -> Evaluation:
    ev = Evaluation.for_job(job(job_id), f"blocked-{job_id}", "queued-allocs", time.time(), status=EVAL_BLOCKED)
    await r.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[ev]))
    return ev


def status(snap: StateSnapshot, eval_id: str) -> str:
    ev = snap.eval(eval_id)
    return ev.status if ev is not None else ""


def live_nodes_of(snap: StateSnapshot, job_id: str) -> set[str]:
    return {a.node_id for a in snap.allocs_by_job("default", job_id) if not a.terminal()}


def assert_nothing_runs(leader: LeaderDuties) -> None:
    assert not leader.running
    assert leader.scheduling.running_workers == 0 and len(leader.scheduling.broker) == 0
    assert leader.blocked.evals() == [] and not leader.blocked.busy
    assert leader.heartbeats.armed() == set() and leader.heartbeats.marking_down == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


def test_every_manager_is_rebuilt_from_the_state_on_each_gain_and_stops_with_nothing_left(tmp_path: Path):
    async def scenario(r: Replicated) -> None:
        for n in ("n1", "n2"):
            await r.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node(n)))
        web = await register(r, "web")
        big = await blocked_eval(r, "big")  # no capacity change follows: it stays blocked
        leader = r.duties()

        await leader.start()  # gained
        assert leader.running and leader.scheduling.running_workers == 2
        assert leader.heartbeats.armed() == {"n1", "n2"}  # every ready node: a full TTL to reach us
        assert [e.id for e in leader.blocked.evals()] == [big.id]
        # The pending evaluation was committed before the gain: only the rebuild can have enqueued it.
        snap = await r.until("web scheduled", lambda s: status(s, web.id) == EVAL_COMPLETE)
        assert len(live_nodes_of(snap, "web")) == 1

        await leader.stop()  # lost
        assert_nothing_runs(leader)
        # Committed while another server leads: this one's managers do not see it happen...
        await r.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node("n3")))
        api = await register(r, "api")
        big2 = await blocked_eval(r, "big2")
        await r.raft.barrier()
        assert status(r.fsm.store.snapshot(), api.id) == EVAL_PENDING  # no worker ran

        await leader.start()  # gained again: ...they find it in the state
        assert leader.heartbeats.armed() == {"n1", "n2", "n3"}
        assert {e.id for e in leader.blocked.evals()} == {big.id, big2.id}
        snap = await r.until("api scheduled", lambda s: status(s, api.id) == EVAL_COMPLETE)
        assert len(live_nodes_of(snap, "api")) == 1
        assert len(live_nodes_of(snap, "web")) == 1  # web's evaluation was done: not run again

        await leader.stop()
        assert_nothing_runs(leader)

    leading(tmp_path, scenario)


def test_a_node_that_misses_its_heartbeat_after_a_gain_is_marked_down_with_an_evaluation_of_its_job(tmp_path: Path):
    async def scenario(r: Replicated) -> None:
        await r.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node("n1")))
        web = await register(r, "web")
        placed = Allocation(id="a1", name="web.g[0]", job_id="web", task_group="g", node_id="n1", eval_id=web.id)
        done = Evaluation.for_job(job("web"), web.id, "job-register", web.create_time, status=EVAL_COMPLETE)
        await r.raft.submit(ops.PLAN_APPLY, ops.PlanApply(eval_id=web.id, job_id="web", allocs=[placed], evals=[done]))
        leader = r.duties(workers=1, heartbeat_ttl=0.05)  # the node never heartbeats this leader

        await leader.start()
        assert leader.heartbeats.armed() == {"n1"}
        snap = await r.until("n1 down", lambda s: s.node("n1").status == NODE_DOWN)
        [lost] = [e for e in snap.evals_by_job("default", "web") if e.triggered_by == "node-update"]
        assert lost.node_id == "n1"
        # The broker hands it to a worker: nowhere to place the lost allocation, so web is blocked.
        snap = await r.until("web blocked", lambda s: status(s, lost.id) == EVAL_COMPLETE)
        assert {e.status for e in snap.evals_by_job("default", "web") if e.id not in (web.id, lost.id)} == {EVAL_BLOCKED}
        await leader.stop()
        assert_nothing_runs(leader)

    leading(tmp_path, scenario)


def test_a_blocked_evaluation_rebuilt_after_a_flip_runs_when_capacity_appears(tmp_path: Path):
    async def scenario(r: Replicated) -> None:
        web = await register(r, "web")  # no node yet
        leader = r.duties()

        await leader.start()
        snap = await r.until("web blocked", lambda s: status(s, web.id) == EVAL_COMPLETE)
        blocked_id = snap.eval(web.id).blocked_eval
        assert status(snap, blocked_id) == EVAL_BLOCKED
        await leader.stop()

        await leader.start()
        assert [e.id for e in leader.blocked.evals()] == [blocked_id]
        await r.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node("n1")))  # capacity: it runs again
        snap = await r.until("web placed", lambda s: live_nodes_of(s, "web") == {"n1"})
        assert status(snap, blocked_id) == EVAL_COMPLETE
        assert leader.blocked.evals() == []
        await leader.stop()
        assert_nothing_runs(leader)

    leading(tmp_path, scenario)


class Recorder(LeaderManager):
    """A manager that writes down what the list tells it (and, starting, may commit something)."""

    name = "recorder"

    def __init__(self, label: str, seen: list[tuple[str, str, object]], write: Evaluation | None = None) -> None:
        self.label = label
        self.seen = seen
        self.write = write

    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        self.seen.append((self.label, "start", snap.index))
        if self.write is not None:  # committed while the list is still starting
            await ctx.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[self.write]))

    def on_changes(self, changes: list[Change]) -> None:
        self.seen.append((self.label, "changes", [c.key for c in changes]))

    async def stop(self) -> None:
        self.seen.append((self.label, "stop", None))


def test_managers_start_in_order_hear_each_change_after_their_snapshot_once_and_stop_in_reverse(tmp_path: Path):
    def done(eval_id: str) -> Evaluation:
        return Evaluation.for_job(job("web"), eval_id, "job-register", time.time(), status=EVAL_COMPLETE)

    async def scenario(r: Replicated) -> None:
        seen: list[tuple[str, str, object]] = []
        leader = r.duties(workers=0)
        leader.managers = (*leader.managers, Recorder("a", seen, write=done("during")), Recorder("b", seen))
        # Committed together with the leader's barrier, after the list subscribed: in the snapshot, so not
        # told again as a change.
        await asyncio.gather(leader.start(), r.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[done("before")])))
        snap = r.fsm.store.snapshot()
        assert snap.eval("before") is not None and snap.eval("during") is not None
        index = seen[0][2]
        assert seen == [("a", "start", index), ("b", "start", index),
                        ("a", "changes", ["during"]), ("b", "changes", ["during"])]
        await r.raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=[done("after")]))
        await leader.stop()
        assert seen[4:] == [("a", "changes", ["after"]), ("b", "changes", ["after"]), ("b", "stop", None),
                            ("a", "stop", None)]

    leading(tmp_path, scenario)


def test_gossip_marks_a_node_down_only_once_its_own_heartbeats_confirm_the_silence(tmp_path: Path):
    async def scenario(r: Replicated) -> None:
        for n in ("n1", "n2"):
            await r.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node(n)))
        leader = r.duties(workers=1, heartbeat_ttl=60.0)
        await leader.start()
        hb = leader.heartbeats
        assert hb.confirm_silence == 30.0
        # n1 just heartbeated: a report only brings its timer to 30 s of silence, not down now
        hb.heartbeat("n1")
        wait = leader.reported_dead("n1")
        assert wait is not None and 29.0 < wait <= 30.0
        assert r.fsm.store.snapshot().node("n1").status != NODE_DOWN
        # n2 has been silent longer than the confirmation needs: the report marks it down at once
        hb.confirm_silence = 0.0
        assert leader.reported_dead("n2") == 0.0
        snap = await r.until("n2 down", lambda s: s.node("n2").status == NODE_DOWN)
        assert snap.node("n1").status != NODE_DOWN
        assert leader.reported_dead("n2") is None and leader.reported_dead("ghost") is None  # not watched
        await leader.stop()
        assert_nothing_runs(leader)

    leading(tmp_path, scenario)
