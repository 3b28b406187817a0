"""What marking a node down (or draining it) asks the scheduler to do: one evaluation per affected job (pure)."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Job
from shoal.jobs.structs import DESIRED_STOP, EVAL_PENDING, Allocation, Node
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.server.heartbeats import node_evals


def test_one_evaluation_per_job_with_live_allocations_on_the_node():
    fsm = FSM()
    assert not fsm.apply(ops.NODE_REGISTER, codec.encode(ops.NodeRegister(node=Node(id="n1", status="ready")))).error
    batch = codec.from_plain(Job, {"id": "nightly", "type": "batch", "priority": 70, "groups": [{"name": "g", "tasks": [
        {"name": "t", "driver": "raw_exec"}]}]})
    assert not fsm.apply(ops.JOB_REGISTER, codec.encode(ops.JobRegister(job=batch))).error
    allocs = [
        Allocation(id="w1", job_id="web", node_id="n1"),
        Allocation(id="w2", job_id="web", node_id="n1"),  # the same job: no second evaluation
        Allocation(id="b1", job_id="nightly", node_id="n1"),
        Allocation(id="s1", job_id="stopped", node_id="n1", desired_status=DESIRED_STOP),  # terminal
        Allocation(id="o1", job_id="other", node_id="n2"),
    ]
    assert not fsm.apply(ops.PLAN_APPLY, codec.encode(ops.PlanApply(allocs=allocs))).error

    evals = node_evals(fsm.store.snapshot(), "n1", "node-update", now=3.0)
    got = {e.job_id: (e.type, e.priority, e.triggered_by, e.node_id, e.status, e.create_time) for e in evals}
    assert got == {
        "web": ("service", 50, "node-update", "n1", EVAL_PENDING, 3.0),  # its job is gone: the defaults
        "nightly": ("batch", 70, "node-update", "n1", EVAL_PENDING, 3.0),
    }
    assert len({e.id for e in evals}) == 2
