"""Preemption: which lower-priority allocations to evict so a placement fits a node.

Nomad's Preemptor, for one node and one allocation to place:

* candidates are the node's live allocations of *other* jobs whose priority is
  at least :data:`PRIORITY_DELTA` (10) below the placing job's;
* allocations holding a static port the placement asks for must go (if any of
  them is not a candidate, preemption fails);
* then, lowest priority first, the candidate closest in size to what is still
  missing (Nomad's basic resource distance over cpu, memory, disk) is taken,
  until the freed resources cover the ask;
* a last pass drops any victim the others make unnecessary (highest priority
  and smallest first), so the set is minimal.

Pure: tallies and allocation records in, the victims out (or None).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from shoal.jobs.model import Resources
from shoal.jobs.structs import DESIRED_EVICT, Allocation
from shoal.scheduler.ports import PortAsk, port_exhausted
from shoal.scheduler.state import StateReader
from shoal.scheduler.usage import NodeTally

PRIORITY_DELTA = 10
PREEMPTED_DESC = "Preempted by alloc ID {}"


@dataclass(slots=True, frozen=True)
class Candidate:
    alloc: Allocation
    priority: int


def distance(ask: tuple[int, int, int], used: Resources) -> float:
    """Nomad's basicResourceDistance: how far an allocation's size is from the ask."""
    cpu, mem, disk = ask
    c = (cpu - used.cpu) / cpu if cpu > 0 else 0.0
    m = (mem - used.memory) / mem if mem > 0 else 0.0
    d = (disk - used.disk) / disk if disk > 0 else 0.0
    return math.sqrt(c * c + m * m + d * d)


def _covers(free: list[int], ask: Resources) -> bool:
    return free[0] >= ask.cpu and free[1] >= ask.memory and free[2] >= ask.disk


def preempt_for(
    tally: NodeTally,
    ask: Resources,
    ports: PortAsk | None,
    candidates: Sequence[Candidate],
    job_priority: int,
) -> list[Allocation] | None:
    """The allocations to evict from the node of ``tally`` so that ``ask`` (and its
    ports) fits, or None when no set of eligible candidates makes it fit.
    ``candidates`` are the node's live allocations of other jobs with their job's
    priority; an empty list is returned when nothing needs evicting."""
    free = [tally.cpu_cap - tally.cpu, tally.memory_cap - tally.memory, tally.disk_cap - tally.disk]
    eligible = [c for c in candidates if job_priority - c.priority >= PRIORITY_DELTA]
    chosen: list[Candidate] = []
    if ports is not None:
        wanted = ports.static_values
        holders = [c for c in candidates if any(p.value in wanted for p in c.alloc.ports)]
        if any(job_priority - c.priority < PRIORITY_DELTA for c in holders):
            return None
        after = replace(tally, ports=set(tally.ports))  # the node once the holders are gone
        after.free_ports([p.value for c in holders for p in c.alloc.ports])
        if port_exhausted(after, ports) is not None:
            # a static port held by something that is not an allocation (reserved), or too few
            # dynamic ports even so: evicting for dynamic ports is not attempted
            return None
        chosen.extend(holders)
        for c in holders:
            r = c.alloc.resources
            free[0] += r.cpu
            free[1] += r.memory
            free[2] += r.disk
    if not _covers(free, ask):
        held = {c.alloc.id for c in chosen}
        by_priority: dict[int, list[Candidate]] = {}
        for c in eligible:
            if c.alloc.id not in held:
                by_priority.setdefault(c.priority, []).append(c)
        needed = [ask.cpu, ask.memory, ask.disk]
        met = False
        for priority in sorted(by_priority):
            group = list(by_priority[priority])
            while group and not met:
                need = (needed[0], needed[1], needed[2])
                best = min(range(len(group)), key=lambda i: (distance(need, group[i].alloc.resources), group[i].alloc.id))
                c = group.pop(best)
                r = c.alloc.resources
                free[0] += r.cpu
                free[1] += r.memory
                free[2] += r.disk
                needed[0] -= r.cpu
                needed[1] -= r.memory
                needed[2] -= r.disk
                chosen.append(c)
                met = _covers(free, ask)
            if met:
                break
        if not met:
            return None
        chosen = _prune(chosen, free, ask, mandatory=held)
    return [c.alloc for c in chosen]


def _prune(chosen: list[Candidate], free: list[int], ask: Resources, mandatory: set[str]) -> list[Candidate]:
    """Drop victims the rest make unnecessary: highest priority, then smallest, first."""
    keep = list(chosen)
    order = sorted(
        (c for c in chosen if c.alloc.id not in mandatory),
        key=lambda c: (-c.priority, c.alloc.resources.cpu + c.alloc.resources.memory, c.alloc.id),
    )
    for c in order:
        r = c.alloc.resources
        trial = [free[0] - r.cpu, free[1] - r.memory, free[2] - r.disk]
        if _covers(trial, ask):
            free[:] = trial
            keep.remove(c)
    return keep


def evicted_record(victim: Allocation, by_alloc_id: str, now: float) -> Allocation:
    """The record of an evicted allocation, as the plan carries it."""
    return replace(
        victim,
        desired_status=DESIRED_EVICT,
        desired_description=PREEMPTED_DESC.format(by_alloc_id),
        preempted_by_allocation=by_alloc_id,
        modify_time=now,
    )


DEFAULT_PRIORITY = 50  # Nomad's default job priority


def priority_lookup(state: StateReader) -> Callable[[Allocation], int]:
    """A cached ``alloc -> its job's priority`` (50, Nomad's default, when the job is gone)."""
    cache: dict[tuple[str, str], int] = {}

    def of(a: Allocation) -> int:
        key = (a.namespace, a.job_id)
        p = cache.get(key)
        if p is None:
            job = state.job(*key)
            p = cache[key] = DEFAULT_PRIORITY if job is None else job.priority
        return p

    return of
