"""System and sysbatch jobs: one allocation per group on every eligible node."""

import copy

import pytest

from shoal.jobs.model import Constraint, Port, RestartPolicy
from shoal.jobs.structs import EVAL_BLOCKED, NODE_DOWN, NODE_INIT, AllocatedPort
from shoal.scheduler import SchedulerConfig, schedule
from shoal.scheduler.reconcile import ALLOC_LOST_DESC, ALLOC_MIGRATING, ALLOC_NOT_NEEDED, ALLOC_UPDATING
from shoal.scheduler.system import ALLOC_NODE_NOT_TARGETED


def placed(plan):
    return [a for allocs in plan.node_allocation.values() for a in allocs]


def stopped(plan):
    return {a.id: (a.desired_description, a.client_status) for allocs in plan.node_update.values() for a in allocs}


def system_job(kit, *groups, type="system", **kw):
    return kit.job("agentd", *(groups or [kit.group("d", cpu=200, memory=128)]), type=type, **kw)


@pytest.mark.parametrize("job_type", ["system", "sysbatch"])
def test_one_allocation_per_eligible_node(kit, job_type):
    job = system_job(kit, kit.group("d", cpu=200, memory=128), kit.group("e", cpu=100, memory=64), type=job_type)
    nodes = [
        kit.node("n1"),
        kit.node("n2"),
        kit.node("n3", drivers=["docker"]),  # filtered by its drivers: skipped silently
        kit.node("n4", eligible=False),
        kit.node("n5", status=NODE_INIT),
        kit.node("n6", drain=True),
    ]
    plan = schedule(kit.state(nodes, [job]), kit.evaluation(job), now=0.0)
    got = sorted((a.node_id, a.task_group, a.name) for a in placed(plan))
    assert got == [
        ("n1", "d", "agentd.d[0]"), ("n1", "e", "agentd.e[0]"),
        ("n2", "d", "agentd.d[0]"), ("n2", "e", "agentd.e[0]"),
    ]
    assert plan.failed_tg_allocs == {} and plan.blocked_eval is None


def test_nothing_to_do_when_every_node_has_one(kit):
    job = system_job(kit)
    allocs = [kit.alloc(job, "d", 0, f"n{i}") for i in range(3)]
    plan = schedule(kit.state([kit.node(f"n{i}") for i in range(3)], [job], allocs), kit.evaluation(job), now=0.0)
    assert plan.is_noop()
    assert plan.annotations["d"].ignore == 3


def test_a_new_node_gets_one(kit):
    job = system_job(kit)
    allocs = [kit.alloc(job, "d", 0, "n1")]
    plan = schedule(kit.state([kit.node("n1"), kit.node("joined")], [job], allocs), kit.evaluation(job), now=0.0)
    assert [(a.node_id, a.name) for a in placed(plan)] == [("joined", "agentd.d[0]")]
    assert stopped(plan) == {}


def test_allocations_on_down_nodes_are_lost_not_replaced(kit):
    job = system_job(kit)
    allocs = [kit.alloc(job, "d", 0, "n1", alloc_id="a1"), kit.alloc(job, "d", 0, "dead", alloc_id="a2"),
              kit.alloc(job, "d", 0, "gone", alloc_id="a3")]
    nodes = [kit.node("n1"), kit.node("dead", status=NODE_DOWN)]
    plan = schedule(kit.state(nodes, [job], allocs), kit.evaluation(job), now=0.0)
    assert stopped(plan) == {"a2": (ALLOC_LOST_DESC, "lost"), "a3": (ALLOC_LOST_DESC, "lost")}
    assert placed(plan) == []
    assert plan.annotations["d"].lost == 2


def test_draining_ineligible_and_untargeted_nodes(kit):
    job = system_job(kit, datacenters=["dc1"])
    allocs = [kit.alloc(job, "d", 0, n, alloc_id=n) for n in ("drain", "inel", "dc2", "ok")]
    nodes = [kit.node("drain", drain=True), kit.node("inel", eligible=False),
             kit.node("dc2", datacenter="dc2"), kit.node("ok")]
    plan = schedule(kit.state(nodes, [job], allocs), kit.evaluation(job), now=0.0)
    assert stopped(plan) == {"drain": (ALLOC_MIGRATING, "running"), "dc2": (ALLOC_NODE_NOT_TARGETED, "running")}
    assert placed(plan) == []  # the ineligible node keeps its allocation


def test_a_second_allocation_on_a_node_is_stopped(kit):
    job = system_job(kit)
    first = kit.alloc(job, "d", 0, "n1", alloc_id="first")
    second = kit.alloc(job, "d", 0, "n1", alloc_id="second")
    second.create_time = 5.0
    plan = schedule(kit.state([kit.node("n1")], [job], [first, second]), kit.evaluation(job), now=0.0)
    assert stopped(plan) == {"second": (ALLOC_NOT_NEEDED, "running")}


def test_sysbatch_work_that_finished_is_not_run_again(kit):
    job = system_job(kit, type="sysbatch")
    done = kit.alloc(job, "d", 0, "n1", client_status="complete", alloc_id="done")
    failed = kit.alloc(job, "d", 0, "n2", client_status="failed", alloc_id="failed")
    state = kit.state([kit.node("n1"), kit.node("n2"), kit.node("n3")], [job], [done, failed])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert [a.node_id for a in placed(plan)] == ["n3"]
    # a new version of the job runs again everywhere
    v1 = copy.deepcopy(job)
    v1.version = 1
    plan = schedule(kit.state([kit.node("n1"), kit.node("n2")], [v1], [done, failed]), kit.evaluation(v1), now=0.0)
    assert sorted((a.node_id, a.previous_allocation) for a in placed(plan)) == [("n1", "done"), ("n2", "failed")]


def test_a_failed_system_allocation_is_replaced_on_its_node(kit):
    job = system_job(kit)
    failed = kit.alloc(job, "d", 0, "n1", client_status="failed", alloc_id="failed")
    plan = schedule(kit.state([kit.node("n1")], [job], [failed]), kit.evaluation(job), now=0.0)
    assert [(a.node_id, a.previous_allocation) for a in placed(plan)] == [("n1", "failed")]


def test_updates_in_place_destructive_or_stopped(kit):
    v0 = system_job(kit)
    v1 = copy.deepcopy(v0)
    v1.version = 1
    v1.groups[0].restart = RestartPolicy(attempts=4)
    nodes = [kit.node("n1", meta={"rack": "r1"}), kit.node("n2", meta={"rack": "r2"})]
    allocs = [kit.alloc(v0, "d", 0, "n1", alloc_id="a1", version=0), kit.alloc(v0, "d", 0, "n2", alloc_id="a2", version=0)]
    plan = schedule(kit.state(nodes, [v1], allocs, versions=[v0]), kit.evaluation(v1), now=0.0)
    assert sorted((a.id, a.job_version) for allocs_ in plan.node_update_inplace.values() for a in allocs_) == [
        ("a1", 1), ("a2", 1)]
    # a config change is destructive, on the same node
    v2 = copy.deepcopy(v1)
    v2.version = 2
    v2.groups[0].tasks[0].config = {"image": "new"}
    plan = schedule(kit.state(nodes, [v2], allocs, versions=[v0]), kit.evaluation(v2), now=0.0)
    assert stopped(plan) == {"a1": (ALLOC_UPDATING, "running"), "a2": (ALLOC_UPDATING, "running")}
    assert sorted((a.node_id, a.previous_allocation) for a in placed(plan)) == [("n1", "a1"), ("n2", "a2")]
    # a constraint the node no longer meets: stopped, not replaced
    v3 = copy.deepcopy(v1)
    v3.version = 3
    v3.groups[0].constraints = [Constraint("${meta.rack}", "=", "r1")]
    plan = schedule(kit.state(nodes, [v3], allocs, versions=[v0]), kit.evaluation(v3), now=0.0)
    assert stopped(plan) == {"a2": (ALLOC_NOT_NEEDED, "running")}
    assert [a.id for allocs_ in plan.node_update_inplace.values() for a in allocs_] == ["a1"]


def test_destructive_update_that_no_longer_fits_keeps_the_old_one(kit):
    v0 = system_job(kit)
    v1 = copy.deepcopy(v0)
    v1.version = 1
    v1.groups[0].tasks[0].resources.cpu = 9000
    allocs = [kit.alloc(v0, "d", 0, "n1", alloc_id="a1", version=0)]
    plan = schedule(kit.state([kit.node("n1")], [v1], allocs, versions=[v0]), kit.evaluation(v1), now=0.0)
    assert stopped(plan) == {} and placed(plan) == []
    assert plan.failed_tg_allocs["d"].dimension_exhausted == {"cpu": 1}


def test_full_nodes_are_failures_with_a_blocked_evaluation(kit):
    other = kit.job("big", kit.group("b", cpu=3900))
    other.priority = 50
    job = system_job(kit, kit.group("d", cpu=500, memory=128))
    job.priority = 55  # not 10 above: no preemption
    allocs = [kit.alloc(other, "b", 0, "n1"), kit.alloc(other, "b", 1, "n2")]
    nodes = [kit.node("n1"), kit.node("n2"), kit.node("n3")]
    plan = schedule(kit.state(nodes, [job, other], allocs), kit.evaluation(job), now=0.0)
    assert [a.node_id for a in placed(plan)] == ["n3"]
    f = plan.failed_tg_allocs["d"]
    assert (f.missing, f.nodes_exhausted, f.dimension_exhausted, f.nodes_available) == (2, 2, {"cpu": 2}, {"dc1": 2})
    assert plan.blocked_eval is not None and plan.blocked_eval.status == EVAL_BLOCKED
    assert plan.blocked_eval.node_id in ("n1", "n2")


def test_system_jobs_preempt_lower_priority_allocations(kit):
    low = kit.job("batchy", kit.group("b", cpu=2000, memory=256))
    low.priority = 30
    job = system_job(kit, kit.group("d", cpu=1000, memory=128))
    job.priority = 90
    allocs = [kit.alloc(low, "b", i, "n1", alloc_id=f"low{i}") for i in range(2)]  # all 4000 MHz used
    state = kit.state([kit.node("n1")], [job, low], allocs)
    plan = schedule(state, kit.evaluation(job), now=0.0, new_id=lambda: "sys")
    assert [a.node_id for a in placed(plan)] == ["n1"]
    (evicted,) = plan.node_preemptions["n1"]  # one is enough
    assert (evicted.id, evicted.desired_status, evicted.preempted_by_allocation) == ("low0", "evict", "sys")
    # preemption turned off for system jobs
    plan = schedule(state, kit.evaluation(job), now=0.0, config=SchedulerConfig(preempt_system=False))
    assert plan.node_preemptions == {} and "d" in plan.failed_tg_allocs


def test_system_job_ports(kit):
    job = system_job(kit, kit.group("d", cpu=100, memory=64, ports=[Port("metrics", 9100)]))
    other = kit.job("x", kit.group("x"))
    holder = kit.alloc(other, "x", 0, "n2")
    holder.ports = [AllocatedPort("m", 9100, 0)]
    plan = schedule(kit.state([kit.node("n1"), kit.node("n2")], [job, other], [holder]), kit.evaluation(job), now=0.0)
    assert [(a.node_id, a.ports) for a in placed(plan)] == [("n1", [AllocatedPort("metrics", 9100, 0)])]
    assert plan.failed_tg_allocs["d"].dimension_exhausted == {"network: port collision": 1}


def test_stopped_system_job_stops_everything(kit):
    job = system_job(kit, stop=True)
    allocs = [kit.alloc(job, "d", 0, "n1", alloc_id="a"), kit.alloc(job, "d", 0, "dead", alloc_id="b")]
    plan = schedule(kit.state([kit.node("n1"), kit.node("dead", status=NODE_DOWN)], [job], allocs),
                    kit.evaluation(job), now=0.0)
    assert stopped(plan) == {"a": ("alloc not needed since job was stopped", "running"), "b": (ALLOC_LOST_DESC, "lost")}
