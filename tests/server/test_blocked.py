"""Which committed changes unblock blocked evaluations, and what unblocking writes (pure)."""

from __future__ import annotations

from shoal.jobs.structs import (ALLOC_COMPLETE, ALLOC_RUNNING, DESIRED_STOP, EVAL_BLOCKED, EVAL_PENDING, NODE_DOWN,
                                NODE_READY, Allocation, Evaluation, Node)
from shoal.raft.fsm import Change
from shoal.server.blocked import capacity_changed, unblocked


def node_change(status: str, **fields: object) -> Change:
    return Change(7, "Node", "NodeStatusUpdated", "n1", Node(id="n1", status=status, **fields))


def alloc_change(**fields: object) -> Change:
    return Change(7, "Allocation", "AllocationUpdated", "a1", Allocation(id="a1", **fields))


def test_capacity_changes_when_a_node_can_take_work_or_an_allocation_is_done():
    assert capacity_changed([node_change(NODE_READY)])
    assert capacity_changed([alloc_change(client_status=ALLOC_COMPLETE)])
    assert capacity_changed([alloc_change(desired_status=DESIRED_STOP)])
    assert capacity_changed([alloc_change(client_status=ALLOC_RUNNING), node_change(NODE_READY)])


def test_no_capacity_from_nodes_that_take_no_work_running_allocations_or_deletions():
    assert not capacity_changed([node_change(NODE_DOWN)])
    assert not capacity_changed([node_change(NODE_READY, drain=True)])
    assert not capacity_changed([node_change(NODE_READY, eligible=False)])
    assert not capacity_changed([alloc_change(client_status=ALLOC_RUNNING)])
    assert not capacity_changed([Change(7, "Node", "NodeDeregistered", "n1", None)])
    assert not capacity_changed([Change(7, "Job", "JobRegistered", "web", None)])


def test_unblocked_evaluations_go_back_to_pending_and_keep_who_they_are():
    blocked = [Evaluation(id="b1", job_id="web", status=EVAL_BLOCKED, triggered_by="queued-allocs", modify_time=1.0)]
    [again] = unblocked(blocked, now=9.0)
    assert (again.id, again.job_id, again.triggered_by) == ("b1", "web", "queued-allocs")
    assert (again.status, again.status_description, again.modify_time) == (EVAL_PENDING, "capacity changed", 9.0)
    assert blocked[0].status == EVAL_BLOCKED  # records are replaced, not changed
