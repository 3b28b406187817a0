"""Which allocations preemption evicts: eligible by priority, lowest first, closest fit, minimal."""

import pytest

from shoal.jobs.model import Port, Resources
from shoal.jobs.structs import AllocatedPort, Allocation
from shoal.scheduler.ports import PortAsk
from shoal.scheduler.preempt import Candidate, distance, preempt_for
from shoal.scheduler.usage import NodeTally


def alloc(alloc_id, cpu, memory, disk=0, ports=()):
    return Allocation(id=alloc_id, job_id=f"job-{alloc_id}", node_id="n1",
                      resources=Resources(cpu=cpu, memory=memory, disk=disk),
                      ports=[AllocatedPort("p", v, 0) for v in ports])


def node_with(*cands, cpu=4000, memory=4000, **dynamic_range):
    t = NodeTally(cpu, memory, 100_000, **dynamic_range)
    for c in cands:
        t.add_alloc(c.alloc)
    return t


def ids(victims):
    return None if victims is None else sorted(a.id for a in victims)


def test_distance():
    assert distance((1000, 1000, 0), Resources(cpu=1000, memory=1000)) == 0.0
    assert distance((1000, 1000, 0), Resources(cpu=500, memory=1000)) == pytest.approx(0.5)
    assert distance((1000, 0, 0), Resources(cpu=0, memory=5000)) == pytest.approx(1.0)  # memory not asked


def test_nothing_to_evict_when_it_fits():
    c = Candidate(alloc("a", 1000, 1000), 10)
    assert preempt_for(node_with(c), Resources(cpu=1000, memory=1000), None, [c], 90) == []


def test_priority_delta_of_ten():
    c = Candidate(alloc("a", 4000, 1000), 40)
    t = node_with(c)
    ask = Resources(cpu=1000, memory=100)
    assert preempt_for(t, ask, None, [c], 49) is None
    assert ids(preempt_for(t, ask, None, [c], 50)) == ["a"]


def test_lowest_priority_first_then_closest_fit():
    cands = [
        Candidate(alloc("p30-big", 2000, 2000), 30),
        Candidate(alloc("p20-small", 500, 500), 20),
        Candidate(alloc("p20-fit", 1000, 1000), 20),
        Candidate(alloc("p20-small2", 500, 500), 20),
    ]
    t = node_with(*cands)  # 4000 of 4000 cpu used
    assert ids(preempt_for(t, Resources(cpu=1000, memory=1000), None, cands, 90)) == ["p20-fit"]
    # more than the lowest priority has: it all goes, then the next priority's closest
    got = ids(preempt_for(t, Resources(cpu=2500, memory=2500), None, cands, 90))
    assert "p30-big" in got and len(got) <= 3


def test_minimal_set_after_the_greedy_pass():
    # greedy by distance takes the small one first, then the big one makes it unnecessary
    cands = [Candidate(alloc("small", 900, 900), 10), Candidate(alloc("big", 3000, 3000), 10)]
    t = node_with(*cands, cpu=4000, memory=4000)
    assert ids(preempt_for(t, Resources(cpu=2000, memory=2000), None, cands, 90)) == ["big"]


def test_not_enough_to_evict():
    c = Candidate(alloc("a", 1000, 1000), 10)
    t = node_with(c, cpu=2000, memory=2000)
    assert preempt_for(t, Resources(cpu=5000, memory=100), None, [c], 90) is None


def test_static_port_holders_must_go():
    holder = Candidate(alloc("holder", 100, 100, ports=[8080]), 10)
    other = Candidate(alloc("other", 100, 100), 10)
    t = node_with(holder, other)
    ask = PortAsk.for_group(_group_with_port(8080))
    assert ids(preempt_for(t, Resources(cpu=100, memory=100), ask, [holder, other], 90)) == ["holder"]
    high = Candidate(holder.alloc, 85)
    assert preempt_for(t, Resources(cpu=100, memory=100), ask, [high, other], 90) is None
    reserved = node_with(other)
    reserved.take_ports([8080])  # the node reserves it: nothing to evict
    assert preempt_for(reserved, Resources(cpu=100, memory=100), ask, [other], 90) is None


def test_evicting_for_a_static_port_needs_the_dynamic_ones_to_fit_after():
    """A node whose two-port range is full: the holder of the static port may go only if
    that frees a dynamic port (evicting for dynamic ports alone is not attempted)."""
    holder = Candidate(alloc("holder", 100, 100, ports=[8080]), 10)
    filler = Candidate(alloc("filler", 100, 100, ports=[30000, 30001]), 10)
    t = node_with(holder, filler, min_dynamic=30000, max_dynamic=30001)
    ask = PortAsk.for_group(_group_with_port(8080, dynamic=True))
    assert preempt_for(t, Resources(cpu=100, memory=100), ask, [holder, filler], 90) is None
    both = Candidate(alloc("both", 100, 100, ports=[8080, 30001]), 10)
    only = Candidate(alloc("only", 100, 100, ports=[30000]), 10)
    t = node_with(both, only, min_dynamic=30000, max_dynamic=30001)
    assert ids(preempt_for(t, Resources(cpu=100, memory=100), ask, [both, only], 90)) == ["both"]


def _group_with_port(value, dynamic=False):
    from shoal.jobs.model import Network, TaskGroup

    ports = [Port("http", value)] + ([Port("d")] if dynamic else [])
    return TaskGroup(name="g", networks=[Network(ports=ports)])
