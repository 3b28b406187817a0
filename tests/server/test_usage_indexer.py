"""The servers' scheduler usage index: kept by the FSM, consistent with snapshots, rebuilt on restore."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Job, Network, Port, Resources, Task, TaskGroup
from shoal.jobs.structs import AllocatedPort, AllocUpdate, Allocation, Evaluation, Node, NodeResources
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.scheduler import schedule
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


def test_a_nodes_dynamic_port_range_survives_the_fsm_and_bounds_its_ports():
    fsm = FSM()
    indexer = UsageIndexer(fsm.store)
    fsm.add_indexer(indexer)
    ranged = Node(id="n9", name="n9", status="ready", resources=NodeResources(cpu=4000, memory=8192, disk=100_000),
                  drivers=["exec"], attributes={"kernel.name": "linux"},
                  reserved_ports=[22, 30001], min_dynamic_port=30000, max_dynamic_port=30003)
    apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=ranged))
    stored = fsm.store.snapshot().node("n9")
    assert (stored.min_dynamic_port, stored.max_dynamic_port, stored.reserved_ports) == (30000, 30003, [22, 30001])
    other = FSM()
    other.restore(list(fsm.store.dump_records()))
    assert other.store.snapshot().node("n9").max_dynamic_port == 30003
    # a record written before nodes had a range decodes to Nomad's default one
    old = codec.to_plain(ranged)
    del old["min_dynamic_port"], old["max_dynamic_port"]
    legacy = codec.from_plain(Node, old)
    assert (legacy.min_dynamic_port, legacy.max_dynamic_port) == (20000, 32000)

    group = TaskGroup(name="g", count=4, networks=[Network(ports=[Port("http")])],
                      tasks=[Task(name="t", driver="exec", resources=Resources(cpu=100, memory=64))])
    job = Job(id="web", groups=[group], datacenters=["*"])
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job))
    plan = schedule(indexer.state(), Evaluation(id="e1", job_id="web"), now=1.0)
    values = sorted(p.value for a in plan.node_allocation["n9"] for p in a.ports)
    assert values == [30000, 30002, 30003]  # inside the range, around the reserved port
    assert plan.failed_tg_allocs["g"].dimension_exhausted == {"network: dynamic port selection failed": 1}
