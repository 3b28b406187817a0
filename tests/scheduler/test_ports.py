"""Host ports: the group's asks, the per-node check and assignment, and placements."""

import pytest

from shoal.jobs.model import Port
from shoal.jobs.structs import DEFAULT_MAX_DYNAMIC_PORT as MAX_DYNAMIC_PORT
from shoal.jobs.structs import DEFAULT_MIN_DYNAMIC_PORT as MIN_DYNAMIC_PORT
from shoal.jobs.structs import AllocatedPort
from shoal.scheduler import SchedulerConfig, schedule
from shoal.scheduler.ports import PORT_COLLISION, PORTS_EXHAUSTED, PortAsk, assign_ports, port_exhausted
from shoal.scheduler.usage import NodeTally, node_fit

DYNAMIC_PORTS = MAX_DYNAMIC_PORT - MIN_DYNAMIC_PORT + 1


def placed(plan):
    return [a for allocs in plan.node_allocation.values() for a in allocs]


def tally(**kw) -> NodeTally:
    return NodeTally(10_000, 10_000, 10_000, **kw)


def test_port_ask_of_a_group(kit):
    g = kit.group(ports=[Port("http", 0, 8080), Port("admin", 9000, 0), Port("metrics")])
    ask = PortAsk.for_group(g)
    assert ask is not None
    assert ask.static == (("admin", 9000, 0),)
    assert ask.dynamic == (("http", 8080), ("metrics", 0))
    assert ask.static_values == frozenset({9000})
    assert PortAsk.for_group(kit.group()) is None


@pytest.mark.parametrize(
    ("taken", "ports", "expected"),
    [
        (set(), [Port("a", 80)], None),
        ({80}, [Port("a", 80)], PORT_COLLISION),
        ({81}, [Port("a", 80)], None),
        (set(), [Port("a", 80), Port("b", 80)], PORT_COLLISION),  # one static port asked twice
        (set(range(MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT)), [Port("a")], None),  # one dynamic port left
        (set(range(MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT)), [Port("a"), Port("b")], PORTS_EXHAUSTED),
        # a static port in the dynamic range takes the last free one
        (set(range(MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT)), [Port("a"), Port("s", MAX_DYNAMIC_PORT)], PORTS_EXHAUSTED),
    ],
)
def test_port_exhausted(kit, taken, ports, expected):
    t = tally()
    t.take_ports(taken)
    assert port_exhausted(t, PortAsk.for_group(kit.group(ports=ports))) == expected


def test_assign_ports_skips_taken_and_advances(kit):
    t = tally()
    t.take_ports([MIN_DYNAMIC_PORT, MIN_DYNAMIC_PORT + 2, 8080])
    ask = PortAsk.for_group(kit.group(ports=[Port("web", 8080 + 1, 80), Port("a"), Port("b", 0, 9090)]))
    got = assign_ports(t, ask)
    assert got == [
        AllocatedPort("web", 8081, 80),
        AllocatedPort("a", MIN_DYNAMIC_PORT + 1, 0),
        AllocatedPort("b", MIN_DYNAMIC_PORT + 3, 9090),
    ]
    assert {8081, MIN_DYNAMIC_PORT + 1, MIN_DYNAMIC_PORT + 3} <= t.ports
    assert t.dynamic_used == 4
    # the next search starts after the last port handed out, not at the lowest free one
    t.free_ports([MIN_DYNAMIC_PORT + 1])
    again = assign_ports(t, PortAsk.for_group(kit.group(ports=[Port("c")])))
    assert again == [AllocatedPort("c", MIN_DYNAMIC_PORT + 4, 0)]


def test_assign_ports_wraps_around_the_range(kit):
    t = tally()
    t.next_dynamic = MAX_DYNAMIC_PORT
    t.take_ports([MAX_DYNAMIC_PORT])
    got = assign_ports(t, PortAsk.for_group(kit.group(ports=[Port("a")])))
    assert got == [AllocatedPort("a", MIN_DYNAMIC_PORT, 0)]


def test_assign_takes_every_last_dynamic_port(kit):
    t = tally()
    t.take_ports(range(MIN_DYNAMIC_PORT, MAX_DYNAMIC_PORT - 1))
    ask = PortAsk.for_group(kit.group(ports=[Port("a"), Port("b")]))
    assert port_exhausted(t, ask) is None
    assert sorted(p.value for p in assign_ports(t, ask)) == [MAX_DYNAMIC_PORT - 1, MAX_DYNAMIC_PORT]
    assert t.dynamic_used == DYNAMIC_PORTS


def test_node_tally_counts_reserved_ports(kit):
    node = kit.node("n1")
    node.reserved_ports = [22, 20001]
    t = NodeTally.for_node(node)
    assert t.ports == {22, 20001} and t.dynamic_used == 1


def test_static_port_places_one_allocation_per_node(kit):
    job = kit.job("app", kit.group("web", count=3, ports=[Port("http", 8080)]))
    state = kit.state([kit.node(f"n{i}") for i in range(3)], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    allocs = placed(plan)
    assert len({a.node_id for a in allocs}) == 3
    assert all(a.ports == [AllocatedPort("http", 8080, 0)] for a in allocs)


def test_static_port_collision_is_a_placement_failure(kit):
    job = kit.job("app", kit.group("web", count=3, ports=[Port("http", 8080)]))
    state = kit.state([kit.node("n1"), kit.node("n2")], [job])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    assert len(placed(plan)) == 2
    failure = plan.failed_tg_allocs["web"]
    assert failure.missing == 1
    assert failure.dimension_exhausted == {PORT_COLLISION: 2}
    assert f"  Resources exhausted on 2 node(s): {PORT_COLLISION}" in failure.explain()


def test_existing_allocations_hold_their_ports(kit, ):
    other = kit.job("other", kit.group("db"))
    holder = kit.alloc(other, "db", 0, "n1")
    holder.ports = [AllocatedPort("db", 8080, 0), AllocatedPort("x", MIN_DYNAMIC_PORT, 0)]
    job = kit.job("app", kit.group("web", count=2, ports=[Port("http")]))
    for indexed in (False, True):
        state = kit.state([kit.node("n1")], [job, other], [holder], indexed=indexed)
        allocs = placed(schedule(state, kit.evaluation(job), now=0.0))
        values = sorted(p.value for a in allocs for p in a.ports)
        assert values == [MIN_DYNAMIC_PORT + 1, MIN_DYNAMIC_PORT + 2], indexed
        blocked = kit.job("blocked", kit.group("web", ports=[Port("http", 8080)]))
        state = kit.state([kit.node("n1")], [blocked, other], [holder], indexed=indexed)
        plan = schedule(state, kit.evaluation(blocked), now=0.0)
        assert plan.failed_tg_allocs["web"].dimension_exhausted == {PORT_COLLISION: 1}


def test_ports_of_a_stopped_allocation_are_free_again(kit):
    job = kit.job("app", kit.group("web", count=1, ports=[Port("http", 8080)]), version=1)
    old = kit.alloc(job, "web", 0, "n1", version=0)
    old.ports = [AllocatedPort("http", 8080, 0)]
    job0 = kit.job("app", kit.group("web", count=1, ports=[Port("http", 8081)]), version=0)  # ports changed: destructive
    state = kit.state([kit.node("n1")], [job], [old], versions=[job0])
    plan = schedule(state, kit.evaluation(job), now=0.0)
    (new,) = placed(plan)
    assert new.node_id == "n1" and new.ports == [AllocatedPort("http", 8080, 0)]
    assert [a.id for a in plan.node_update["n1"]] == [old.id]


def test_node_fit_checks_ports(kit):
    node = kit.node("n1")
    job = kit.job("app", kit.group("web"))
    a = kit.alloc(job, "web", 0, "n1", alloc_id="a")
    a.ports = [AllocatedPort("http", 8080, 0)]
    b = kit.alloc(job, "web", 1, "n1", alloc_id="b")
    b.ports = [AllocatedPort("http", 8080, 0)]
    assert node_fit(node, [a], [b]) == PORT_COLLISION
    assert node_fit(node, [a], [b], removed={"a"}) is None
    assert node_fit(node, [], [a, b]) == PORT_COLLISION
    node.reserved_ports = [8080]
    assert node_fit(node, [], [a]) == PORT_COLLISION
    c = kit.alloc(job, "web", 2, "n1", alloc_id="c")
    c.ports = [AllocatedPort("bad", 70000, 0)]
    assert node_fit(kit.node("n2"), [], [c]) == PORT_COLLISION


# -- the node's dynamic port range --


def ranged(kit, node_id: str, low: int, high: int):
    node = kit.node(node_id)
    node.min_dynamic_port, node.max_dynamic_port = low, high
    return node


def test_node_tally_takes_the_nodes_range(kit):
    node = ranged(kit, "n1", 30000, 30009)
    node.reserved_ports = [22, 25000, 30005]
    t = NodeTally.for_node(node)
    assert (t.min_dynamic, t.max_dynamic, t.next_dynamic) == (30000, 30009, 30000)
    assert t.dynamic_used == 1  # 25000 is in the default range, not this node's
    t.take_ports([29999, 30000, 30010])
    assert t.dynamic_used == 2
    t.free_ports([30000, 30005, 30010])
    assert t.dynamic_used == 0 and t.ports == {22, 25000, 29999}


def test_static_ports_count_against_the_nodes_range_only_when_inside_it(kit):
    t = tally(min_dynamic=30000, max_dynamic=30002, next_dynamic=30000)
    three = [Port("a"), Port("b"), Port("s", 30001)]
    assert port_exhausted(t, PortAsk.for_group(kit.group(ports=three))) is None
    assert port_exhausted(t, PortAsk.for_group(kit.group(ports=[*three, Port("c")]))) == PORTS_EXHAUSTED
    # static ports outside the node's range (in the default one, or well-known) are allowed and cost it nothing
    outside = [Port("a"), Port("b"), Port("c"), Port("s", 25000), Port("w", 80)]
    ask = PortAsk.for_group(kit.group(ports=outside))
    assert port_exhausted(t, ask) is None
    got = assign_ports(t, ask)
    assert sorted(p.value for p in got) == [80, 25000, 30000, 30001, 30002]
    assert t.dynamic_used == 3


def test_assign_ports_stays_inside_the_nodes_range(kit):
    t = tally(min_dynamic=30000, max_dynamic=30002)  # next_dynamic left at the default, outside the range
    ask = PortAsk.for_group(kit.group(ports=[Port("a")]))
    assert [assign_ports(t, ask)[0].value for _ in range(3)] == [30000, 30001, 30002]
    assert port_exhausted(t, ask) == PORTS_EXHAUSTED


def test_a_narrow_range_fills_up_and_the_next_placement_says_so(kit):
    job = kit.job("app", kit.group("web", count=4, ports=[Port("http", 0, 80)]))
    for indexed in (False, True):
        state = kit.state([ranged(kit, "n1", 21000, 21002)], [job], indexed=indexed)
        plan = schedule(state, kit.evaluation(job), now=0.0)
        assert sorted(p.value for a in placed(plan) for p in a.ports) == [21000, 21001, 21002], indexed
        failure = plan.failed_tg_allocs["web"]
        assert failure.missing == 1 and failure.dimension_exhausted == {PORTS_EXHAUSTED: 1}
        assert f"  Resources exhausted on 1 node(s): {PORTS_EXHAUSTED}" in failure.explain()
    # the same from the state: three allocations hold the range, a fourth job finds none
    holders = []
    for i, a in enumerate(placed(plan)):
        a.id = f"held{i}"
        holders.append(a)
    late = kit.job("late", kit.group("web", ports=[Port("http")]))
    for indexed in (False, True):
        state = kit.state([ranged(kit, "n1", 21000, 21002)], [job, late], holders, indexed=indexed)
        plan = schedule(state, kit.evaluation(late), now=0.0)
        assert not placed(plan)
        assert plan.failed_tg_allocs["web"].dimension_exhausted == {PORTS_EXHAUSTED: 1}, indexed


def test_a_static_port_taken_on_every_node_is_a_collision_whatever_their_ranges(kit):
    other = kit.job("other", kit.group("db"))
    nodes = [ranged(kit, "n1", 21000, 21002), ranged(kit, "n2", 8000, 8100), kit.node("n3")]
    holders = []
    for i, n in enumerate(nodes):
        a = kit.alloc(other, "db", i, n.id)
        a.ports = [AllocatedPort("db", 8080, 0)]
        holders.append(a)
    job = kit.job("app", kit.group("web", count=1, ports=[Port("http", 8080), Port("d")]))
    for indexed in (False, True):
        state = kit.state(nodes, [job, other], holders, indexed=indexed)
        plan = schedule(state, kit.evaluation(job), now=0.0)
        assert not placed(plan)
        failure = plan.failed_tg_allocs["web"]
        assert failure.dimension_exhausted == {PORT_COLLISION: 3}, indexed
        assert f"  Resources exhausted on 3 node(s): {PORT_COLLISION}" in failure.explain()


def test_no_host_port_is_shared_across_a_range_change(kit):
    """Allocations placed while the node had one range keep their ports when it registers another."""
    other = kit.job("other", kit.group("db"))
    old = []
    for i, port in enumerate((20000, 20001)):  # dynamic ports of the node's first range, 20000..20002
        a = kit.alloc(other, "db", i, "n1")
        a.ports = [AllocatedPort("db", port, 0)]
        old.append(a)
    job = kit.job("app", kit.group("web", count=5, ports=[Port("http")]))
    for indexed in (False, True):
        state = kit.state([ranged(kit, "n1", 20001, 20005)], [job, other], old, indexed=indexed)
        plan = schedule(state, kit.evaluation(job), now=0.0)
        assert sorted(p.value for a in placed(plan) for p in a.ports) == [20002, 20003, 20004, 20005], indexed
        assert plan.failed_tg_allocs["web"].dimension_exhausted == {PORTS_EXHAUSTED: 1}
        # moved away entirely: the old ports no longer count against the range, and stay taken
        state = kit.state([ranged(kit, "n1", 30000, 30001)], [job, other], old, indexed=indexed)
        plan = schedule(state, kit.evaluation(job), now=0.0)
        assert sorted(p.value for a in placed(plan) for p in a.ports) == [30000, 30001], indexed
        static = kit.job("static", kit.group("web", ports=[Port("http", 20000)]))
        state = kit.state([ranged(kit, "n1", 30000, 30001)], [static, other], old, indexed=indexed)
        plan = schedule(state, kit.evaluation(static), now=0.0)
        assert plan.failed_tg_allocs["web"].dimension_exhausted == {PORT_COLLISION: 1}, indexed


def test_preempting_a_static_ports_holder_never_leaves_too_few_dynamic_ports(kit):
    """A placement that would evict the holder of its static port, on a node whose range
    the evicted allocation does not free, is a placement failure (it once crashed assign_ports)."""
    low = kit.job("low", kit.group("db"))
    low.priority = 10
    holder = kit.alloc(low, "db", 0, "n1")
    holder.ports = [AllocatedPort("db", 8080, 0)]
    filler = kit.alloc(low, "db", 1, "n1")
    filler.ports = [AllocatedPort("x", 21000, 0)]  # the node's only dynamic port
    high = kit.job("high", kit.group("web", ports=[Port("http", 8080), Port("d")]))
    high.priority = 90
    state = kit.state([ranged(kit, "n1", 21000, 21000)], [low, high], [holder, filler])
    plan = schedule(state, kit.evaluation(high), now=0.0, config=SchedulerConfig(preempt_service=True))
    assert not placed(plan)
    assert plan.failed_tg_allocs["web"].dimension_exhausted == {PORT_COLLISION: 1}
