import math

import pytest

from shoal.jobs.model import Affinity, Resources
from shoal.scheduler.feasible import GroupFeasibility
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.rank import (
    MAX_FIT_SCORE,
    AffinityScorer,
    GroupRanker,
    exhausted_dimension,
    job_anti_affinity,
    score_fit_binpack,
    score_fit_spread,
)
from shoal.scheduler.usage import NodeTally, PlanUsage
from shoal.jobs.structs import NodeResources


def tally(cpu_cap=1000, mem_cap=1000, disk_cap=1000, cpu=0, mem=0, disk=0):
    return NodeTally(cpu_cap, mem_cap, disk_cap, cpu, mem, disk)


def test_binpack_score_matches_nomad_formula():
    ask = Resources(cpu=250, memory=250, disk=0)
    # the node is half used with the allocation: 20 - 2 * 10^0.5
    assert score_fit_binpack(tally(cpu=250, mem=250), ask) == pytest.approx(20 - 2 * math.sqrt(10))
    # the allocation fills the node exactly: the best score
    assert score_fit_binpack(tally(cpu=750, mem=750), ask) == pytest.approx(MAX_FIT_SCORE)
    # an empty node asked for nothing: the worst
    assert score_fit_binpack(tally(), Resources(cpu=0, memory=0)) == 0.0


def test_binpack_prefers_fuller_nodes_and_spread_the_emptier():
    ask = Resources(cpu=100, memory=100)
    full, empty = tally(cpu=600, mem=600), tally()
    assert score_fit_binpack(full, ask) > score_fit_binpack(empty, ask)
    assert score_fit_spread(full, ask) < score_fit_spread(empty, ask)
    assert score_fit_spread(tally(), Resources(cpu=0, memory=0)) == MAX_FIT_SCORE


def test_scores_are_bounded_with_no_capacity():
    assert score_fit_binpack(tally(cpu_cap=0, mem_cap=0), Resources(cpu=0, memory=0)) == MAX_FIT_SCORE
    assert 0.0 <= score_fit_spread(tally(cpu_cap=0), Resources(cpu=0, memory=0)) <= MAX_FIT_SCORE


@pytest.mark.parametrize(
    ("used", "ask", "expected"),
    [
        ((0, 0, 0), Resources(cpu=1000, memory=1000, disk=1000), None),  # exactly full fits
        ((1, 0, 0), Resources(cpu=1000, memory=10, disk=10), "cpu"),
        ((0, 500, 0), Resources(cpu=10, memory=501, disk=10), "memory"),
        ((0, 0, 999), Resources(cpu=10, memory=10, disk=2), "disk"),
        ((999, 999, 999), Resources(cpu=2, memory=2, disk=2), "cpu"),  # cpu is reported first
    ],
)
def test_exhausted_dimension(used, ask, expected):
    cpu, mem, disk = used
    assert exhausted_dimension(tally(cpu=cpu, mem=mem, disk=disk), ask) == expected


def test_job_anti_affinity_penalty():
    assert job_anti_affinity(0, 3) == 0.0
    assert job_anti_affinity(1, 4) == pytest.approx(-0.5)
    assert job_anti_affinity(3, 4) == pytest.approx(-1.0)
    assert job_anti_affinity(1, 0) == pytest.approx(-2.0)


def test_affinity_scorer(kit):
    scorer = AffinityScorer(
        [
            Affinity("${meta.rack}", "=", "r1", weight=50),
            Affinity("${attr.kernel.name}", "=", "linux", weight=-50),
        ]
    )
    assert scorer.score(kit.node("a", meta={"rack": "r1"})) == pytest.approx(0.0)
    assert scorer.score(kit.node("b", meta={"rack": "r1"}, attributes={})) == pytest.approx(0.5)
    assert scorer.score(kit.node("c", attributes={})) == pytest.approx(0.0)
    assert scorer.score(kit.node("d")) == pytest.approx(-0.5)


def test_node_tally_subtracts_reserved(kit):
    node = kit.node("a", cpu=4000, memory=8192, disk=1000, reserved=NodeResources(cpu=500, memory=1024, disk=100))
    t = NodeTally.for_node(node)
    assert (t.cpu_cap, t.memory_cap, t.disk_cap) == (3500, 7168, 900)


def test_group_ranker_records_metrics_and_applies_penalties(kit):
    group = kit.group("web", count=2, cpu=1000, memory=1024, disk=0)
    job = kit.job("app", group)
    nodes = [
        kit.node("small", cpu=500),
        kit.node("busy", cpu=4000),
        kit.node("free", cpu=4000),
        kit.node("noexec", drivers=["docker"]),
    ]
    existing = [kit.alloc(job, "web", 0, "busy")]
    state = kit.state(nodes, [job], existing)
    usage = PlanUsage(state, existing)
    ranker = GroupRanker(
        group="web",
        ask=Resources(cpu=1000, memory=1024, disk=0),
        desired_count=2,
        feasibility=GroupFeasibility(job, group, usage),
        usage=usage,
    )
    metrics = PlacementMetrics()
    ranked = {r.node.id: r.score for r in ranker.rank(nodes, metrics)}
    assert set(ranked) == {"busy", "free"}
    assert metrics.nodes_evaluated == 4
    assert metrics.constraint_filtered == {"missing drivers": 1}
    assert metrics.dimension_exhausted == {"cpu": 1}
    # "busy" is fuller (better binpack) but runs this group already: penalty -(1+1)/2
    busy_fit = score_fit_binpack(usage.tally(nodes[1]), ranker.ask) / MAX_FIT_SCORE
    assert ranked["busy"] == pytest.approx((busy_fit - 1.0) / 2)
    assert ranked["free"] > ranked["busy"]

    ranker.penalty_nodes = frozenset({"free"})
    ranked = {r.node.id: r.score for r in ranker.rank(nodes, PlacementMetrics())}
    free_fit = score_fit_binpack(usage.tally(nodes[2]), ranker.ask) / MAX_FIT_SCORE
    assert ranked["free"] == pytest.approx((free_fit - 1.0) / 2)


@pytest.mark.parametrize("algorithm", ["binpack", "spread"])
def test_ranker_scores_equal_the_fit_functions(kit, algorithm):
    group = kit.group("web", count=1, cpu=700, memory=900, disk=10)
    job = kit.job("app", group)
    other = kit.job("other", kit.group("db", cpu=1300, memory=2500))
    nodes = [kit.node("a"), kit.node("b"), kit.node("c", cpu=2000, memory=3000)]
    existing = [kit.alloc(other, "db", 0, "b"), kit.alloc(other, "db", 1, "c")]
    usage = PlanUsage(kit.state(nodes, [job, other], existing), [])
    ask = Resources(cpu=700, memory=900, disk=10)
    ranker = GroupRanker("web", ask, 1, GroupFeasibility(job, group, usage), usage, algorithm=algorithm)
    fit = score_fit_spread if algorithm == "spread" else score_fit_binpack
    for r in ranker.rank(nodes, PlacementMetrics()):
        assert r.score == pytest.approx(fit(usage.tally(r.node), ask) / MAX_FIT_SCORE)
