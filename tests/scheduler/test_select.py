from shoal.jobs.model import Resources
from shoal.scheduler.rank import RankedNode
from shoal.scheduler.select import CandidateWalk, LimitSelector, NodeRing, placement_limit
from shoal.scheduler.usage import NodeTally


def ranked(kit, *scores):
    return [RankedNode(kit.node(f"n{i}"), s, NodeTally(1, 1, 1)) for i, s in enumerate(scores)]


def test_seeded_ring_is_a_reproducible_lazy_shuffle(kit):
    nodes = [kit.node(f"n{i:03d}") for i in range(50)]

    def order(seed, take=50):
        walk = NodeRing(nodes, seed).walk()
        return [next(walk).id for _ in range(take)]

    assert order("eval-1") == order("eval-1")
    assert order("eval-1") != order("eval-2")
    assert sorted(order("eval-1")) == sorted(n.id for n in nodes)
    assert order("eval-1", 5) == order("eval-1")[:5]  # drawn as the walk goes
    assert [n.id for n in nodes] == [f"n{i:03d}" for i in range(50)]  # the caller's list is left alone


def test_placement_limit():
    assert placement_limit(1000, batch=True) == 2
    assert placement_limit(1000, batch=False) == 10  # ceil(log2(1000))
    assert placement_limit(5000, batch=False) == 13
    assert placement_limit(3, batch=False) == 2
    assert placement_limit(0, batch=False) == 2
    assert placement_limit(40, batch=False, scored_count=3) == 100  # Nomad: max(count, 100)
    assert placement_limit(40, batch=True, scored_count=250) == 250


def test_ring_continues_where_the_last_walk_stopped(kit):
    ring = NodeRing([kit.node(x) for x in "abcd"])
    walk = ring.walk()
    assert [next(walk).id, next(walk).id] == ["a", "b"]
    assert [n.id for n in ring.walk()] == ["c", "d", "a", "b"]
    assert [n.id for n in NodeRing([]).walk()] == []


def test_limit_selector_takes_best_of_first_limit(kit):
    options = ranked(kit, 0.2, 0.5, 0.9, 0.95)
    consumed = []

    def source():
        for o in options:
            consumed.append(o.node.id)
            yield o

    best = LimitSelector(limit=2).select(source())
    assert best is not None and best.node.id == "n1"
    assert consumed == ["n0", "n1"]  # stops as soon as it has `limit` candidates


def test_limit_selector_ties_go_to_the_first(kit):
    best = LimitSelector(limit=3).select(iter(ranked(kit, 0.5, 0.5, 0.1)))
    assert best is not None and best.node.id == "n0"


def test_limit_selector_skips_low_scores_up_to_max_skip(kit):
    # two nodes at or below the threshold are passed over for later ones
    best = LimitSelector(limit=2, max_skip=3).select(iter(ranked(kit, -0.5, 0.0, 0.3, 0.1)))
    assert best is not None and best.node.id == "n2"
    # after max_skip skips, low scorers count as candidates again
    best = LimitSelector(limit=1, max_skip=1).select(iter(ranked(kit, -0.5, -0.4, 0.3)))
    assert best is not None and best.node.id == "n1"


def test_limit_selector_falls_back_to_skipped_nodes(kit):
    best = LimitSelector(limit=2).select(iter(ranked(kit, -0.5, -0.1)))
    assert best is not None and best.node.id == "n1"
    assert LimitSelector(limit=2).select(iter([])) is None


def test_candidate_walk_resumes_past_passed_nodes(kit):
    nodes = {x: kit.node(x) for x in "abcde"}
    walk = CandidateWalk(iter("abcde"), nodes.get)
    first = walk.walk()
    assert [next(first).id, next(first).id] == ["a", "b"]
    walk.passed.update({"a", "b"})
    assert [n.id for n in walk.walk()] == ["c", "d", "e"]
    assert walk.start == 2
    walk.passed.add("d")
    assert [n.id for n in walk.walk()] == ["c", "e"]
    walk.reopen("a")
    assert walk.start == 0 and [n.id for n in walk.walk()] == ["a", "c", "e"]
    unknown = CandidateWalk(iter(["x", "a"]), nodes.get)  # ids the state no longer has are skipped
    assert [n.id for n in unknown.walk()] == ["a"]
