"""The plan applier's check (pure, over a snapshot) and the ``plan.apply`` command it commits."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Resources
from shoal.jobs.structs import DESIRED_EVICT, DESIRED_STOP, EVAL_COMPLETE, Allocation, Evaluation, Node, NodeResources
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.raft.state import StateSnapshot
from shoal.scheduler.plan import Plan
from shoal.server.plan_apply import PlanCheck, check_plan, plan_payload


def alloc(alloc_id: str, node_id: str, cpu: int, **fields: object) -> Allocation:
    return Allocation(id=alloc_id, name=f"web.g[{alloc_id}]", job_id="web", task_group="g", node_id=node_id,
                      resources=Resources(cpu=cpu, memory=100), **fields)


def state() -> StateSnapshot:
    """Three nodes of 1,000 MHz: ``full`` runs 800 MHz (in ``a-old``), ``drained`` takes nothing new."""
    fsm = FSM()
    for node_id in ("free", "full", "drained"):
        n = Node(id=node_id, name=node_id, status="ready", drain=node_id == "drained", drivers=["raw_exec"],
                 resources=NodeResources(cpu=1000, memory=4096, disk=10000))
        assert not fsm.apply(ops.NODE_REGISTER, codec.encode(ops.NodeRegister(node=n))).error
    placed = ops.PlanApply(eval_id="e0", job_id="web", allocs=[alloc("a-old", "full", 800)])
    assert not fsm.apply(ops.PLAN_APPLY, codec.encode(placed)).error
    return fsm.store.snapshot()


def test_each_node_is_checked_against_the_latest_state():
    plan = Plan(eval_id="e1", job_id="web", node_allocation={
        "free": [alloc("a1", "free", 600), alloc("a2", "free", 400)],  # exactly full
        "full": [alloc("a3", "full", 300)],  # 800 + 300 > 1000
        "drained": [alloc("a4", "drained", 100)],
        "gone": [alloc("a5", "gone", 100)],
    })
    assert check_plan(state(), plan) == PlanCheck(accepted=["free"], refused=["full", "drained", "gone"])


def test_the_plans_stops_and_preemptions_on_a_node_make_room_there():
    stopped = alloc("a-old", "full", 800, desired_status=DESIRED_STOP)
    plan = Plan(eval_id="e1", job_id="web", node_allocation={"full": [alloc("a3", "full", 300)]},
                node_update={"full": [stopped]})
    assert check_plan(state(), plan) == PlanCheck(accepted=["full"], refused=[])
    evicted = alloc("a-old", "full", 800, desired_status=DESIRED_EVICT, preempted_by_allocation="a3")
    plan = Plan(eval_id="e1", job_id="web", node_allocation={"full": [alloc("a3", "full", 300)]},
                node_preemptions={"full": [evicted]})
    assert check_plan(state(), plan).accepted == ["full"]


def test_the_command_carries_the_accepted_nodes_and_the_evaluation_only_when_nothing_was_refused():
    evicted = alloc("a-old", "full", 800, desired_status=DESIRED_EVICT, desired_description="preempted",
                    preempted_by_allocation="a1")
    inplace = alloc("a-kept", "free", 100, job_version=2, eval_id="e1")
    plan = Plan(eval_id="e1", job_id="web", node_allocation={"free": [alloc("a1", "free", 100)],
                                                           "full": [alloc("a2", "full", 100)]},
                node_preemptions={"full": [evicted]}, node_update_inplace={"free": [inplace]})
    outcome = [Evaluation(id="e1", job_id="web", status=EVAL_COMPLETE)]

    whole = plan_payload(plan, PlanCheck(accepted=["free", "full"], refused=[]), outcome, now=5.0)
    assert [a.id for a in whole.allocs] == ["a1", "a2"] and whole.evals == outcome and whole.now == 5.0
    assert whole.stops == [ops.AllocStop(id="a-old", desired_status=DESIRED_EVICT, desired_description="preempted",
                                         preempted_by_allocation="a1")]
    assert whole.inplace == [ops.AllocInplace(id="a-kept", job_version=2, eval_id="e1")]

    part = plan_payload(plan, PlanCheck(accepted=["free"], refused=["full"]), outcome, now=5.0)
    assert [a.id for a in part.allocs] == ["a1"] and part.evals == []  # the worker plans again
    result = PlanCheck(accepted=["free"], refused=["full"]).result(plan, index=7)
    assert result.node_allocation == {"free": plan.node_allocation["free"]} and result.refused_nodes == ["full"]
