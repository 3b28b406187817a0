"""The generic scheduler over a job's life: in-place and destructive updates, draining
nodes, blocked evaluations, placement failures explained, preemption behind its flag."""

import copy

from shoal.jobs.model import Constraint, RestartPolicy
from shoal.jobs.structs import EVAL_BLOCKED, NODE_DOWN
from shoal.scheduler import SchedulerConfig, schedule
from shoal.scheduler.generic import TRIGGER_QUEUED_ALLOCS
from shoal.scheduler.reconcile import ALLOC_MIGRATING, ALLOC_UPDATING


def placed(plan):
    return [a for allocs in plan.node_allocation.values() for a in allocs]


def stopped(plan):
    return [a for allocs in plan.node_update.values() for a in allocs]


def inplace(plan):
    return [a for allocs in plan.node_update_inplace.values() for a in allocs]


def versions(kit):
    v0 = kit.job("app", kit.group("web", count=2), version=0)
    v1 = copy.deepcopy(v0)
    v1.version = 1
    v1.groups[0].restart = RestartPolicy(attempts=5)
    return v0, v1


def test_in_place_update_keeps_the_allocation_running(kit):
    v0, v1 = versions(kit)
    allocs = [kit.alloc(v0, "web", i, f"n{i}", version=0) for i in range(2)]
    state = kit.state([kit.node("n0"), kit.node("n1")], [v1], allocs, versions=[v0])
    plan = schedule(state, kit.evaluation(v1, "ev-2"), now=50.0)
    assert placed(plan) == [] and stopped(plan) == []
    updated = sorted(inplace(plan), key=lambda a: a.id)
    assert [(a.id, a.job_version, a.eval_id, a.modify_time) for a in updated] == [
        (allocs[0].id, 1, "ev-2", 50.0), (allocs[1].id, 1, "ev-2", 50.0)]
    assert plan.annotations["web"].in_place_update == 2


def test_in_place_update_on_a_node_the_new_constraints_exclude_is_destructive(kit):
    v0, v1 = versions(kit)
    v1.groups[0].constraints = [Constraint("${meta.rack}", "=", "r1")]
    allocs = [kit.alloc(v0, "web", 0, "n0", version=0), kit.alloc(v0, "web", 1, "n1", version=0)]
    nodes = [kit.node("n0", meta={"rack": "r1"}), kit.node("n1", meta={"rack": "r2"}), kit.node("n2", meta={"rack": "r1"})]
    plan = schedule(kit.state(nodes, [v1], allocs, versions=[v0]), kit.evaluation(v1), now=0.0)
    assert [a.id for a in inplace(plan)] == [allocs[0].id]
    assert [(a.id, a.desired_description) for a in stopped(plan)] == [(allocs[1].id, ALLOC_UPDATING)]
    (new,) = placed(plan)
    assert new.previous_allocation == allocs[1].id and new.node_id in ("n0", "n2")
    d = plan.annotations["web"]
    assert (d.in_place_update, d.destructive_update) == (1, 1)


def test_without_the_old_version_an_update_is_destructive(kit):
    v0, v1 = versions(kit)
    allocs = [kit.alloc(v0, "web", i, f"n{i}", version=0) for i in range(2)]
    plan = schedule(kit.state([kit.node("n0"), kit.node("n1")], [v1], allocs), kit.evaluation(v1), now=0.0)
    assert inplace(plan) == [] and len(placed(plan)) == 2 and len(stopped(plan)) == 2


def test_draining_node_allocations_move_elsewhere(kit):
    job = kit.job("app", kit.group("web", count=2))
    allocs = [kit.alloc(job, "web", 0, "old"), kit.alloc(job, "web", 1, "old")]
    nodes = [kit.node("old", drain=True), kit.node("new1"), kit.node("new2")]
    for indexed in (False, True):
        plan = schedule(kit.state(nodes, [job], allocs, indexed=indexed), kit.evaluation(job), now=0.0)
        assert sorted((a.id, a.desired_description) for a in stopped(plan)) == sorted(
            (a.id, ALLOC_MIGRATING) for a in allocs)
        new = placed(plan)
        assert sorted(a.previous_allocation for a in new) == sorted(a.id for a in allocs)
        assert {a.node_id for a in new} <= {"new1", "new2"}
        assert plan.annotations["web"].migrate == 2


def test_migration_without_room_still_stops_and_blocks(kit):
    job = kit.job("app", kit.group("web", count=1))
    alloc = kit.alloc(job, "web", 0, "old")
    plan = schedule(kit.state([kit.node("old", drain=True)], [job], [alloc]), kit.evaluation(job), now=0.0)
    assert [a.desired_description for a in stopped(plan)] == [ALLOC_MIGRATING]
    assert plan.failed_tg_allocs["web"].constraint_filtered == {"node draining": 1}
    assert plan.blocked_eval is not None


def test_blocked_evaluation_for_what_did_not_fit(kit):
    job = kit.job("app", kit.group("web", count=3, cpu=3000))
    job.job_modify_index, job.priority = 12, 70
    plan = schedule(kit.state([kit.node("n1"), kit.node("n2")], [job]), kit.evaluation(job, "ev-1"), now=9.0,
                    new_id=iter(["a1", "a2", "blocked-1"]).__next__)
    assert len(placed(plan)) == 2
    b = plan.blocked_eval
    assert b is not None and plan.needs_blocked_eval()
    assert (b.id, b.status, b.triggered_by, b.previous_eval) == ("blocked-1", EVAL_BLOCKED, TRIGGER_QUEUED_ALLOCS, "ev-1")
    assert (b.job_id, b.job_modify_index, b.priority, b.create_time) == ("app", 12, 70, 9.0)
    assert b.failed_tg_allocs["web"].missing == 1
    # the blocked evaluation, re-run and still short, is re-blocked, not replaced
    again = schedule(kit.state([kit.node("n1")], [job]), b, now=20.0, new_id=lambda: "x")
    assert again.blocked_eval is not None and again.blocked_eval.id == "blocked-1"
    assert again.blocked_eval.modify_time == 20.0
    # everything placed: no blocked evaluation
    ok = schedule(kit.state([kit.node(f"n{i}") for i in range(3)], [job]), kit.evaluation(job), now=0.0)
    assert ok.blocked_eval is None and not ok.needs_blocked_eval()


def test_failure_explains_filters_and_exhaustion(kit):
    group = kit.group("web", count=2, cpu=2000, memory=4096)
    group.constraints = [Constraint("${meta.rack}", "=", "r1")]
    job = kit.job("app", group, datacenters=["dc1"])
    nodes = [
        kit.node("a", meta={"rack": "r1"}, cpu=1000),  # cpu
        kit.node("b", meta={"rack": "r1"}, memory=1024),  # memory
        kit.node("c", meta={"rack": "r2"}),  # constraint
        kit.node("d", meta={"rack": "r2"}),  # constraint
        kit.node("e", drivers=["docker"], meta={"rack": "r1"}),  # driver
        kit.node("f", datacenter="dc2", meta={"rack": "r1"}),  # datacenter
        kit.node("g", status=NODE_DOWN, meta={"rack": "r1"}),  # not ready
    ]
    for indexed in (False, True):
        plan = schedule(kit.state(nodes, [job], indexed=indexed), kit.evaluation(job), now=0.0)
        f = plan.failed_tg_allocs["web"]
        assert (f.missing, f.nodes_evaluated, f.nodes_filtered, f.nodes_exhausted) == (2, 7, 5, 2)
        assert f.constraint_filtered == {
            "${meta.rack} = r1": 2, "missing drivers": 1, "datacenter not in [dc1]": 1, "node not ready": 1}
        assert f.dimension_exhausted == {"cpu": 1, "memory": 1}
        assert f.nodes_available == {"dc1": 5}
        lines = f.explain()
        assert lines[1] == "  7 node(s) evaluated: 5 filtered, 2 exhausted"
        assert "  Constraint ${meta.rack} = r1 filtered 2 node(s)" in lines
        assert "  Resources exhausted on 1 node(s): memory" in lines


def test_service_preemption_only_behind_its_flag(kit):
    low = kit.job("low", kit.group("db", cpu=3000))
    low.priority = 20
    high = kit.job("high", kit.group("web", cpu=3000))
    high.priority = 70
    victim = kit.alloc(low, "db", 0, "n1")
    state = kit.state([kit.node("n1", cpu=4000)], [low, high], [victim])
    plan = schedule(state, kit.evaluation(high), now=5.0, new_id=lambda: "new")
    assert placed(plan) == [] and plan.node_preemptions == {}
    plan = schedule(state, kit.evaluation(high), now=5.0, new_id=lambda: "new",
                    config=SchedulerConfig(preempt_service=True))
    (new,) = placed(plan)
    (evicted,) = plan.node_preemptions["n1"]
    assert (evicted.id, evicted.desired_status, evicted.preempted_by_allocation) == (victim.id, "evict", "new")
    assert evicted.desired_description == "Preempted by alloc ID new"
    assert plan.failed_tg_allocs == {} and plan.blocked_eval is None
    # within 10 priority points nothing is evicted
    high.priority = 29
    plan = schedule(state, kit.evaluation(high), now=5.0, config=SchedulerConfig(preempt_service=True))
    assert plan.node_preemptions == {} and "web" in plan.failed_tg_allocs


def test_batch_preemption_has_its_own_flag(kit):
    low = kit.job("low", kit.group("db", cpu=3000))
    low.priority = 10
    work = kit.job("work", kit.group("w", cpu=3000), type="batch")
    work.priority = 60
    state = kit.state([kit.node("n1", cpu=4000)], [low, work], [kit.alloc(low, "db", 0, "n1")])
    assert schedule(state, kit.evaluation(work), now=0.0,
                    config=SchedulerConfig(preempt_service=True)).node_preemptions == {}
    assert schedule(state, kit.evaluation(work), now=0.0,
                    config=SchedulerConfig(preempt_batch=True)).node_preemptions != {}
