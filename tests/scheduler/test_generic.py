import pytest

from shoal.jobs.model import Affinity, Constraint
from shoal.jobs.structs import NODE_DOWN, NodeResources
from shoal.scheduler import GenericScheduler, SchedulerConfig, schedule


def placed_nodes(plan):
    return {a.node_id for allocs in plan.node_allocation.values() for a in allocs}


def all_placed(plan):
    return [a for allocs in plan.node_allocation.values() for a in allocs]


def all_stopped(plan):
    return [a for allocs in plan.node_update.values() for a in allocs]


def test_new_job_gets_complete_allocation_records(kit):
    job = kit.job("app", kit.group("web", count=3, cpu=500, memory=256, disk=300), version=4)
    job.job_modify_index = 17
    state = kit.state([kit.node(f"n{i}") for i in range(4)], [job])
    ids = iter(["a1", "a2", "a3"])
    plan = schedule(state, kit.evaluation(job, "ev-9"), now=1234.5, new_id=lambda: next(ids))
    assert plan.eval_id == "ev-9" and plan.job_id == "app" and plan.job_modify_index == 17
    assert plan.failed_tg_allocs == {}
    allocs = sorted(all_placed(plan), key=lambda a: a.index)
    assert [a.name for a in allocs] == ["app.web[0]", "app.web[1]", "app.web[2]"]
    assert sorted(a.id for a in allocs) == ["a1", "a2", "a3"]
    for a in allocs:
        assert (a.job_id, a.namespace, a.job_version, a.task_group, a.eval_id) == ("app", "default", 4, "web", "ev-9")
        assert (a.resources.cpu, a.resources.memory, a.resources.disk) == (500, 256, 300)
        assert (a.desired_status, a.client_status, a.create_time) == ("run", "pending", 1234.5)
        assert a.node_id in plan.node_allocation and a in plan.node_allocation[a.node_id]


@pytest.mark.parametrize("seed", [f"eval-{i}" for i in range(10)])
def test_binpack_prefers_the_fuller_node(kit, seed):
    other = kit.job("other", kit.group("db", cpu=2000, memory=4096))
    job = kit.job("app", kit.group("web", cpu=500, memory=512))
    nodes = [kit.node("empty"), kit.node("half")]
    state = kit.state(nodes, [job, other], [kit.alloc(other, "db", 0, "half")])
    plan = schedule(state, kit.evaluation(job, seed), now=0.0)
    assert placed_nodes(plan) == {"half"}


@pytest.mark.parametrize("seed", [f"eval-{i}" for i in range(10)])
def test_spread_algorithm_prefers_the_emptier_node(kit, seed):
    other = kit.job("other", kit.group("db", cpu=2000, memory=4096))
    job = kit.job("app", kit.group("web", cpu=500, memory=512))
    state = kit.state([kit.node("empty"), kit.node("half")], [job, other], [kit.alloc(other, "db", 0, "half")])
    plan = GenericScheduler(SchedulerConfig(algorithm="spread")).schedule(state, kit.evaluation(job, seed), now=0.0)
    assert placed_nodes(plan) == {"empty"}


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown scheduler algorithm"):
        SchedulerConfig(algorithm="random")


def test_job_anti_affinity_spreads_a_group_over_free_nodes(kit):
    # Each allocation takes a quarter of a node. Stacking a second one on a node
    # scores (0.76 - 2/4) / 2 = 0.13 against 0.49 for an empty node: the group spreads.
    job = kit.job("app", kit.group("web", count=4, cpu=1000, memory=2048, disk=0))
    state = kit.state([kit.node(f"n{i}") for i in range(4)], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert len(placed_nodes(plan)) == 4


def test_fills_nodes_when_the_group_must_share(kit):
    # 8 quarter-node allocations on 2 nodes: both nodes end exactly full.
    job = kit.job("app", kit.group("web", count=8, cpu=1000, memory=2048, disk=0))
    state = kit.state([kit.node("a"), kit.node("b")], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert plan.failed_tg_allocs == {}
    assert {n: len(v) for n, v in plan.node_allocation.items()} == {"a": 4, "b": 4}


def test_honors_constraints(kit):
    job = kit.job(
        "app",
        kit.group("web", count=6, constraints=[Constraint("${meta.rack}", "set_contains_any", "r1,r2")]),
        constraints=[Constraint("${attr.kernel.name}", "=", "linux")],
    )
    nodes = [
        kit.node("linux-r1", meta={"rack": "r1"}),
        kit.node("linux-r2", meta={"rack": "r2"}),
        kit.node("linux-r3", meta={"rack": "r3"}),
        kit.node("darwin-r1", attributes={"kernel.name": "darwin"}, meta={"rack": "r1"}),
    ]
    plan = schedule(kit.state(nodes, [job]), kit.evaluation(job), now=0.0)
    assert len(all_placed(plan)) == 6
    assert placed_nodes(plan) <= {"linux-r1", "linux-r2"}


def test_reports_memory_exhaustion(kit):
    job = kit.job("app", kit.group("web", count=2, cpu=100, memory=16_384))
    state = kit.state([kit.node(f"n{i}", memory=8192) for i in range(3)], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert plan.node_allocation == {}
    failure = plan.failed_tg_allocs["web"]
    assert failure.missing == 2
    assert failure.nodes_evaluated == 3
    assert failure.nodes_exhausted == 3
    assert failure.dimension_exhausted == {"memory": 3}
    assert failure.nodes_filtered == 0
    assert "  Resources exhausted on 3 node(s): memory" in failure.explain()


def test_reports_constraint_filtering_counts(kit):
    job = kit.job(
        "app",
        kit.group("web", count=1, cpu=3000, driver="docker"),
        constraints=[Constraint("${attr.kernel.name}", "=", "linux")],
        datacenters=["dc1"],
    )
    other = kit.job("other", kit.group("db", cpu=2000))
    nodes = [
        kit.node("mac1", attributes={"kernel.name": "darwin"}),
        kit.node("mac2", attributes={"kernel.name": "darwin"}),
        kit.node("nodock", drivers=["exec"]),
        kit.node("down", status=NODE_DOWN),
        kit.node("far", datacenter="dc2"),
        kit.node("busy1"),
        kit.node("busy2"),
    ]
    existing = [kit.alloc(other, "db", 0, "busy1"), kit.alloc(other, "db", 1, "busy2")]
    plan = schedule(kit.state(nodes, [job, other], existing), kit.evaluation(job), now=0.0)
    failure = plan.failed_tg_allocs["web"]
    assert failure.missing == 1
    assert failure.nodes_evaluated == 7
    assert failure.constraint_filtered == {
        "${attr.kernel.name} = linux": 2,
        "missing drivers": 1,
        "node not ready": 1,
        "datacenter not in [dc1]": 1,
    }
    assert failure.nodes_filtered == 5
    assert failure.nodes_exhausted == 2 and failure.dimension_exhausted == {"cpu": 2}
    assert failure.nodes_available == {"dc1": 5}


def test_partial_placement_counts_the_missing(kit):
    job = kit.job("app", kit.group("web", count=5, cpu=2000, memory=512, disk=0))
    state = kit.state([kit.node("a"), kit.node("b", cpu=3000)], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert len(all_placed(plan)) == 3
    assert plan.failed_tg_allocs["web"].missing == 2


def test_reserved_and_other_jobs_count_against_capacity(kit):
    job = kit.job("app", kit.group("web", count=1, cpu=1000, memory=1000, disk=0))
    other = kit.job("other", kit.group("db", cpu=2000, memory=100))
    node = kit.node("n", cpu=4000, reserved=NodeResources(cpu=1500))
    existing = [
        kit.alloc(other, "db", 0, "n"),
        kit.alloc(other, "db", 1, "n", client_status="complete"),  # terminal: frees its share
    ]
    plan = schedule(kit.state([node], [job, other], existing), kit.evaluation(job), now=0.0)
    assert plan.failed_tg_allocs["web"].dimension_exhausted == {"cpu": 1}

    existing = [kit.alloc(other, "db", 1, "n", client_status="complete")]
    plan = schedule(kit.state([node], [job, other], existing), kit.evaluation(job), now=0.0)
    assert placed_nodes(plan) == {"n"}


def test_lost_allocations_are_stopped_and_replaced(kit):
    job = kit.job("app", kit.group("web", count=2))
    nodes = [kit.node("up"), kit.node("dead", status=NODE_DOWN)]
    existing = [kit.alloc(job, "web", 0, "up", alloc_id="ok"), kit.alloc(job, "web", 1, "dead", alloc_id="gone")]
    plan = schedule(kit.state(nodes, [job], existing), kit.evaluation(job), now=50.0)
    (stopped,) = all_stopped(plan)
    assert (stopped.id, stopped.desired_status, stopped.client_status) == ("gone", "stop", "lost")
    assert stopped.modify_time == 50.0
    (new,) = all_placed(plan)
    assert (new.node_id, new.name, new.previous_allocation) == ("up", "app.web[1]", "gone")


def test_destructive_update_frees_the_old_allocation_first(kit):
    job = kit.job("app", kit.group("web", count=1, cpu=3000, memory=6000, disk=0), version=2)
    node = kit.node("only", cpu=4000, memory=8192)
    existing = [kit.alloc(job, "web", 0, "only", alloc_id="v1", version=1)]
    plan = schedule(kit.state([node], [job], existing), kit.evaluation(job), now=0.0)
    (stopped,) = all_stopped(plan)
    assert (stopped.id, stopped.desired_description) == ("v1", "alloc is being updated due to job update")
    (new,) = all_placed(plan)
    assert (new.node_id, new.job_version, new.previous_allocation) == ("only", 2, "v1")


def test_destructive_update_that_cannot_be_placed_keeps_the_old_allocation(kit):
    job = kit.job("app", kit.group("web", count=1, cpu=3000, driver="docker"), version=2)
    node = kit.node("only", drivers=["exec"])
    old = kit.alloc(job, "web", 0, "only", alloc_id="v1", version=1)
    plan = schedule(kit.state([node], [job], [old]), kit.evaluation(job), now=0.0)
    assert plan.node_update == {} and plan.node_allocation == {}
    assert plan.failed_tg_allocs["web"].constraint_filtered == {"missing drivers": 1}


def test_stopping_a_job_stops_everything(kit):
    job = kit.job("app", kit.group("web", count=2), stop=True)
    existing = [kit.alloc(job, "web", i, "n1") for i in range(2)]
    plan = schedule(kit.state([kit.node("n1")], [job], existing), kit.evaluation(job), now=0.0)
    assert plan.node_allocation == {}
    assert sorted(a.name for a in all_stopped(plan)) == ["app.web[0]", "app.web[1]"]
    assert all(a.desired_status == "stop" for a in all_stopped(plan))


def test_deregistered_job_stops_everything(kit):
    job = kit.job("app", kit.group("web", count=1))
    existing = [kit.alloc(job, "web", 0, "n1")]
    state = kit.state([kit.node("n1")], [], existing)
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert [a.desired_description for a in all_stopped(plan)] == ["alloc not needed since job was deregistered"]


def test_distinct_hosts(kit):
    job = kit.job("app", kit.group("web", count=3, cpu=100, memory=100),
                  constraints=[Constraint("", "distinct_hosts", "true")])
    existing = [kit.alloc(job, "web", 0, "n1")]
    state = kit.state([kit.node("n1"), kit.node("n2"), kit.node("n3"), kit.node("n4")], [job], existing)
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert len(all_placed(plan)) == 2
    assert "n1" not in placed_nodes(plan)
    assert len(placed_nodes(plan)) == 2

    small = kit.state([kit.node("n1"), kit.node("n2")], [job], existing)
    plan = schedule(small, kit.evaluation(job), now=0.0)
    assert placed_nodes(plan) == {"n2"}
    failure = plan.failed_tg_allocs["web"]
    assert failure.missing == 1 and failure.constraint_filtered == {"distinct_hosts": 2}


def test_distinct_property(kit):
    group = kit.group("web", count=4, cpu=100, memory=100,
                      constraints=[Constraint("${meta.rack}", "distinct_property", "2")])
    job = kit.job("app", group)
    nodes = [kit.node(f"n{i}", meta={"rack": f"r{i % 2}"}) for i in range(6)] + [kit.node("norack")]
    existing = [kit.alloc(job, "web", 0, "n0")]
    plan = schedule(kit.state(nodes, [job], existing), kit.evaluation(job), now=0.0)
    racks = {}
    for a in [*existing, *all_placed(plan)]:
        rack = nodes[int(a.node_id[1:])].meta["rack"]
        racks[rack] = racks.get(rack, 0) + 1
    assert racks == {"r0": 2, "r1": 2}
    assert plan.failed_tg_allocs == {}


def test_affinity_steers_placement(kit):
    job = kit.job("app", kit.group("web", count=3, cpu=100, memory=100))
    job.affinities = [Affinity("${meta.zone}", "=", "b", weight=100)]
    nodes = [kit.node(f"n{i}", meta={"zone": "a" if i < 8 else "b"}) for i in range(10)]
    plan = schedule(kit.state(nodes, [job]), kit.evaluation(job), now=0.0)
    assert placed_nodes(plan) <= {"n8", "n9"}


def test_runs_are_reproducible_per_eval_id(kit):
    job = kit.job("app", kit.group("web", count=20, cpu=300, memory=300))
    nodes = [kit.node(f"n{i:02d}") for i in range(30)]
    state = kit.state(nodes, [job])

    def run(eval_id):
        counter = iter(range(1000))
        plan = schedule(state, kit.evaluation(job, eval_id), now=0.0, new_id=lambda: f"id{next(counter)}")
        return sorted((a.name, a.node_id) for a in all_placed(plan))

    assert run("e1") == run("e1")
    assert run("e1") != run("e2")


def test_stopped_system_job_is_still_stopped(kit):
    job = kit.job("agentd", kit.group("d", count=1), type="system", stop=True)
    existing = [kit.alloc(job, "d", 0, "n1")]
    plan = schedule(kit.state([kit.node("n1")], [job], existing), kit.evaluation(job), now=0.0)
    assert [a.desired_status for a in all_stopped(plan)] == ["stop"]


def test_no_nodes_at_all(kit):
    job = kit.job("app", kit.group("web", count=2))
    plan = schedule(kit.state([], [job]), kit.evaluation(job), now=0.0)
    failure = plan.failed_tg_allocs["web"]
    assert (failure.missing, failure.nodes_evaluated) == (2, 0)
    assert "  No nodes were eligible for evaluation" in failure.explain()
