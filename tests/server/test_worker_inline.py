"""Which evaluations a scheduler worker plans on the event loop, and which on a thread."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation, Node, NodeResources
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.server.usage import UsageIndexer
from shoal.server.worker import INLINE_MAX_ALLOCS, INLINE_MAX_NODES, plans_inline


def cluster(nodes: int) -> tuple[FSM, UsageIndexer]:
    fsm = FSM()
    indexer = UsageIndexer(fsm.store)
    fsm.add_indexer(indexer)
    for i in range(nodes):
        node = Node(id=f"n{i}", name=f"n{i}", status="ready", drivers=["raw_exec"],
                    resources=NodeResources(cpu=4000, memory=8192, disk=100000))
        assert not fsm.apply(ops.NODE_REGISTER, codec.encode(ops.NodeRegister(node=node))).error
    return fsm, indexer


def register(fsm: FSM, job_id: str, count: int, job_type: str = "service") -> Evaluation:
    job = codec.from_plain(Job, {"id": job_id, "type": job_type, "groups": [{"name": "g", "count": count, "tasks": [
        {"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}}]}]})
    ev = Evaluation.for_job(job, f"eval-{job_id}", "job-register", 1.0)
    assert not fsm.apply(ops.JOB_REGISTER, codec.encode(ops.JobRegister(job=job, eval=ev, now=1.0))).error
    return ev


def test_a_small_job_on_a_small_cluster_is_planned_on_the_loop():
    fsm, indexer = cluster(3)
    ev = register(fsm, "web", 3)
    assert plans_inline(indexer.state(), ev)
    ev = register(fsm, "edge", INLINE_MAX_ALLOCS)
    assert plans_inline(indexer.state(), ev)


def test_many_allocations_wanted_or_held_go_to_a_thread():
    fsm, indexer = cluster(3)
    ev = register(fsm, "big", INLINE_MAX_ALLOCS + 1)
    assert not plans_inline(indexer.state(), ev)
    # the job now asks for one, but still has many to stop
    ev = register(fsm, "shrinking", 1)
    allocs = [Allocation(id=f"a{i}", name=f"shrinking.g[{i}]", job_id="shrinking", task_group="g", node_id="n0")
              for i in range(INLINE_MAX_ALLOCS)]
    assert not fsm.apply(ops.PLAN_APPLY, codec.encode(ops.PlanApply(job_id="shrinking", allocs=allocs))).error
    assert not plans_inline(indexer.state(), ev)


def test_a_system_job_counts_one_allocation_per_node():
    fsm, indexer = cluster(INLINE_MAX_ALLOCS)
    ev = register(fsm, "agent", 1, "system")
    assert plans_inline(indexer.state(), ev)
    fsm2, indexer2 = cluster(INLINE_MAX_ALLOCS + 1)
    ev = register(fsm2, "agent", 1, "system")
    assert not plans_inline(indexer2.state(), ev)


def test_a_large_cluster_goes_to_a_thread_even_for_one_allocation():
    # a group that fits nowhere walks every node
    fsm, indexer = cluster(INLINE_MAX_NODES + 1)
    ev = register(fsm, "one", 1)
    assert not plans_inline(indexer.state(), ev)
