"""Overlay subnet leases in the FSM: deterministic, never twice, kept across re-registration
and snapshots, released only when the node is purged."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.structs import Node
from shoal.raft import ops
from shoal.raft.fsm import FSM


def apply(fsm: FSM, op: str, payload):
    return fsm.apply(op, codec.encode(payload))


def register(fsm: FSM, node_id: str) -> None:
    assert not apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=Node(id=node_id, name=node_id))).error


def lease(fsm: FSM, node_id: str, underlay: str, network: str = "default", cidr: str = "10.200.0.0/16", prefix: int = 24):
    return apply(fsm, ops.NETWORK_LEASE, ops.NetworkLease(network=network, node_id=node_id, underlay=underlay,
                                                          cidr=cidr, subnet_prefix=prefix))


def test_each_node_gets_its_own_subnet_and_keeps_it():
    fsm = FSM()
    for n in ("a", "b"):
        register(fsm, n)
    ra, rb = lease(fsm, "a", "198.18.0.2"), lease(fsm, "b", "198.18.0.3")
    assert (ra.value["subnet"], rb.value["subnet"]) == ("10.200.0.0/24", "10.200.1.0/24")
    assert ra.value["created"] and {c.topic for c in ra.changes} == {"Network"}
    again = lease(fsm, "a", "198.18.0.2")
    assert again.value == {"subnet": "10.200.0.0/24", "created": False} and not again.changes
    register(fsm, "a")  # an agent restarting re-registers: the lease stays
    moved = lease(fsm, "a", "198.18.0.9")
    assert moved.value["subnet"] == "10.200.0.0/24" and moved.changes[0].obj.underlay == "198.18.0.9"


def test_named_networks_lease_from_the_same_cidr_without_overlap():
    fsm = FSM()
    register(fsm, "a")
    assert lease(fsm, "a", "198.18.0.2").value["subnet"] == "10.200.0.0/24"
    assert lease(fsm, "a", "198.18.0.2", network="frontend").value["subnet"] == "10.200.1.0/24"
    snap = fsm.store.snapshot()
    assert [le.network for le in snap.leases()] == ["default", "frontend"]
    assert [le.subnet for le in snap.leases("frontend")] == ["10.200.1.0/24"]


def test_errors_are_values_a_full_overlay_an_unknown_node_a_bad_cidr():
    fsm = FSM()
    assert "not registered" in lease(fsm, "ghost", "198.18.0.2").error
    for n in ("a", "b", "c"):
        register(fsm, n)
    assert not lease(fsm, "a", "x", cidr="10.200.0.0/23").error
    assert not lease(fsm, "b", "y", cidr="10.200.0.0/23").error
    assert "no free /24" in lease(fsm, "c", "z", cidr="10.200.0.0/23").error
    assert "overlay CIDR '10.200.0.1/23'" in lease(fsm, "c", "z", cidr="10.200.0.1/23").error


def test_purging_a_node_releases_its_leases_for_the_next_node():
    fsm = FSM()
    register(fsm, "a")
    lease(fsm, "a", "198.18.0.2")
    lease(fsm, "a", "198.18.0.2", network="frontend")
    r = apply(fsm, ops.NODE_PURGE, ops.NodePurge(node_id="a"))
    assert sorted(r.value["released"]) == ["10.200.0.0/24", "10.200.1.0/24"]
    snap = fsm.store.snapshot()
    assert snap.node("a") is None and snap.leases() == []
    assert "not found" in apply(fsm, ops.NODE_PURGE, ops.NodePurge(node_id="a")).error
    register(fsm, "b")
    assert lease(fsm, "b", "198.18.0.3").value["subnet"] == "10.200.0.0/24"


def test_leases_survive_a_snapshot_round_trip():
    fsm = FSM()
    register(fsm, "a")
    lease(fsm, "a", "198.18.0.2")
    other = FSM()
    other.store.load(fsm.store.dump())
    assert other.store.snapshot().lease("default", "a").subnet == "10.200.0.0/24"
    register(other, "b")
    assert lease(other, "b", "198.18.0.3").value["subnet"] == "10.200.1.0/24"
