"""The generic scheduler, for service and batch jobs: reconcile, then place.

One run reads the job, its allocations and the nodes through a
:class:`SchedulerState`, asks the reconciler what to stop, update and place, and
places each allocation through the feasible -> rank -> select chain. The plan
it returns holds the stops (``node_update``), in-place updates and follow-up
annotations (``node_update_inplace``), the new allocations
(``node_allocation``), evictions (``node_preemptions``), delayed evaluations
for failed allocations (``followup_evals``) and, per task group it could not
fully place, a :class:`PlacementFailure` (``failed_tg_allocs``) with a
``blocked_eval`` for the server to retry when capacity appears.

Cost: one pass over the job's allocations and, per node the walk reaches for
the first time, one tally (O(1) when the state keeps per-node usage, else one
pass over the node's allocations); each placement then looks at a handful of
nodes (the limit) with O(1) work each. The node list is shuffled lazily, so a
run does not pay O(cluster) up front. Once a group fails a placement its
remaining placements are counted as missing without another scan, as Nomad
coalesces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from shoal.ids import new_id as _new_id
from shoal.jobs.model import Job, Resources, TaskGroup, group_resources
from shoal.jobs.structs import (
    DESIRED_RUN,
    DESIRED_STOP,
    EVAL_BLOCKED,
    NODE_DOWN,
    Allocation,
    Evaluation,
    Node,
    PlacementFailure,
)
from shoal.scheduler.config import SchedulerConfig
from shoal.scheduler.feasible import (
    DistinctPropertyChecker,
    FeasibilityChecker,
    GroupFeasibility,
    JobNodeFilter,
    base_nodes,
    job_plan_checkers,
)
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.plan import Plan
from shoal.scheduler.ports import PortAsk, assign_ports
from shoal.scheduler.preempt import Candidate, evicted_record, preempt_for, priority_lookup
from shoal.scheduler.rank import BINPACK, AffinityScorer, GroupRanker, RankedNode, SpreadScorer
from shoal.scheduler.reconcile import (
    ALLOC_UPDATING,
    AllocPlace,
    AllocStop,
    followup_evals,
    reconcile,
    reschedule_events,
    reschedule_policy,
)
from shoal.scheduler.select import BEST_FIT_LIMIT, CandidateWalk, LimitSelector, NodeRing, placement_limit
from shoal.scheduler.state import SchedulerState, StateReader
from shoal.scheduler.usage import PlanUsage, UsageIndex, live

SERVICE, BATCH = "service", "batch"
_NO_NODES: frozenset[str] = frozenset()
TRIGGER_QUEUED_ALLOCS = "queued-allocs"
BLOCKED_EVAL_DESC = "created to place remaining allocations"


@dataclass(slots=True)
class _GroupPlacer:
    group: TaskGroup
    ask: Resources
    ranker: GroupRanker
    selector: LimitSelector
    properties: list[DistinctPropertyChecker]  # group-level and the job's
    ports: PortAsk | None = None
    spread: SpreadScorer | None = None
    walk: CandidateWalk | None = None  # best-fit candidates, when the state keeps a usage index


@dataclass(slots=True)
class _Run:
    """The state of one scheduler run."""

    state: SchedulerState
    evaluation: Evaluation
    job: Job
    plan: Plan
    usage: PlanUsage
    now: float
    new_id: Callable[[], str]
    node_cache: dict[str, Node | None] = field(default_factory=dict)
    _ring: NodeRing | None = None

    @property
    def ring(self) -> NodeRing:
        """Every node, shuffled (lazily) by the evaluation id: built on first use, since
        placements from a usage index may never need it."""
        if self._ring is None:
            self._ring = NodeRing(list(self.state.nodes()), self.evaluation.id)
        return self._ring

    def node(self, node_id: str) -> Node | None:
        if node_id in self.node_cache:
            return self.node_cache[node_id]
        n = self.state.node(node_id)
        self.node_cache[node_id] = n
        return n


def stopped_record(stop: AllocStop, now: float) -> Allocation:
    return replace(
        stop.alloc,
        desired_status=DESIRED_STOP,
        desired_description=stop.description,
        client_status=stop.client_status,
        modify_time=now,
    )


def tainted_nodes(state: StateReader, allocs: list[Allocation]) -> dict[str, Node | None]:
    """The nodes of the job's live allocations that are down, gone (None) or draining."""
    out: dict[str, Node | None] = {}
    seen: set[str] = set()
    for a in allocs:
        if a.desired_status != DESIRED_RUN or a.node_id in seen:
            continue
        seen.add(a.node_id)
        node = state.node(a.node_id)
        if node is None or node.status == NODE_DOWN or node.drain:
            out[a.node_id] = node
    return out


def job_versions(state: StateReader, job: Job | None, allocs: list[Allocation]) -> dict[int, Job]:
    """The older job versions the allocations run (those the state still keeps)."""
    if job is None:
        return {}
    out: dict[int, Job] = {}
    for v in {a.job_version for a in allocs if a.job_version != job.version and live(a)}:
        found = state.job_version(job.namespace, job.id, v)
        if found is not None:
            out[v] = found
    return out


def blocked_evaluation(
    evaluation: Evaluation, job: Job, failed: dict[str, PlacementFailure], now: float, new_id: Callable[[], str]
) -> Evaluation:
    """The evaluation to keep blocked until capacity changes. An evaluation that was
    itself blocked is re-blocked (same id) rather than replaced."""
    if evaluation.status == EVAL_BLOCKED:
        return replace(evaluation, failed_tg_allocs=dict(failed), modify_time=now)
    return Evaluation.for_job(
        job, new_id(), TRIGGER_QUEUED_ALLOCS, now,
        job_modify_index=job.job_modify_index,
        status=EVAL_BLOCKED,
        status_description=BLOCKED_EVAL_DESC,
        failed_tg_allocs=dict(failed),
        previous_eval=evaluation.id,
    )


@dataclass(slots=True)
class GenericScheduler:
    """Nomad's GenericScheduler, configured by a :class:`SchedulerConfig`
    (algorithm, limit-iterator tuning, preemption)."""

    config: SchedulerConfig = field(default_factory=SchedulerConfig)

    def schedule(
        self,
        state: SchedulerState,
        evaluation: Evaluation,
        *,
        now: float,
        new_id: Callable[[], str] = _new_id,
    ) -> Plan:
        ns, job_id = evaluation.namespace, evaluation.job_id
        job = state.job(ns, job_id)
        plan = Plan.for_evaluation(evaluation, job)
        allocs = state.allocs_by_job(ns, job_id)
        result = reconcile(
            job,
            allocs,
            tainted_nodes(state, allocs),
            now=now,
            eval_id=evaluation.id,
            job_versions=job_versions(state, job, allocs),
        )
        plan.annotations = result.desired
        usage = PlanUsage(state, allocs)

        deferred = {p.previous.id for p in result.place if p.stop_previous and p.previous is not None}
        held: dict[str, AllocStop] = {}
        for stop in result.stop:
            if stop.alloc.id in deferred:
                held[stop.alloc.id] = stop  # goes in with its replacement
                continue
            usage.stop(stop.alloc)
            plan.append_stop(stopped_record(stop, now))
        if job is None:
            return plan

        run = _Run(state, evaluation, job, plan, usage, now, new_id)
        if result.reschedule_later:
            evals, owner = followup_evals(
                job, result.reschedule_later, previous_eval=evaluation.id, now=now, new_id=new_id
            )
            plan.followup_evals.extend(evals)
            for a, _ in result.reschedule_later:
                plan.append_inplace(replace(a, followup_eval_id=owner[a.id], modify_time=now))
        places = list(result.place)
        placers: dict[str, _GroupPlacer] = {}
        if result.inplace or places:
            shared = job_plan_checkers(job, usage)
            base = JobNodeFilter(job)
            index = state.usage_index()
            node_count = index.node_count() if index is not None else len(run.ring)
            for name in [*(a.task_group for a in result.inplace), *(p.group for p in places)]:
                if name not in placers:
                    group = job.group(name)
                    assert group is not None  # the reconciler only keeps groups of the job
                    placers[name] = self._placer(run, group, shared, base, node_count, index)
            self._count_placed(run, allocs, shared, placers)
        if result.inplace:
            for a in result.inplace:
                if not self._inplace(run, placers[a.task_group], a):
                    stop = AllocStop(a, ALLOC_UPDATING, a.client_status)
                    held[a.id] = stop
                    d = plan.annotations.get(a.task_group)
                    if d is not None:
                        d.in_place_update -= 1
                        d.destructive_update += 1
                    places.append(AllocPlace(a.task_group, a.name, a.index, a, stop_previous=True))
        if places:
            self._place(run, places, held, placers)
        if plan.failed_tg_allocs:
            plan.blocked_eval = blocked_evaluation(evaluation, job, plan.failed_tg_allocs, now, new_id)
        return plan

    # -- in-place updates --

    def _inplace(self, run: _Run, placer: _GroupPlacer, alloc: Allocation) -> bool:
        """Move ``alloc`` to the job's version where it runs, if its node still
        passes the group's checks (constraints may have changed)."""
        node = run.node(alloc.node_id)
        if node is None:
            return False
        usage = run.usage
        usage.count(alloc, -1)  # the allocation does not collide with itself
        props = _properties_of(placer, alloc)
        for prop in props:
            prop.remove(node)
        ok = placer.ranker.feasibility.group_reason(node) is None
        usage.count(alloc, 1)
        for prop in props:
            prop.add(node)
        if ok:
            run.plan.append_inplace(
                replace(alloc, job_version=run.job.version, eval_id=run.evaluation.id, modify_time=run.now)
            )
        return ok

    # -- placement --

    def _place(
        self,
        run: _Run,
        places: list[AllocPlace],
        held: dict[str, AllocStop],
        placers: dict[str, _GroupPlacer],
    ) -> None:
        job, usage, plan = run.job, run.usage, run.plan
        preempt = self.config.preemption(job.type)
        failed: dict[str, PlacementFailure] = {}
        now, eval_id, new_id = run.now, run.evaluation.id, run.new_id
        namespace, job_id, version = job.namespace, job.id, job.version
        for p in places:
            if p.group in failed:
                failed[p.group].missing += 1
                continue
            placer = placers[p.group]
            prev = p.previous
            stop = held.get(prev.id) if (prev is not None and p.stop_previous) else None
            if stop is not None:
                self._release(run, placers, placer, stop.alloc)
            ranker = placer.ranker
            if p.reschedule and prev is not None:
                ranker.penalty_nodes = frozenset((prev.node_id,))
            elif ranker.penalty_nodes:
                ranker.penalty_nodes = _NO_NODES
            metrics = PlacementMetrics()
            option = None
            walk = placer.walk
            if walk is not None:
                option = placer.selector.select(ranker.rank(walk.walk(), metrics, walk.passed))
                if option is None:  # the index's view was incomplete, or nothing fits: ask every node
                    metrics = PlacementMetrics()
            if option is None:
                option = placer.selector.select(ranker.rank(run.ring.walk(), metrics))
            victims: list[Allocation] = []
            if option is None and preempt:
                found = self._preempt_option(run, placer)
                if found is not None:
                    option, victims = found
            if option is None:
                if stop is not None:
                    self._unrelease(run, placer, stop.alloc)
                failed[p.group] = metrics.failure(p.group, 1, available=base_nodes(job, run.ring.nodes).available)
                continue
            if stop is not None:
                plan.append_stop(stopped_record(stop, now))
            alloc_id = new_id()
            for v in victims:
                usage.stop(v, counted=v.job_id == job_id and v.namespace == namespace)
                plan.append_preemption(evicted_record(v, alloc_id, now))
            node = option.node
            alloc = Allocation(
                id=alloc_id,
                name=p.name,
                namespace=namespace,
                job_id=job_id,
                job_version=version,
                task_group=p.group,
                index=p.index,
                node_id=node.id,
                eval_id=eval_id,
                resources=placer.ask,  # shared: records are never mutated
                previous_allocation=prev.id if prev is not None else "",
                create_time=now,
                modify_time=now,
            )
            if placer.ports is not None:
                alloc.ports = assign_ports(option.tally, placer.ports)
            if p.reschedule and prev is not None:
                alloc.reschedule_events = reschedule_events(prev, reschedule_policy(job, placer.group), now)
            plan.append_alloc(alloc)
            usage.place(node, alloc)
            for prop in placer.properties:
                prop.add(node)
            if placer.spread is not None:
                placer.spread.add(node)
        plan.failed_tg_allocs.update(failed)

    def _preempt_option(
        self, run: _Run, placer: _GroupPlacer
    ) -> tuple[RankedNode, list[Allocation]] | None:
        """Nomad's second pass with preemption: over every feasible node, the one
        whose eviction set has the lowest priorities, then the fewest victims."""
        usage, state, job = run.usage, run.state, run.job
        priority = priority_lookup(state)
        reason = placer.ranker.feasibility.reason
        best: tuple[tuple[int, int, int], RankedNode, list[Allocation]] | None = None
        for node in run.ring.walk():
            if reason(node) is not None:
                continue
            tally = usage.tally(node)
            candidates = [
                Candidate(a, priority(a))
                for a in state.allocs_by_node(node.id)
                if live(a) and not usage.stopped(a.id) and not (a.job_id == job.id and a.namespace == job.namespace)
            ]
            victims = preempt_for(tally, placer.ask, placer.ports, candidates, job.priority)
            if not victims:
                continue
            key = (max(priority(v) for v in victims), len(victims), sum(v.resources.memory for v in victims))
            if best is None or key < best[0]:
                best = (key, RankedNode(node, 0.0, tally), victims)
        return None if best is None else (best[1], best[2])

    def _placer(
        self,
        run: _Run,
        group: TaskGroup,
        shared: list[FeasibilityChecker],
        base: JobNodeFilter,
        node_count: int,
        index: UsageIndex | None,
    ) -> _GroupPlacer:
        job, usage = run.job, run.usage
        feasibility = GroupFeasibility(job, group, usage, shared, base)
        affinity = AffinityScorer.for_group(job, group)
        spread = SpreadScorer.for_group(job, group)
        ports = PortAsk.for_group(group)
        ask = group_resources(group)
        ranker = GroupRanker(
            group=group.name,
            ask=ask,
            desired_count=group.count,
            feasibility=feasibility,
            usage=usage,
            algorithm=self.config.algorithm,
            affinity=affinity,
            ports=ports,
            spread=spread,
        )
        scored = group.count if (affinity is not None or spread is not None) else None
        limit = placement_limit(node_count, batch=job.type == BATCH, scored_count=scored)
        props = feasibility.distinct_property_checkers()
        walk = None
        if index is not None and scored is None and self.config.algorithm == BINPACK:
            walk = CandidateWalk(index.candidates(ask.cpu, ask.memory), run.node)
            limit = min(limit, BEST_FIT_LIMIT)
        selector = LimitSelector(limit, self.config.max_skip, self.config.score_threshold)
        return _GroupPlacer(group, ask, ranker, selector, props, ports, spread, walk)

    def _count_placed(
        self,
        run: _Run,
        allocs: list[Allocation],
        shared: list[FeasibilityChecker],
        placers: dict[str, _GroupPlacer],
    ) -> None:
        """Seed the distinct_property and spread counts with the job's live allocations."""
        checkers: list[DistinctPropertyChecker] = [c for c in shared if isinstance(c, DistinctPropertyChecker)]
        for placer in placers.values():
            checkers.extend(c for c in placer.properties if c.group is not None)
        spreads = {name: p.spread for name, p in placers.items() if p.spread is not None}
        if not checkers and not spreads:
            return
        for a in allocs:
            if not live(a) or run.usage.stopped(a.id):
                continue
            node = run.node(a.node_id)
            for c in checkers:
                if c.applies_to(a.task_group):
                    c.add(node)
            spread = spreads.get(a.task_group)
            if spread is not None:
                spread.add(node)

    def _release(self, run: _Run, placers: dict[str, _GroupPlacer], placer: _GroupPlacer, old: Allocation) -> None:
        """Take a replaced allocation out of the picture before its replacement is
        placed (its resources, ports, distinct_* and spread slots are free)."""
        run.usage.stop(old)
        if live(old):
            node = run.node(old.node_id)
            for prop in _properties_of(placer, old):
                prop.remove(node)
            if placer.spread is not None:
                placer.spread.remove(node)
            for other in placers.values():
                if other.walk is not None:
                    other.walk.reopen(old.node_id)

    def _unrelease(self, run: _Run, placer: _GroupPlacer, old: Allocation) -> None:
        run.usage.unstop(old)
        if live(old):
            node = run.node(old.node_id)
            for prop in _properties_of(placer, old):
                prop.add(node)
            if placer.spread is not None:
                placer.spread.add(node)


def _properties_of(placer: _GroupPlacer, alloc: Allocation) -> list[DistinctPropertyChecker]:
    return [p for p in placer.properties if p.applies_to(alloc.task_group)]
