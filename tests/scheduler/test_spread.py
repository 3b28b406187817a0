"""``spread`` stanzas (Nomad's SpreadIterator) and affinity weights."""

from collections import Counter

import pytest

from shoal.jobs.model import Affinity, Spread, SpreadTarget
from shoal.scheduler import schedule
from shoal.scheduler.rank import AffinityScorer, SpreadScorer, _even_spread_boost


def placed(plan):
    return [a for allocs in plan.node_allocation.values() for a in allocs]


def dc_nodes(kit, per_dc=4, dcs=("dc1", "dc2", "dc3")):
    return [kit.node(f"{dc}-n{i}", datacenter=dc) for dc in dcs for i in range(per_dc)]


def test_targets_boost_values_under_their_share(kit):
    spread = Spread("${node.datacenter}", 100, [SpreadTarget("dc1", 70), SpreadTarget("dc2", 30)])
    s = SpreadScorer([spread], count=10)
    n1, n2, n3 = kit.node("a", datacenter="dc1"), kit.node("b", datacenter="dc2"), kit.node("c", datacenter="dc3")
    # desired 7 and 3; nothing placed: (desired - 1) / desired
    assert s.score(n1) == pytest.approx(6 / 7)
    assert s.score(n2) == pytest.approx(2 / 3)
    # dc3 has no target and the targets add up to 100: the maximum penalty
    assert s.score(n3) == pytest.approx(-1.0)
    for _ in range(3):
        s.add(n2)
    # dc2 has its share: placing one more goes over it
    assert s.score(n2) == pytest.approx((3 - 4) / 3)
    s.remove(n2)
    assert s.score(n2) == pytest.approx(0.0)


def test_implicit_target_takes_the_remainder(kit):
    s = SpreadScorer([Spread("${node.datacenter}", 50, [SpreadTarget("dc1", 50)])], count=4)
    other = kit.node("x", datacenter="dc9")
    assert s.score(other) == pytest.approx((2 - 1) / 2)  # the implicit "*" target: 2 of 4


def test_weights_share_the_boost_and_missing_attributes_are_penalized(kit):
    s = SpreadScorer(
        [
            Spread("${node.datacenter}", 75, [SpreadTarget("dc1", 100)]),
            Spread("${meta.rack}", 25, [SpreadTarget("r1", 100)]),
        ],
        count=4,
    )
    with_rack = kit.node("a", datacenter="dc1", meta={"rack": "r1"})
    without = kit.node("b", datacenter="dc1")
    assert s.score(with_rack) == pytest.approx(3 / 4 * 0.75 + 3 / 4 * 0.25)
    assert s.score(without) == pytest.approx(3 / 4 * 0.75 - 1.0)


@pytest.mark.parametrize(
    ("counts", "value", "expected"),
    [
        ({}, "dc1", 0.0),  # nothing placed yet
        ({"dc1": 2, "dc2": 2}, "dc1", -1.0),  # even: the maximum penalty
        ({"dc1": 1, "dc2": 3}, "dc1", 2.0),  # at the minimum: (max - min) / min
        ({"dc1": 1, "dc2": 3}, "dc2", -2.0),  # above the minimum: (min - current) / min
        ({"dc1": 0, "dc2": 3}, "dc1", 1.0),  # an unused value gets the maximum boost
    ],
)
def test_even_spread_boost(counts, value, expected):
    assert _even_spread_boost(counts, value) == pytest.approx(expected)


def test_spread_targets_shape_the_placement(kit):
    group = kit.group("web", count=10, cpu=100, memory=64)
    group.spreads = [Spread("${node.datacenter}", 100, [SpreadTarget("dc1", 70), SpreadTarget("dc2", 30)])]
    job = kit.job("app", group)
    for indexed in (False, True):
        state = kit.state(dc_nodes(kit), [job], indexed=indexed)
        plan = schedule(state, kit.evaluation(job), now=0.0)
        by_dc = Counter(a.node_id.split("-")[0] for a in placed(plan))
        assert by_dc == {"dc1": 7, "dc2": 3}, indexed


def test_job_level_even_spread(kit):
    job = kit.job("app", kit.group("web", count=9, cpu=100, memory=64))
    job.spreads = [Spread("${node.datacenter}", 50)]
    plan = schedule(kit.state(dc_nodes(kit), [job]), kit.evaluation(job), now=0.0)
    assert Counter(a.node_id.split("-")[0] for a in placed(plan)) == {"dc1": 3, "dc2": 3, "dc3": 3}


def test_spread_counts_existing_allocations(kit):
    group = kit.group("web", count=4, cpu=100, memory=64)
    group.spreads = [Spread("${node.datacenter}", 100, [SpreadTarget("dc1", 50), SpreadTarget("dc2", 50)])]
    job = kit.job("app", group)
    existing = [kit.alloc(job, "web", 0, "dc1-n0"), kit.alloc(job, "web", 1, "dc1-n1")]
    plan = schedule(kit.state(dc_nodes(kit), [job], existing), kit.evaluation(job), now=0.0)
    assert sorted(a.node_id.split("-")[0] for a in placed(plan)) == ["dc2", "dc2"]


def test_affinity_weights_are_normalized_by_their_absolute_sum(kit):
    scorer = AffinityScorer(
        [
            Affinity("${meta.rack}", "=", "r1", weight=100),
            Affinity("${meta.ssd}", "=", "yes", weight=-100),
            Affinity("${attr.kernel.name}", "=", "linux", weight=50),
        ]
    )
    # matched weights over 250, in -1..1
    assert scorer.score(kit.node("a", meta={"rack": "r1"})) == pytest.approx(150 / 250)
    assert scorer.score(kit.node("b", meta={"ssd": "yes"}, attributes={})) == pytest.approx(-100 / 250)
    assert scorer.score(kit.node("c", meta={"rack": "r1", "ssd": "yes"})) == pytest.approx(50 / 250)


def test_affinity_pulls_placements(kit):
    group = kit.group("web", count=3, cpu=100, memory=64)
    group.affinities = [Affinity("${node.datacenter}", "=", "dc3", weight=100)]
    job = kit.job("app", group)
    plan = schedule(kit.state(dc_nodes(kit), [job]), kit.evaluation(job), now=0.0)
    assert {a.node_id.split("-")[0] for a in placed(plan)} == {"dc3"}
