"""The service catalog in the FSM: an agent sets an allocation's registrations; they go with a
stop, a terminal client status, the node going down or being purged, and a late write never
brings them back. Snapshots keep them."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.structs import ALLOC_RUNNING, NODE_DOWN, AllocUpdate, Allocation, Node, ServiceRegistration
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.raft.state import StateStore


def apply(fsm: FSM, op: str, payload):
    result = fsm.apply(op, codec.encode(payload))
    assert not result.error, result.error
    return result


def cluster() -> FSM:
    fsm = FSM()
    for n in ("n1", "n2"):
        apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=Node(id=n, name=n)))
    allocs = [Allocation(id=f"a{i}", namespace="default", job_id="web", task_group="web", node_id=node,
                         desired_status="run") for i, node in ((1, "n1"), (2, "n2"), (3, "n1"))]
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=allocs))
    return fsm


def reg(alloc_id: str, name: str = "web", port: int = 8080, healthy: bool = True, **kw) -> ServiceRegistration:
    return ServiceRegistration(id=f"_shoal-{alloc_id}-web-{name}-{port}", service_name=name, alloc_id=alloc_id,
                               address=f"10.200.0.{alloc_id[-1]}", port=port, healthy=healthy, **kw)


def sync(fsm: FSM, node_id: str, sets: dict[str, list[ServiceRegistration]]):
    return apply(fsm, ops.SERVICE_SYNC, ops.ServiceSync(
        node_id=node_id, allocs=[ops.AllocServices(a, regs) for a, regs in sets.items()]))


def names(fsm: FSM) -> list[tuple[str, str, bool]]:
    return [(r.alloc_id, r.service_name, r.healthy) for r in fsm.store.snapshot().services()]


def test_a_sync_sets_exactly_the_allocations_registrations():
    fsm = cluster()
    r = sync(fsm, "n1", {"a1": [reg("a1"), reg("a1", "metrics", 9100)], "a3": [reg("a3")]})
    assert r.value == {"refused": []}
    assert {c.type for c in r.changes} == {"ServiceRegistration"} and len(r.changes) == 3
    assert names(fsm) == [("a1", "metrics", True), ("a1", "web", True), ("a3", "web", True)]
    # identity comes from the state: the job, namespace and node of the allocation
    (got,) = fsm.store.snapshot().services(name="metrics")
    assert (got.job_id, got.namespace, got.node_id, got.create_index) == ("web", "default", "n1", r.index)
    # a second sync with one service fewer and a health change
    r2 = sync(fsm, "n1", {"a1": [reg("a1", healthy=False)]})
    assert sorted(c.type for c in r2.changes) == ["ServiceDeregistration", "ServiceRegistration"]
    assert names(fsm) == [("a1", "web", False), ("a3", "web", True)]
    changed = fsm.store.snapshot().services_by_alloc("a1")[0]
    assert changed.create_index == r.index and changed.modify_index == r2.index


def test_an_unchanged_sync_changes_nothing():
    fsm = cluster()
    sync(fsm, "n1", {"a1": [reg("a1")]})
    before = fsm.store.snapshot()
    again = sync(fsm, "n1", {"a1": [reg("a1")]})
    assert again.changes == [] and before.table_index("Service") == fsm.store.snapshot().table_index("Service")


def test_only_the_allocations_own_node_may_register_it_and_unknown_ones_are_refused():
    fsm = cluster()
    r = sync(fsm, "n2", {"a1": [reg("a1")], "ghost": [reg("ghost")], "a2": [reg("a2")]})
    assert r.value == {"refused": ["a1", "ghost"]} and names(fsm) == [("a2", "web", True)]


def test_a_stop_in_a_plan_removes_the_registrations_and_a_late_sync_cannot_restore_them():
    fsm = cluster()
    sync(fsm, "n1", {"a1": [reg("a1")], "a3": [reg("a3")]})
    r = apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", stops=[ops.AllocStop(id="a1")]))
    assert ("Service", "ServiceDeregistration") in {(c.topic, c.type) for c in r.changes}
    assert names(fsm) == [("a3", "web", True)]
    late = sync(fsm, "n1", {"a1": [reg("a1")]})
    assert late.value == {"refused": ["a1"]} and names(fsm) == [("a3", "web", True)]
    # an empty set is always accepted: deregistering needs no live allocation
    assert sync(fsm, "n1", {"a1": []}).value == {"refused": []}


def test_a_terminal_client_status_removes_them():
    fsm = cluster()
    sync(fsm, "n1", {"a1": [reg("a1")], "a3": [reg("a3")]})
    apply(fsm, ops.ALLOC_CLIENT_UPDATE, ops.AllocClientUpdate(node_id="n1", updates=[
        AllocUpdate(id="a1", client_status=ALLOC_RUNNING), AllocUpdate(id="a3", client_status="complete")]))
    assert names(fsm) == [("a1", "web", True)]


def test_a_node_going_down_or_purged_takes_its_registrations_with_it():
    fsm = cluster()
    sync(fsm, "n1", {"a1": [reg("a1")], "a3": [reg("a3")]})
    sync(fsm, "n2", {"a2": [reg("a2")]})
    apply(fsm, ops.NODE_STATUS, ops.NodeStatus(node_id="n1", status=NODE_DOWN))
    assert names(fsm) == [("a2", "web", True)]
    assert sync(fsm, "n1", {"a1": [reg("a1")]}).value == {"refused": ["a1"]}
    apply(fsm, ops.NODE_PURGE, ops.NodePurge(node_id="n2"))
    assert names(fsm) == []


def test_snapshots_keep_the_catalog_and_its_index():
    fsm = cluster()
    sync(fsm, "n1", {"a1": [reg("a1", tags=["v1"])]})
    store = StateStore()
    store.load_records(fsm.store.dump_records())
    snap = store.snapshot()
    assert [(r.id, r.tags) for r in snap.services()] == [("_shoal-a1-web-web-8080", ["v1"])]
    assert [r.id for r in snap.services_by_alloc("a1")] == ["_shoal-a1-web-web-8080"]
    store.delete_service("_shoal-a1-web-web-8080")
    assert store.snapshot().services_by_alloc("a1") == []
