"""The servers' scheduler usage index: kept by the FSM, consistent with snapshots, rebuilt on restore."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Resources
from shoal.jobs.structs import AllocatedPort, AllocUpdate, Allocation, Node, NodeResources
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.scheduler.usage import UsageIndex
from shoal.server.usage import UsageIndexer


def apply(fsm: FSM, op: str, payload) -> None:
    r = fsm.apply(op, codec.encode(payload))
    assert not r.error, r.error


def node(i: int, cpu: int = 4000, memory: int = 8192) -> Node:
    return Node(id=f"n{i}", name=f"n{i}", status="ready", resources=NodeResources(cpu=cpu, memory=memory))


def alloc(i: int, node_id: str, cpu: int = 500, memory: int = 256, port: int = 0) -> Allocation:
    return Allocation(id=f"a{i}", name=f"web.g[{i}]", job_id="web", task_group="g", node_id=node_id,
                      resources=Resources(cpu=cpu, memory=memory),
                      ports=[AllocatedPort(label="http", value=port)] if port else [])


def usage_of(index: UsageIndex, node_id: str) -> tuple[int, int, dict[int, int], int]:
    u = index.node_usage(node_id)
    return u.cpu, u.memory, dict(u.ports), u.allocs


def cluster() -> tuple[FSM, UsageIndexer]:
    fsm = FSM()
    indexer = UsageIndexer(fsm.store)
    fsm.add_indexer(indexer)
    for i in range(3):
        apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=node(i)))
    return fsm, indexer


def test_the_index_follows_every_write_and_matches_a_rebuild():
    fsm, indexer = cluster()
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=[alloc(1, "n0", port=8080), alloc(2, "n0"),
                                                                    alloc(3, "n1", cpu=1000)]))
    assert usage_of(indexer.index, "n0") == (1000, 512, {8080: 1}, 2)
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(stops=[ops.AllocStop(id="a1", desired_description="stopped")]))
    apply(fsm, ops.ALLOC_CLIENT_UPDATE, ops.AllocClientUpdate(node_id="n1", updates=[
        AllocUpdate(id="a3", client_status="failed")]))
    assert usage_of(indexer.index, "n0") == (500, 256, {}, 1)
    assert usage_of(indexer.index, "n1") == (0, 0, {}, 0)
    rebuilt = UsageIndex(fsm.store.snapshot().nodes(), fsm.store.snapshot().allocs())
    for n in ("n0", "n1", "n2"):
        assert usage_of(indexer.index, n) == usage_of(rebuilt, n)
    live, fresh = list(indexer.index.candidates(100, 100)), list(rebuilt.candidates(100, 100))
    assert live[0] == fresh[0] == "n0"  # the used node first (best fit), then the empty ones (any order)
    assert sorted(live) == sorted(fresh)


def test_a_workers_state_does_not_move_with_later_writes():
    fsm, indexer = cluster()
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=[alloc(1, "n0")]))
    state = indexer.state()
    order = list(state.usage_index().candidates(100, 100))
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=[alloc(2, "n0", cpu=3000), alloc(3, "n2")]))
    assert state.snapshot.index == 4
    assert usage_of(state.usage_index(), "n0") == (500, 256, {}, 1)  # as of the snapshot
    assert [a.id for a in state.allocs_by_node("n0")] == ["a1"]
    assert list(state.usage_index().candidates(100, 100)) == order
    assert usage_of(indexer.index, "n0") == (3500, 512, {}, 2)  # the live index moved on


def test_restoring_a_snapshot_file_rebuilds_the_index():
    fsm, indexer = cluster()
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=[alloc(1, "n2", cpu=700)]))
    records = list(fsm.store.dump_records())
    other = FSM()
    fresh = UsageIndexer(other.store)
    other.add_indexer(fresh)
    other.restore(records)
    assert usage_of(fresh.index, "n2") == (700, 256, {}, 1)
    assert fresh.index.node_count() == 3
