"""The generic scheduler, for service and batch jobs: reconcile, then place.

One run reads the job, its allocations and the nodes through a
:class:`StateReader`, asks the reconciler what to stop and place, and places
each allocation through the feasible -> rank -> select chain. The plan it
returns holds the stops (``node_update``), the new allocations
(``node_allocation``) and, per task group it could not fully place, a
:class:`PlacementFailure` (``failed_tg_allocs``).

Cost: one pass over the nodes (filter and shuffle), one over the job's
allocations, and per node ranked the first time one pass over that node's
allocations; each placement then looks at a handful of nodes (the limit) with
O(1) work each. Once a group fails a placement its remaining placements are
counted as missing without another scan, as Nomad coalesces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from shoal.ids import new_id as _new_id
from shoal.jobs.model import Job, Resources, TaskGroup, group_resources
from shoal.jobs.structs import (
    ALLOC_PENDING,
    DESIRED_RUN,
    DESIRED_STOP,
    NODE_DOWN,
    Allocation,
    Evaluation,
    Node,
    PlacementFailure,
)
from shoal.scheduler.feasible import (
    DistinctPropertyChecker,
    FeasibilityChecker,
    GroupFeasibility,
    base_nodes,
    job_plan_checkers,
)
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.plan import Plan
from shoal.scheduler.rank import ALGORITHMS, BINPACK, AffinityScorer, GroupRanker
from shoal.scheduler.reconcile import AllocPlace, AllocStop, reconcile
from shoal.scheduler.select import (
    DEFAULT_MAX_SKIP,
    DEFAULT_SCORE_THRESHOLD,
    LimitSelector,
    NodeRing,
    placement_limit,
    shuffle_nodes,
)
from shoal.scheduler.state import StateReader
from shoal.scheduler.usage import PlanUsage

SERVICE, BATCH = "service", "batch"


@dataclass(slots=True)
class _GroupPlacer:
    group: TaskGroup
    ask: Resources
    ranker: GroupRanker
    selector: LimitSelector
    properties: list[DistinctPropertyChecker]  # group-level and the job's


@dataclass(slots=True)
class _Run:
    """The state of one scheduler run."""

    state: StateReader
    evaluation: Evaluation
    job: Job
    plan: Plan
    usage: PlanUsage
    now: float
    new_id: Callable[[], str]
    node_cache: dict[str, Node | None] = field(default_factory=dict)

    def node(self, node_id: str) -> Node | None:
        if node_id in self.node_cache:
            return self.node_cache[node_id]
        n = self.state.node(node_id)
        self.node_cache[node_id] = n
        return n


def _stopped_record(stop: AllocStop, now: float) -> Allocation:
    return replace(
        stop.alloc,
        desired_status=DESIRED_STOP,
        desired_description=stop.description,
        client_status=stop.client_status,
        modify_time=now,
    )


def tainted_nodes(state: StateReader, allocs: list[Allocation]) -> dict[str, Node | None]:
    """The nodes of the job's live allocations that are down or gone (None)."""
    out: dict[str, Node | None] = {}
    seen: set[str] = set()
    for a in allocs:
        if a.desired_status != DESIRED_RUN or a.node_id in seen:
            continue
        seen.add(a.node_id)
        node = state.node(a.node_id)
        if node is None or node.status == NODE_DOWN:
            out[a.node_id] = node
    return out


@dataclass(slots=True)
class GenericScheduler:
    """Nomad's GenericScheduler. ``algorithm`` is ``binpack`` (fill nodes) or
    ``spread`` (empty nodes first); ``max_skip``/``score_threshold`` tune the
    limit iterator (see :mod:`shoal.scheduler.select`)."""

    algorithm: str = BINPACK
    max_skip: int = DEFAULT_MAX_SKIP
    score_threshold: float = DEFAULT_SCORE_THRESHOLD

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown scheduler algorithm {self.algorithm!r} (want one of {', '.join(ALGORITHMS)})")

    def schedule(
        self,
        state: StateReader,
        evaluation: Evaluation,
        *,
        now: float,
        new_id: Callable[[], str] = _new_id,
    ) -> Plan:
        ns, job_id = evaluation.namespace, evaluation.job_id
        job = state.job(ns, job_id)
        plan = Plan(
            eval_id=evaluation.id,
            namespace=ns,
            job_id=job_id,
            job_modify_index=job.job_modify_index if job is not None else evaluation.job_modify_index,
            priority=job.priority if job is not None else evaluation.priority,
        )
        allocs = state.allocs_by_job(ns, job_id)
        result = reconcile(job, allocs, tainted_nodes(state, allocs), now=now)
        usage = PlanUsage(state, allocs)

        deferred = {p.previous.id for p in result.place if p.stop_previous and p.previous is not None}
        held: dict[str, AllocStop] = {}
        for stop in result.stop:
            if stop.alloc.id in deferred:
                held[stop.alloc.id] = stop  # goes in with its replacement
                continue
            usage.stop(stop.alloc)
            plan.append_stop(_stopped_record(stop, now))
        if job is None or not result.place:
            return plan

        run = _Run(state, evaluation, job, plan, usage, now, new_id)
        self._place(run, allocs, result.place, held)
        return plan

    # -- placement --

    def _place(
        self, run: _Run, allocs: list[Allocation], places: list[AllocPlace], held: dict[str, AllocStop]
    ) -> None:
        job, usage, plan = run.job, run.usage, run.plan
        base = base_nodes(job, run.state.nodes())
        ring = NodeRing(shuffle_nodes(base.nodes, run.evaluation.id))
        shared = job_plan_checkers(job, usage)
        placers: dict[str, _GroupPlacer] = {}
        for p in places:
            if p.group not in placers:
                group = job.group(p.group)
                assert group is not None  # the reconciler only places groups of the job
                placers[p.group] = self._placer(job, group, usage, shared, len(ring))
        self._count_properties(run, allocs, shared, placers)

        failed: dict[str, PlacementFailure] = {}
        for p in places:
            if p.group in failed:
                failed[p.group].missing += 1
                continue
            placer = placers[p.group]
            prev = p.previous
            stop = held.get(prev.id) if (prev is not None and p.stop_previous) else None
            if stop is not None:
                self._release(run, placer, stop.alloc)
            placer.ranker.penalty_nodes = frozenset((prev.node_id,)) if (p.reschedule and prev) else frozenset()
            metrics = PlacementMetrics()
            option = placer.selector.select(placer.ranker.rank(ring.walk(), metrics))
            if option is None:
                if stop is not None:
                    self._unrelease(run, placer, stop.alloc)
                failed[p.group] = metrics.failure(
                    p.group, 1, base_filtered=base.filtered, available=base.available
                )
                continue
            if stop is not None:
                plan.append_stop(_stopped_record(stop, run.now))
            ask = placer.ask
            alloc = Allocation(
                id=run.new_id(),
                name=p.name,
                namespace=job.namespace,
                job_id=job.id,
                job_version=job.version,
                task_group=p.group,
                index=p.index,
                node_id=option.node.id,
                eval_id=run.evaluation.id,
                resources=Resources(cpu=ask.cpu, memory=ask.memory, memory_max=ask.memory_max, disk=ask.disk),
                desired_status=DESIRED_RUN,
                client_status=ALLOC_PENDING,
                previous_allocation=prev.id if prev is not None else "",
                create_time=run.now,
                modify_time=run.now,
            )
            plan.append_alloc(alloc)
            usage.place(option.node, alloc)
            for prop in placer.properties:
                prop.add(option.node)
        plan.failed_tg_allocs.update(failed)

    def _placer(
        self,
        job: Job,
        group: TaskGroup,
        usage: PlanUsage,
        shared: list[FeasibilityChecker],
        node_count: int,
    ) -> _GroupPlacer:
        feasibility = GroupFeasibility(job, group, usage, shared)
        affinity = AffinityScorer.for_group(job, group)
        ask = group_resources(group)
        ranker = GroupRanker(
            group=group.name,
            ask=ask,
            desired_count=group.count,
            feasibility=feasibility,
            usage=usage,
            algorithm=self.algorithm,
            affinity=affinity,
        )
        limit = placement_limit(node_count, batch=job.type == BATCH, score_all=affinity is not None)
        selector = LimitSelector(limit, self.max_skip, self.score_threshold)
        props = feasibility.distinct_property_checkers()
        return _GroupPlacer(group, ask, ranker, selector, props)

    def _count_properties(
        self,
        run: _Run,
        allocs: list[Allocation],
        shared: list[FeasibilityChecker],
        placers: dict[str, _GroupPlacer],
    ) -> None:
        """Seed the distinct_property counts with the job's live allocations."""
        checkers: list[DistinctPropertyChecker] = [c for c in shared if isinstance(c, DistinctPropertyChecker)]
        for placer in placers.values():
            checkers.extend(c for c in placer.properties if c.group is not None)
        if not checkers:
            return
        for a in allocs:
            if a.terminal() or run.usage.stopped(a.id):
                continue
            for c in checkers:
                if c.applies_to(a.task_group):
                    c.add(run.node(a.node_id))

    def _release(self, run: _Run, placer: _GroupPlacer, old: Allocation) -> None:
        """Take a destructively updated allocation out of the picture before its
        replacement is placed (its resources and its distinct_* slot are free)."""
        run.usage.stop(old)
        if not old.terminal():
            for prop in self._properties_of(placer, old):
                prop.remove(run.node(old.node_id))

    def _unrelease(self, run: _Run, placer: _GroupPlacer, old: Allocation) -> None:
        run.usage.unstop(old)
        if not old.terminal():
            for prop in self._properties_of(placer, old):
                prop.add(run.node(old.node_id))

    @staticmethod
    def _properties_of(placer: _GroupPlacer, alloc: Allocation) -> list[DistinctPropertyChecker]:
        return [p for p in placer.properties if p.applies_to(alloc.task_group)]
