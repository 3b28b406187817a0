"""Usage bookkeeping: the per-node index a state keeps, its best-fit order, and tallies."""

from collections import Counter
from dataclasses import replace

from shoal.jobs.structs import NODE_DOWN, AllocatedPort
from shoal.scheduler import schedule
from shoal.scheduler.usage import PlanUsage, UsageIndex, capacity_level


def test_capacity_level_is_logarithmic():
    assert capacity_level(0) == 0 and capacity_level(-5) == 0
    assert capacity_level(1) == 1
    assert capacity_level(1024) == capacity_level(1100) == 41
    assert capacity_level(2048) == 45  # four levels per doubling


def test_index_sums_live_allocations(kit):
    job = kit.job("app", kit.group("web", cpu=500, memory=256, disk=10))
    a = kit.alloc(job, "web", 0, "n1", alloc_id="a")
    a.ports = [AllocatedPort("http", 20000, 0)]
    b = kit.alloc(job, "web", 1, "n1", alloc_id="b")
    index = UsageIndex([kit.node("n1")], [a, b])
    u = index.node_usage("n1")
    assert (u.cpu, u.memory, u.disk, u.allocs, u.ports) == (1000, 512, 20, 2, {20000: 1})
    index.upsert(replace(a, client_status="complete"))
    u = index.node_usage("n1")
    assert (u.cpu, u.allocs, u.ports) == (500, 1, {})
    index.upsert(replace(b, desired_status="stop"))
    assert index.node_usage("n1").allocs == 0
    index.upsert(replace(b, node_id="n2", desired_status="run"))  # moved (a re-registered record)
    assert (index.node_usage("n1").cpu, index.node_usage("n2").cpu) == (0, 500)
    index.delete("b")
    assert index.node_usage("n2").cpu == 0 and index.node_usage("nowhere").cpu == 0


def test_candidates_used_nodes_tightest_first_then_empty_largest_first(kit):
    job = kit.job("app", kit.group("web", cpu=1000, memory=1024))
    nodes = [
        kit.node("small-empty", cpu=2000, memory=2048),
        kit.node("big-empty", cpu=16000, memory=32768),
        kit.node("half", cpu=4000, memory=8192),
        kit.node("nearly-full", cpu=4000, memory=8192),
        kit.node("full", cpu=4000, memory=8192),
        kit.node("down", status=NODE_DOWN),
        kit.node("draining", drain=True),
    ]
    allocs = [kit.alloc(job, "web", 0, "half", alloc_id="h")]
    allocs += [kit.alloc(job, "web", i, "nearly-full", alloc_id=f"nf{i}") for i in range(3)]
    allocs += [kit.alloc(job, "web", i, "full", alloc_id=f"f{i}") for i in range(4)]
    index = UsageIndex(nodes, allocs)
    assert index.node_count() == 5
    assert list(index.candidates(1000, 1024)) == ["nearly-full", "half", "big-empty", "small-empty"]
    assert list(index.candidates(3000, 1024)) == ["half", "big-empty"]
    # a node leaving the schedulable set leaves the order; coming back puts it in again
    index.put_node(replace(nodes[2], eligible=False))
    assert "half" not in list(index.candidates(100, 100))
    index.put_node(nodes[2])
    assert list(index.candidates(3000, 1024)) == ["half", "big-empty"]
    index.remove_node("big-empty")
    assert list(index.candidates(3000, 1024)) == ["half"]


def test_tallies_from_the_index_equal_a_scan(kit):
    job = kit.job("app", kit.group("web", cpu=300, memory=200))
    allocs = [kit.alloc(job, "web", i, "n1", alloc_id=f"a{i}") for i in range(3)]
    allocs[0].ports = [AllocatedPort("x", 21000, 0)]
    allocs.append(kit.alloc(job, "web", 9, "n1", alloc_id="gone", client_status="failed"))
    plain = kit.state([kit.node("n1")], [job], allocs)
    indexed = kit.state([kit.node("n1")], [job], allocs, indexed=True)
    for state in (plain, indexed):
        usage = PlanUsage(state, allocs)
        usage.stop(allocs[1])  # before the tally exists
        t = usage.tally(state.node("n1"))
        assert (t.cpu, t.memory, t.ports, t.dynamic_used) == (600, 400, {21000}, 1)
        usage.stop(allocs[0])  # after
        assert (t.cpu, t.ports) == (300, set())
        usage.unstop(allocs[0])
        assert (t.cpu, t.ports) == (600, {21000})


def test_best_fit_packs_onto_used_nodes_first(kit):
    other = kit.job("other", kit.group("db", cpu=2000, memory=2048))
    job = kit.job("app", kit.group("web", count=12, cpu=500, memory=512))
    nodes = [kit.node(f"n{i}", cpu=4000, memory=8192) for i in range(6)]
    existing = [kit.alloc(other, "db", 0, "n3")]

    def used(indexed):
        plan = schedule(kit.state(nodes, [job, other], existing, indexed=indexed), kit.evaluation(job), now=0.0)
        return Counter(a.node_id for v in plan.node_allocation.values() for a in v)

    best_fit = used(True)
    assert best_fit["n3"] == 4  # the used node is filled first
    assert len(best_fit) < len(used(False))  # fewer nodes than the ring's random candidates
