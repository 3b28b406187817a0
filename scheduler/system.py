"""The system scheduler, for ``system`` and ``sysbatch`` jobs: one allocation per
task group on every eligible node that passes the group's checks.

Per (node, group) the existing allocations are diffed against the job (Nomad's
diffSystemAllocs):

* a live allocation on a node that is down or gone is lost: stopped with client
  status ``lost`` and *not* replaced elsewhere (there is one per node);
* on a draining node it is stopped ("alloc is being migrated"), not replaced;
* on a node that is ineligible or not ready it is left alone (no new ones);
* on a node the job no longer targets (datacenter, pool) it is stopped;
* of an older job version: updated in place when only non-task fields changed
  and the node still passes the group's constraints, else stopped and replaced
  on the same node (kept running if the replacement does not fit; stopped
  without replacement if the node no longer passes the constraints);
* a second live allocation of one group on one node is stopped;
* an eligible node without a live allocation gets one, unless the job is
  ``sysbatch`` and the group already ran there (a terminal allocation of the
  same job version): completed sysbatch work is never run again.

A node the group's constraints or drivers filter out is skipped silently, as
Nomad; a node where the allocation does not fit is a placement failure (after
trying preemption, on for system jobs by default): counted per group in
``failed_tg_allocs`` with a blocked evaluation for when capacity appears.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from shoal.ids import new_id as _new_id
from shoal.jobs.model import Job, Resources, TaskGroup, group_resources
from shoal.jobs.structs import (
    ALLOC_LOST,
    ALLOC_PENDING,
    DESIRED_RUN,
    NODE_DOWN,
    NODE_READY,
    Allocation,
    Evaluation,
    Node,
    PlacementFailure,
)
from shoal.scheduler.config import SchedulerConfig
from shoal.scheduler.feasible import GroupFeasibility, JobNodeFilter, job_plan_checkers
from shoal.scheduler.generic import blocked_evaluation, job_versions, stopped_record, tainted_nodes
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.plan import Plan
from shoal.scheduler.ports import PortAsk, assign_ports
from shoal.scheduler.preempt import Candidate, evicted_record, preempt_for, priority_lookup
from shoal.scheduler.rank import GroupRanker, RankedNode
from shoal.scheduler.reconcile import (
    ALLOC_GROUP_REMOVED,
    ALLOC_LOST_DESC,
    ALLOC_MIGRATING,
    ALLOC_NOT_NEEDED,
    ALLOC_UPDATING,
    AllocStop,
    DesiredUpdates,
    alloc_name,
    reconcile,
    tasks_updated,
)
from shoal.scheduler.state import SchedulerState
from shoal.scheduler.usage import PlanUsage, live

SYSTEM, SYSBATCH = "system", "sysbatch"
SYSTEM_TYPES = (SYSTEM, SYSBATCH)
ALLOC_NODE_NOT_TARGETED = "alloc not needed as node is not targeted by the job"


@dataclass(slots=True)
class _Group:
    group: TaskGroup
    ask: Resources
    ranker: GroupRanker
    ports: PortAsk | None
    desired: DesiredUpdates
    failure: PlacementFailure | None = None


@dataclass(slots=True)
class _Place:
    node: Node
    group: str
    previous: Allocation | None = None
    stop: AllocStop | None = None  # the stop of ``previous`` that goes in with this placement


@dataclass(slots=True)
class SystemScheduler:
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
        if job is None or job.stop:
            result = reconcile(job, allocs, tainted_nodes(state, allocs), now=now)
            for stop in result.stop:
                plan.append_stop(stopped_record(stop, now))
            plan.annotations = result.desired
            return plan
        _SystemRun(self.config, state, evaluation, job, plan, allocs, now, new_id).run()
        return plan


class _SystemRun:
    def __init__(
        self,
        config: SchedulerConfig,
        state: SchedulerState,
        evaluation: Evaluation,
        job: Job,
        plan: Plan,
        allocs: list[Allocation],
        now: float,
        new_id: Callable[[], str],
    ) -> None:
        self.config, self.state, self.evaluation, self.job, self.plan = config, state, evaluation, job, plan
        self.allocs, self.now, self.new_id = allocs, now, new_id
        self.usage = PlanUsage(state, allocs)
        self.nodes = {n.id: n for n in state.nodes()}
        self.filter = JobNodeFilter(job)
        self.versions = job_versions(state, job, allocs)
        shared = job_plan_checkers(job, self.usage)
        self.groups: dict[str, _Group] = {}
        for g in job.groups:
            ask = group_resources(g)
            ports = PortAsk.for_group(g)
            ranker = GroupRanker(
                group=g.name,
                ask=ask,
                desired_count=1,
                feasibility=GroupFeasibility(job, g, self.usage, shared),
                usage=self.usage,
                algorithm=config.algorithm,
                ports=ports,
            )
            self.groups[g.name] = _Group(g, ask, ranker, ports, plan.annotations.setdefault(g.name, DesiredUpdates()))
        self.priority = priority_lookup(state)
        self.first_failed_node = ""

    def stop(self, a: Allocation, description: str, client_status: str | None = None) -> None:
        self.usage.stop(a)
        self.plan.append_stop(
            stopped_record(AllocStop(a, description, client_status or a.client_status), self.now)
        )
        d = self.plan.annotations.setdefault(a.task_group, DesiredUpdates())
        d.stop += 1

    def run(self) -> None:
        job, plan = self.job, self.plan
        live_on: dict[tuple[str, str], list[Allocation]] = {}
        done_on: dict[tuple[str, str], Allocation] = {}  # latest terminal allocation per (node, group)
        for a in sorted(self.allocs, key=lambda a: (a.create_time, a.id)):
            if live(a):
                live_on.setdefault((a.node_id, a.task_group), []).append(a)
            else:
                done_on[(a.node_id, a.task_group)] = a
        places: list[_Place] = []

        for (node_id, group_name), here in live_on.items():
            g = self.groups.get(group_name)
            if g is None:
                for a in here:
                    self.stop(a, ALLOC_GROUP_REMOVED)
                continue
            node = self.nodes.get(node_id)
            if node is None or node.status == NODE_DOWN:
                for a in here:
                    g.desired.lost += 1
                    self.stop(a, ALLOC_LOST_DESC, ALLOC_LOST)
                continue
            if node.drain:
                for a in here:
                    g.desired.migrate += 1
                    self.stop(a, ALLOC_MIGRATING)
                continue
            for a in here[1:]:
                self.stop(a, ALLOC_NOT_NEEDED)  # one per node
            a = here[0]
            if node.status != NODE_READY or not node.eligible:
                g.desired.ignore += 1
                continue
            if self.filter.reason(node) is not None:
                self.stop(a, ALLOC_NODE_NOT_TARGETED)
                continue
            if a.job_version == job.version:
                g.desired.ignore += 1
                continue
            old = self.versions.get(a.job_version)
            inplace = old is not None and tasks_updated(old, job, group_name) is None
            self.usage.count(a, -1)
            feasible = g.ranker.feasibility.group_reason(node) is None
            self.usage.count(a, 1)
            if inplace and feasible:
                g.desired.in_place_update += 1
                plan.append_inplace(replace(a, job_version=job.version, eval_id=self.evaluation.id, modify_time=self.now))
            elif not feasible:
                self.stop(a, ALLOC_NOT_NEEDED)
            else:
                g.desired.destructive_update += 1
                places.append(_Place(node, group_name, a, AllocStop(a, ALLOC_UPDATING, a.client_status)))

        for node in self.nodes.values():
            if self.filter.reason(node) is not None:
                continue
            for g in self.groups.values():
                key = (node.id, g.group.name)
                if key in live_on:
                    continue
                done = done_on.get(key)
                if job.type == SYSBATCH and done is not None and done.job_version == job.version:
                    g.desired.ignore += 1
                    continue
                places.append(_Place(node, g.group.name, done))

        for p in places:
            self.place(p)
        failed = {name: g.failure for name, g in self.groups.items() if g.failure is not None}
        if failed:
            plan.failed_tg_allocs.update(failed)
            plan.blocked_eval = blocked_evaluation(self.evaluation, job, failed, self.now, self.new_id)
            plan.blocked_eval.node_id = self.first_failed_node

    def place(self, p: _Place) -> None:
        g = self.groups[p.group]
        usage, node = self.usage, p.node
        if p.stop is not None:
            usage.stop(p.stop.alloc)
        metrics = PlacementMetrics()
        option = next(iter(g.ranker.rank([node], metrics)), None)
        victims: list[Allocation] = []
        if option is None and metrics.nodes_filtered:
            if p.stop is not None:  # the new version does not run here: stop the old one
                self.plan.append_stop(stopped_record(replace(p.stop, description=ALLOC_NOT_NEEDED), self.now))
            return
        if option is None and self.config.preemption(self.job.type):
            tally = usage.tally(node)
            candidates = [
                Candidate(a, self.priority(a))
                for a in self.state.allocs_by_node(node.id)
                if live(a) and not usage.stopped(a.id) and a.job_id != self.job.id
            ]
            found = preempt_for(tally, g.ask, g.ports, candidates, self.job.priority)
            if found:
                option, victims = RankedNode(node, 0.0, tally), found
        if option is None:
            if p.stop is not None:
                usage.unstop(p.stop.alloc)  # keep the old version running
            self.fail(g, metrics, node)
            return
        if p.stop is not None:
            self.plan.append_stop(stopped_record(p.stop, self.now))
        alloc_id = self.new_id()
        for v in victims:
            usage.stop(v, counted=False)
            self.plan.append_preemption(evicted_record(v, alloc_id, self.now))
        job, ask = self.job, g.ask
        alloc = Allocation(
            id=alloc_id,
            name=alloc_name(job.id, p.group, 0),
            namespace=job.namespace,
            job_id=job.id,
            job_version=job.version,
            task_group=p.group,
            index=0,
            node_id=node.id,
            eval_id=self.evaluation.id,
            resources=Resources(cpu=ask.cpu, memory=ask.memory, memory_max=ask.memory_max, disk=ask.disk),
            desired_status=DESIRED_RUN,
            client_status=ALLOC_PENDING,
            previous_allocation=p.previous.id if p.previous is not None else "",
            create_time=self.now,
            modify_time=self.now,
        )
        if g.ports is not None:
            alloc.ports = assign_ports(option.tally, g.ports)
        self.plan.append_alloc(alloc)
        usage.place(node, alloc)
        g.desired.place += 1

    def fail(self, g: _Group, metrics: PlacementMetrics, node: Node) -> None:
        f = g.failure
        if f is None:
            f = g.failure = metrics.failure(g.group.name, 0)
            f.nodes_available = {}
            self.first_failed_node = self.first_failed_node or node.id
        else:
            f.nodes_evaluated += metrics.nodes_evaluated
            f.nodes_exhausted += metrics.nodes_exhausted
            for dim, n in metrics.dimension_exhausted.items():
                f.dimension_exhausted[dim] = f.dimension_exhausted.get(dim, 0) + n
        f.missing += 1
        f.nodes_available[node.datacenter] = f.nodes_available.get(node.datacenter, 0) + 1
