"""The reconciler: what a service or batch job wants against what it has.

For each task group it sorts the job's allocations into:

* ignored: already told to stop, or a service allocation that completed or was
  lost earlier (it no longer holds a slot, so the count brings a new one);
* kept: running or pending as wanted, a batch allocation that completed (never
  run again), or a failed one that is not (yet) to be rescheduled;
* lost: on a node that is down or gone; stopped with client status ``lost`` and
  replaced under the same name;
* migrated: on a draining node; stopped ("alloc is being migrated") and replaced
  elsewhere, the replacement pointing at it (``previous_allocation``);
* updated in place: made by an older job version that differs from the current
  one only in fields that need no restart (count, restart and reschedule
  policies, services, constraints, ...; see :func:`tasks_updated`): the record
  takes the new version, the allocation keeps running;
* updated destructively: made by an older version whose tasks changed (driver,
  config, env, meta, resources, ports, ...): stopped and replaced;
* rescheduled: failed and due for another try now (see :func:`reschedule_decision`);
  a failed allocation due later gets a follow-up evaluation at its time
  (``reschedule_later``, batched by :func:`followup_evals`).

Then it stops extras when the group has more slots than ``count`` (replacements
first, then failed ones, then duplicated names, then the highest index) and
places the missing ones under the lowest free indexes. A stopped job, or one
that is gone, has all its live allocations stopped.

Pure: no state reads, no clock; table-testable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from shoal.jobs.model import Job, ReschedulePolicy, TaskGroup, default_reschedule
from shoal.jobs.structs import (
    ALLOC_COMPLETE,
    ALLOC_FAILED,
    ALLOC_LOST,
    CLIENT_TERMINAL,
    DESIRED_RUN,
    EVAL_PENDING,
    NODE_DOWN,
    Allocation,
    Evaluation,
    Node,
    RescheduleEvent,
)

# Nomad's descriptions
ALLOC_NOT_NEEDED = "alloc not needed due to job update"
ALLOC_JOB_STOPPED = "alloc not needed since job was stopped"
ALLOC_JOB_GONE = "alloc not needed since job was deregistered"
ALLOC_LOST_DESC = "alloc is lost since its node is down"
ALLOC_UPDATING = "alloc is being updated due to job update"
ALLOC_GROUP_REMOVED = "alloc not needed since its task group was removed from the job"
ALLOC_MIGRATING = "alloc is being migrated"
ALLOC_RESCHEDULED = "alloc was rescheduled because it failed"

TRIGGER_RETRY_FAILED_ALLOC = "alloc-failure"
FOLLOWUP_EVAL_DESC = "created for delayed rescheduling"
RESCHEDULE_WINDOW = 1.0  # a failed allocation due within this many seconds is rescheduled now
FOLLOWUP_BATCH_WINDOW = 5.0  # failures due within this many seconds share one follow-up evaluation
MAX_PAST_RESCHEDULE_EVENTS = 5  # events carried over under an unlimited policy


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
    migrate: bool = False  # ``previous`` is on a draining node


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
    in_place_update: int = 0
    migrate: int = 0
    reschedule: int = 0
    reschedule_later: int = 0


@dataclass(slots=True)
class ReconcileResult:
    place: list[AllocPlace] = field(default_factory=list)
    stop: list[AllocStop] = field(default_factory=list)
    inplace: list[Allocation] = field(default_factory=list)  # to move to the job's version, running on
    reschedule_later: list[tuple[Allocation, float]] = field(default_factory=list)  # (failed alloc, when)
    desired: dict[str, DesiredUpdates] = field(default_factory=dict)


# -- rescheduling (Nomad's RescheduleTracker arithmetic) ---------------------------------


def reschedule_policy(job: Job, group: TaskGroup) -> ReschedulePolicy:
    return group.reschedule or default_reschedule(job.type)


def fail_time(alloc: Allocation) -> float:
    """When the allocation failed: its last task's finish, else its last update."""
    finished = max((t.finished_at for t in alloc.task_states.values()), default=0.0)
    return finished or alloc.modify_time or alloc.create_time


def next_delay(alloc: Allocation, policy: ReschedulePolicy) -> float:
    """How long after its failure ``alloc`` is to be replaced: ``delay`` for a first
    failure, then per ``delay_function`` from the previous delays (constant,
    exponential: doubled, fibonacci: the sum of the last two), capped at
    ``max_delay``; once capped, a failure more than ``max_delay`` after the last
    reschedule starts the series again."""
    delay = policy.delay
    events = alloc.reschedule_events
    if not events:
        return delay
    fn = policy.delay_function
    if fn == "exponential":
        delay = events[-1].delay * 2
    elif fn == "fibonacci":
        if len(events) >= 2:
            n1, n2 = events[-1].delay, events[-2].delay
            delay = n1 if (n2 == policy.max_delay and n1 == policy.delay) else n1 + n2
    else:
        return delay
    if policy.max_delay > 0 and delay > policy.max_delay:
        delay = policy.max_delay
        if fail_time(alloc) - events[-1].reschedule_time > delay:
            delay = policy.delay
    return delay


def attempts_in_interval(alloc: Allocation, policy: ReschedulePolicy, at: float) -> int:
    return sum(1 for e in alloc.reschedule_events if at - e.reschedule_time < policy.interval)


def next_reschedule_time(alloc: Allocation, policy: ReschedulePolicy) -> tuple[float, bool]:
    """(when, eligible): Nomad's NextRescheduleTime for a failed allocation."""
    if alloc.desired_status != DESIRED_RUN or alloc.client_status != ALLOC_FAILED:
        return 0.0, False
    if not (policy.unlimited or policy.attempts > 0):
        return 0.0, False
    failed = fail_time(alloc)
    delay = next_delay(alloc, policy)
    eligible = policy.unlimited or (policy.attempts > 0 and not alloc.reschedule_events)
    if policy.attempts > 0 and alloc.reschedule_events:
        eligible = attempts_in_interval(alloc, policy, failed) < policy.attempts and delay < policy.interval
    return failed + delay, eligible


def reschedule_decision(
    alloc: Allocation, policy: ReschedulePolicy, now: float, eval_id: str = ""
) -> tuple[bool, float | None]:
    """(now?, later time or None) for a failed allocation. It is rescheduled now when
    eligible and due (within a second), or when this is the follow-up evaluation
    made for it; later when eligible, not yet due and no follow-up exists yet."""
    when, eligible = next_reschedule_time(alloc, policy)
    if not eligible:
        return False, None
    if (eval_id and alloc.followup_eval_id == eval_id) or when - now <= RESCHEDULE_WINDOW:
        return True, None
    if not alloc.followup_eval_id:
        return False, when
    return False, None


def reschedule_events(prev: Allocation, policy: ReschedulePolicy, now: float) -> list[RescheduleEvent]:
    """The history a replacement of the failed ``prev`` carries: the earlier events
    that still count (those within the interval; the last few when unlimited)
    and one for this reschedule."""
    if policy.attempts > 0:
        kept = [e for e in prev.reschedule_events if policy.interval > 0 and now - e.reschedule_time <= policy.interval]
    else:
        kept = list(prev.reschedule_events[-MAX_PAST_RESCHEDULE_EVENTS:])
    kept.append(RescheduleEvent(now, prev.id, prev.node_id, next_delay(prev, policy)))
    return kept


def followup_evals(
    job: Job,
    later: Sequence[tuple[Allocation, float]],
    *,
    previous_eval: str,
    now: float,
    new_id: Callable[[], str],
) -> tuple[list[Evaluation], dict[str, str]]:
    """Delayed evaluations for failed allocations due later, one per window of
    five seconds (Nomad batches them so), and which allocation waits for which."""
    evals: list[Evaluation] = []
    owner: dict[str, str] = {}
    start = 0.0
    current: Evaluation | None = None
    for alloc, when in sorted(later, key=lambda x: (x[1], x[0].id)):
        if current is None or when - start >= FOLLOWUP_BATCH_WINDOW:
            start = when
            current = Evaluation.for_job(
                job, new_id(), TRIGGER_RETRY_FAILED_ALLOC, now,
                job_modify_index=job.job_modify_index,
                status=EVAL_PENDING,
                status_description=FOLLOWUP_EVAL_DESC,
                previous_eval=previous_eval,
                wait_until=when,
            )
            evals.append(current)
        owner[alloc.id] = current.id
    return evals, owner


# -- in-place or destructive --------------------------------------------------------------


def _task_meta(job: Job, group: TaskGroup, task_meta: Mapping[str, str]) -> dict[str, str]:
    return {**job.meta, **group.meta, **task_meta}


def tasks_updated(old: Job, new: Job, group_name: str) -> str | None:
    """Why allocations of ``group_name`` made by ``old`` must be replaced to run
    ``new`` (Nomad's tasksUpdated), or None when an in-place update will do.

    Destructive: the tasks (their number, names, driver, user, config, env,
    meta as the task sees it, resources, lifecycle), the ephemeral disk and the
    network (ports). In place: anything else (count, restart and reschedule
    policies, services and checks, kill timeout, constraints and affinities,
    which the scheduler re-checks on the allocation's node).
    """
    a, b = old.group(group_name), new.group(group_name)
    if a is None or b is None:
        return "task group"
    if len(a.tasks) != len(b.tasks):
        return "number of tasks"
    if a.ephemeral_disk != b.ephemeral_disk:
        return "ephemeral disk"
    if a.networks != b.networks:
        return "network"
    for at in a.tasks:
        bt = next((t for t in b.tasks if t.name == at.name), None)
        if bt is None:
            return f"task {at.name} removed"
        if at.driver != bt.driver:
            return f"task {at.name} driver"
        if at.user != bt.user:
            return f"task {at.name} user"
        if at.config != bt.config:
            return f"task {at.name} config"
        if at.env != bt.env:
            return f"task {at.name} env"
        if _task_meta(old, a, at.meta) != _task_meta(new, b, bt.meta):
            return f"task {at.name} meta"
        ra, rb = at.resources, bt.resources
        if (ra.cpu, ra.memory, ra.memory_max, ra.disk) != (rb.cpu, rb.memory, rb.memory_max, rb.disk):
            return f"task {at.name} resources"
        if at.lifecycle != bt.lifecycle:
            return f"task {at.name} lifecycle"
    return None


def node_lost(node: Node | None) -> bool:
    return node is None or node.status == NODE_DOWN


@dataclass(slots=True)
class _GroupAllocs:
    keep: list[Allocation] = field(default_factory=list)
    lost: list[Allocation] = field(default_factory=list)
    migrate: list[Allocation] = field(default_factory=list)
    update: list[Allocation] = field(default_factory=list)
    inplace: list[Allocation] = field(default_factory=list)
    reschedule: list[Allocation] = field(default_factory=list)
    later: list[tuple[Allocation, float]] = field(default_factory=list)
    ignore: int = 0


def _classify(
    job: Job,
    group: TaskGroup,
    allocs: Sequence[Allocation],
    tainted: Mapping[str, Node | None],
    now: float,
    eval_id: str,
    job_versions: Mapping[int, Job],
) -> _GroupAllocs:
    batch = job.type == "batch"
    policy = reschedule_policy(job, group)
    replaced = {a.previous_allocation for a in allocs if a.previous_allocation}
    inplace_ok: dict[int, bool] = {}
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
                continue
            resched, later = reschedule_decision(a, policy, now, eval_id)
            if resched:
                out.reschedule.append(a)
            elif a.job_version != job.version:
                out.update.append(a)
            else:
                if later is not None:
                    out.later.append((a, later))
                out.keep.append(a)
            continue
        if a.node_id in tainted:
            node = tainted[a.node_id]
            if node_lost(node):
                out.lost.append(a)
                continue
            if node is not None and node.drain:
                out.migrate.append(a)
                continue
        if a.job_version != job.version:
            ok = inplace_ok.get(a.job_version)
            if ok is None:
                old = job_versions.get(a.job_version)
                ok = inplace_ok[a.job_version] = old is not None and tasks_updated(old, job, group.name) is None
            (out.inplace if ok else out.update).append(a)
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
    eval_id: str = "",
    job_versions: Mapping[int, Job] | None = None,
) -> ReconcileResult:
    """Diff ``job`` against its allocations.

    ``tainted`` maps the node ids of allocations whose node is not healthy to the
    node record (None when the node is gone); allocations on down or gone nodes
    are lost, those on draining nodes are migrated. Nodes that are fine need not
    be in it. ``eval_id`` is the evaluation being run (a failed allocation whose
    follow-up evaluation it is gets rescheduled); ``job_versions`` holds older
    versions of the job by version, to tell in-place from destructive updates
    (an allocation of a version not in it is updated destructively).
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

    versions = job_versions or {}
    for group in job.groups:
        _reconcile_group(job, group, by_group.get(group.name, []), tainted, now, eval_id, versions, result)
    return result


def _reconcile_group(
    job: Job,
    group: TaskGroup,
    allocs: list[Allocation],
    tainted: Mapping[str, Node | None],
    now: float,
    eval_id: str,
    job_versions: Mapping[int, Job],
    result: ReconcileResult,
) -> None:
    c = _classify(job, group, allocs, tainted, now, eval_id, job_versions)
    d = result.desired.setdefault(group.name, DesiredUpdates())
    d.ignore = c.ignore
    count = max(group.count, 0)

    # Every non-ignored allocation holds its slot (its name); replacements reuse it.
    replacing = {a.id for a in (*c.lost, *c.migrate, *c.update, *c.reschedule)}
    slots = [*c.lost, *c.reschedule, *c.migrate, *c.update, *c.inplace, *c.keep]
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
    used = {a.index for a in (*c.keep, *c.inplace) if a.id not in victims}
    index_of: dict[str, int] = {}
    clashes: list[Allocation] = []
    for a in (*c.lost, *c.reschedule, *c.migrate, *c.update):
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
        result.stop.append(AllocStop(a, ALLOC_RESCHEDULED, a.client_status))
        result.place.append(
            AllocPlace(group.name, alloc_name(job.id, group.name, i), i, a, stop_previous=True, reschedule=True)
        )
    for a in c.migrate:
        if a.id in victims:
            continue
        i = name_for(a)
        d.migrate += 1
        d.stop += 1
        d.place += 1
        result.stop.append(AllocStop(a, ALLOC_MIGRATING, a.client_status))
        result.place.append(AllocPlace(group.name, alloc_name(job.id, group.name, i), i, a, migrate=True))
    for a in c.inplace:
        if a.id in victims:
            continue
        d.in_place_update += 1
        result.inplace.append(a)
    for a, when in c.later:
        if a.id in victims:
            continue
        d.reschedule_later += 1
        result.reschedule_later.append((a, when))
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
