"""The reconciler: what a service or batch job wants against what it has.

For each task group it sorts the job's allocations into:

* ignored: already told to stop, or a service allocation that completed or was
  lost earlier (it no longer holds a slot, so the count brings a new one);
* kept: running or pending as wanted, a batch allocation that completed (never
  run again), or a failed one that is not (yet) to be rescheduled;
* lost: on a node that is down or gone; stopped with client status ``lost`` and
  replaced under the same name;
* updated: made by an older job version; stopped and replaced (a destructive
  update; in-place updates of non-placement fields are not done yet);
* rescheduled: failed and due for another try (see :func:`reschedule_now`).

Then it stops extras when the group has more slots than ``count`` (replacements
first, then failed ones, then duplicated names, then the highest index) and
places the missing ones under the lowest free indexes. A stopped job, or one
that is gone, has all its live allocations stopped.

Pure: no state reads, no clock; table-testable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from shoal.jobs.model import Job, TaskGroup
from shoal.jobs.structs import (
    ALLOC_COMPLETE,
    ALLOC_FAILED,
    ALLOC_LOST,
    CLIENT_TERMINAL,
    DESIRED_RUN,
    NODE_DOWN,
    Allocation,
    Node,
)

# Nomad's descriptions
ALLOC_NOT_NEEDED = "alloc not needed due to job update"
ALLOC_JOB_STOPPED = "alloc not needed since job was stopped"
ALLOC_JOB_GONE = "alloc not needed since job was deregistered"
ALLOC_LOST_DESC = "alloc is lost since its node is down"
ALLOC_UPDATING = "alloc is being updated due to job update"
ALLOC_GROUP_REMOVED = "alloc not needed since its task group was removed from the job"


def alloc_name(job_id: str, group: str, index: int) -> str:
    return f"{job_id}.{group}[{index}]"


@dataclass(slots=True, frozen=True)
class AllocPlace:
    """One allocation to place. ``previous`` is the allocation it replaces (lost,
    updated, rescheduled); with ``stop_previous`` the stop of ``previous`` is part
    of this placement and must be undone if the placement fails."""

    group: str
    name: str
    index: int
    previous: Allocation | None = None
    stop_previous: bool = False
    reschedule: bool = False  # ``previous`` failed: prefer another node than its


@dataclass(slots=True, frozen=True)
class AllocStop:
    alloc: Allocation
    description: str
    client_status: str  # the client status the stopped record gets (``lost`` or unchanged)


@dataclass(slots=True)
class DesiredUpdates:
    """Per-group counts, Nomad's DesiredUpdates (for plan annotations and tests)."""

    place: int = 0
    stop: int = 0
    ignore: int = 0
    lost: int = 0
    destructive_update: int = 0
    reschedule: int = 0


@dataclass(slots=True)
class ReconcileResult:
    place: list[AllocPlace] = field(default_factory=list)
    stop: list[AllocStop] = field(default_factory=list)
    desired: dict[str, DesiredUpdates] = field(default_factory=dict)


def reschedule_now(alloc: Allocation, job: Job, group: TaskGroup, now: float) -> bool:
    """Whether a failed allocation is to be replaced now.

    The hook for reschedule policies (attempts, interval, delay): until they land,
    failed allocations keep their slot and are not replaced.
    """
    return False


def node_lost(node: Node | None) -> bool:
    return node is None or node.status == NODE_DOWN


@dataclass(slots=True)
class _GroupAllocs:
    keep: list[Allocation] = field(default_factory=list)
    lost: list[Allocation] = field(default_factory=list)
    update: list[Allocation] = field(default_factory=list)
    reschedule: list[Allocation] = field(default_factory=list)
    ignore: int = 0


def _classify(
    job: Job, group: TaskGroup, allocs: Sequence[Allocation], tainted: Mapping[str, Node | None], now: float
) -> _GroupAllocs:
    batch = job.type == "batch"
    replaced = {a.previous_allocation for a in allocs if a.previous_allocation}
    out = _GroupAllocs()
    for a in allocs:
        if a.desired_status != DESIRED_RUN:
            out.ignore += 1
            continue
        status = a.client_status
        if status == ALLOC_COMPLETE and batch:
            out.keep.append(a)  # done; never run again
            continue
        if status in (ALLOC_COMPLETE, ALLOC_LOST):
            out.ignore += 1
            continue
        if status == ALLOC_FAILED:
            if a.id in replaced:
                out.ignore += 1
            elif reschedule_now(a, job, group, now):
                out.reschedule.append(a)
            elif a.job_version != job.version:
                out.update.append(a)
            else:
                out.keep.append(a)
            continue
        if a.node_id in tainted and node_lost(tainted[a.node_id]):
            out.lost.append(a)
        elif a.job_version != job.version:
            out.update.append(a)
        else:
            out.keep.append(a)
    return out


def _stop_desc(a: Allocation, job: Job | None) -> AllocStop:
    return AllocStop(a, ALLOC_JOB_GONE if job is None else ALLOC_JOB_STOPPED, a.client_status)


def _stop_all(
    job: Job | None, allocs: Sequence[Allocation], tainted: Mapping[str, Node | None], result: ReconcileResult
) -> None:
    for a in allocs:
        if a.desired_status != DESIRED_RUN or a.client_status in CLIENT_TERMINAL:
            continue
        d = result.desired.setdefault(a.task_group, DesiredUpdates())
        d.stop += 1
        if a.node_id in tainted and node_lost(tainted[a.node_id]):
            result.stop.append(AllocStop(a, ALLOC_LOST_DESC, ALLOC_LOST))
        else:
            result.stop.append(_stop_desc(a, job))


def reconcile(
    job: Job | None,
    allocs: Sequence[Allocation],
    tainted: Mapping[str, Node | None],
    *,
    now: float = 0.0,
) -> ReconcileResult:
    """Diff ``job`` against its allocations.

    ``tainted`` maps the node ids of allocations whose node is not healthy to the
    node record (None when the node is gone); allocations on down or gone nodes
    are lost. Nodes that are fine need not be in it.
    """
    result = ReconcileResult()
    ordered = sorted(allocs, key=lambda a: (a.index, a.create_time, a.id))
    if job is None or job.stop:
        _stop_all(job, ordered, tainted, result)
        return result

    by_group: dict[str, list[Allocation]] = {}
    for a in ordered:
        by_group.setdefault(a.task_group, []).append(a)
    known = {g.name for g in job.groups}
    for name, group_allocs in by_group.items():
        if name in known:
            continue
        for a in group_allocs:
            if a.desired_status != DESIRED_RUN or a.client_status in CLIENT_TERMINAL:
                continue
            result.desired.setdefault(name, DesiredUpdates()).stop += 1
            lost = a.node_id in tainted and node_lost(tainted[a.node_id])
            result.stop.append(
                AllocStop(a, ALLOC_LOST_DESC, ALLOC_LOST) if lost else AllocStop(a, ALLOC_GROUP_REMOVED, a.client_status)
            )

    for group in job.groups:
        _reconcile_group(job, group, by_group.get(group.name, []), tainted, now, result)
    return result


def _reconcile_group(
    job: Job,
    group: TaskGroup,
    allocs: list[Allocation],
    tainted: Mapping[str, Node | None],
    now: float,
    result: ReconcileResult,
) -> None:
    c = _classify(job, group, allocs, tainted, now)
    d = result.desired.setdefault(group.name, DesiredUpdates())
    d.ignore = c.ignore
    count = max(group.count, 0)

    # Every non-ignored allocation holds its slot (its name); replacements reuse it.
    replacing = {a.id for a in (*c.lost, *c.update, *c.reschedule)}
    slots = [*c.lost, *c.reschedule, *c.update, *c.keep]
    excess = len(slots) - count
    victims: set[str] = set()
    if excess > 0:
        done_batch = job.type == "batch"
        position = {a.id: i for i, a in enumerate(allocs)}  # oldest first per index
        holder: dict[int, int] = {}  # index -> position of its oldest holder
        for a in slots:
            p = position[a.id]
            if a.index not in holder or p < holder[a.index]:
                holder[a.index] = p

        def victim_order(a: Allocation) -> tuple[int, int, int, int, int]:
            return (
                0 if a.id in replacing else 1,
                0 if a.client_status == ALLOC_FAILED else 1,
                0 if position[a.id] != holder[a.index] else 1,  # a duplicate of an older name
                -a.index,
                -position[a.id],
            )

        lost_ids = {a.id for a in c.lost}
        candidates = [a for a in slots if not (done_batch and a.client_status == ALLOC_COMPLETE)]
        for a in sorted(candidates, key=victim_order)[:excess]:
            victims.add(a.id)
            d.stop += 1
            if a.id in lost_ids:
                d.lost += 1
                result.stop.append(AllocStop(a, ALLOC_LOST_DESC, ALLOC_LOST))
            else:
                result.stop.append(AllocStop(a, ALLOC_NOT_NEEDED, a.client_status))

    # Names stay unique among live allocations: kept ones hold theirs, a replacement
    # takes its predecessor's unless another already has it (duplicates), and
    # everything else gets the lowest free index.
    used = {a.index for a in c.keep if a.id not in victims}
    index_of: dict[str, int] = {}
    clashes: list[Allocation] = []
    for a in (*c.lost, *c.reschedule, *c.update):
        if a.id in victims:
            continue
        if a.index in used:
            clashes.append(a)
        else:
            used.add(a.index)
            index_of[a.id] = a.index
    free = _free_indexes(used)
    for a in clashes:
        index_of[a.id] = next(free)

    def name_for(a: Allocation) -> int:
        return index_of[a.id]

    for a in c.lost:
        if a.id in victims:
            continue
        i = name_for(a)
        d.lost += 1
        d.stop += 1
        d.place += 1
        result.stop.append(AllocStop(a, ALLOC_LOST_DESC, ALLOC_LOST))
        result.place.append(AllocPlace(group.name, alloc_name(job.id, group.name, i), i, a))
    for a in c.reschedule:
        if a.id in victims:
            continue
        i = name_for(a)
        d.reschedule += 1
        d.place += 1
        result.place.append(AllocPlace(group.name, alloc_name(job.id, group.name, i), i, a, reschedule=True))
    for a in c.update:
        if a.id in victims:
            continue
        i = name_for(a)
        d.destructive_update += 1
        result.stop.append(AllocStop(a, ALLOC_UPDATING, a.client_status))
        result.place.append(AllocPlace(group.name, alloc_name(job.id, group.name, i), i, a, stop_previous=True))

    missing = count - (len(slots) - len(victims))
    for _ in range(missing):
        i = next(free)
        d.place += 1
        result.place.append(AllocPlace(group.name, alloc_name(job.id, group.name, i), i))


def _free_indexes(used: set[int]) -> Iterator[int]:
    """The lowest indexes not in ``used`` (which it adds them to), in order."""
    i = 0
    while True:
        if i not in used:
            used.add(i)
            yield i
        i += 1
