"""The scheduler at scale: placements/s and packing efficiency, against a naive first-fit.

A synthetic cluster of mixed node sizes (4 to 32 cores, 8 to 128 GB) and a
workload of many jobs (service and batch, groups of 1 to 500 allocations, cpu
from 100 MHz to 4 GHz, memory per MHz varying around the nodes' shape, some
with constraints, some asking host ports) totalling 20 allocations per node,
placed job by job through ``shoal.scheduler.schedule`` and a plan-apply step
in-process: each plan is re-checked node by node against the live state by the
plan applier's own check (``server.plan_apply.check_plan``), and the command the
server would submit for it (``server.plan_apply.plan_payload``, with the
evaluation's outcome from ``server.worker.eval_outcome``) is committed by the
real FSM (``raft.fsm.FSM.apply`` of the encoded ``plan.apply`` command into a
``raft.state.StateStore``; no Raft network). The state the scheduler reads is exactly a server worker's: a store
snapshot plus a copy of the ``scheduler.usage.UsageIndex`` that the FSM keeps
current (``server.usage.UsageIndexer``): per-node usage and nodes ordered by
free capacity.

The same workload is then placed by a naive first-fit (every placement scans
the nodes in a fixed order from the first and takes the first that passes the
same feasibility checks and fits; no limit, no index), through the same
applier and FSM. Both run at 500 and at 5,000 nodes.

Packing efficiency = lower bound of nodes needed / nodes used. The bound is
fractional: nodes sorted by capacity, largest first, counted until their cpu
covers the total cpu placed, and again for memory; the larger count.

Prints a table, then one JSON line of figures.
A third run places a workload of diverse allocation shapes (memory per MHz from 0.8 to
3.0, where the main workload keeps four fifths at the nodes' 1.6) to show what that costs
in packing (``diverse_shapes_*``).

Usage: python bench/scheduler.py [--sizes 500,5000] [--seed 1] [--no-first-fit]
                                 [--diverse-size N | --no-diverse]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shoal import codec
from shoal.jobs.model import Constraint, Job, Network, Port, Resources, Task, TaskGroup
from shoal.jobs.structs import (
    ALLOC_PENDING,
    DESIRED_RUN,
    NODE_READY,
    Allocation,
    Evaluation,
    Node,
    NodeResources,
)
from shoal.raft import ops
from shoal.raft.fsm import FSM, ApplyResult
from shoal.raft.state import StateStore
from shoal.scheduler import Plan, schedule
from shoal.scheduler.feasible import GroupFeasibility, JobNodeFilter, job_plan_checkers
from shoal.scheduler.generic import stopped_record, tainted_nodes
from shoal.scheduler.ports import PortAsk, assign_ports, port_exhausted
from shoal.scheduler.reconcile import reconcile
from shoal.scheduler.usage import IndexedState, PlanUsage, live, node_fit
from shoal.server.plan_apply import check_plan, plan_payload
from shoal.server.usage import UsageIndexer
from shoal.server.worker import eval_outcome

MHZ_PER_CORE = 2500
# (cores, GB of memory): weight
NODE_MIX = {(4, 8): 10, (4, 16): 10, (8, 16): 10, (8, 32): 20, (16, 64): 30, (32, 128): 20}
# cpu MHz of one allocation: weight
CPU_SIZES = {100: 10, 250: 20, 500: 25, 1000: 20, 2000: 15, 4000: 10}
# memory MB per cpu MHz (the large nodes offer 1.6): weight. Most services are sized to the
# nodes' shape, a fifth lean to cpu or memory.
MEMORY_PER_MHZ = {1.6: 80, 1.2: 10, 2.0: 10}
# The same, with shapes all over the place: reported apart (packing two dimensions of
# unlike shapes online, job after job, strands capacity whatever the order of nodes).
DIVERSE_MEMORY_PER_MHZ = {0.8: 20, 1.2: 20, 1.6: 20, 2.0: 20, 3.0: 20}
# allocations in one group: weight
GROUP_COUNTS = {1: 10, 2: 10, 3: 15, 5: 15, 10: 15, 20: 12, 50: 10, 100: 7, 200: 4, 500: 2}
ALLOCS_PER_NODE = 20


# -- the synthetic cluster and workload ---------------------------------------------------


def _pick(rng: random.Random, table: dict) -> object:
    return rng.choices(list(table), weights=list(table.values()))[0]


def make_nodes(count: int, rng: random.Random) -> list[Node]:
    nodes = []
    for i in range(count):
        cores, gb = _pick(rng, NODE_MIX)  # type: ignore[misc]
        nodes.append(
            Node(
                id=f"node-{i:05d}",
                name=f"host{i}",
                datacenter="dc1" if i % 4 else "dc2",
                node_class=f"c{cores}",
                status=NODE_READY,
                attributes={"cpu.arch": "arm64" if i % 10 == 0 else "amd64", "kernel.name": "linux"},
                resources=NodeResources(cpu=cores * MHZ_PER_CORE, memory=gb * 1024, disk=200_000, cores=cores),
                drivers=["container", "exec", "raw_exec"],
            )
        )
    return nodes


def make_jobs(total_allocs: int, rng: random.Random, shapes: dict[float, int] = MEMORY_PER_MHZ) -> list[Job]:
    jobs: list[Job] = []
    placed = 0
    while placed < total_allocs:
        i = len(jobs)
        batch = rng.random() < 0.2
        groups = []
        for g in range(1 if rng.random() < 0.8 else 2):
            count = min(int(_pick(rng, GROUP_COUNTS)), total_allocs - placed)  # type: ignore[call-overload]
            if count <= 0:
                break
            cpu = int(_pick(rng, CPU_SIZES))  # type: ignore[call-overload]
            memory = int(cpu * float(_pick(rng, shapes)))  # type: ignore[arg-type]
            networks = []
            if not batch and rng.random() < 0.3:
                networks = [Network(ports=[Port(label="http", to=8080)])]
            constraints = []
            if rng.random() < 0.1:
                constraints.append(Constraint("${attr.cpu.arch}", "=", "amd64"))
            tasks = [Task(name="main", driver="container", resources=Resources(cpu=cpu, memory=memory))]
            groups.append(TaskGroup(name=f"g{g}", count=count, tasks=tasks, networks=networks,
                                    constraints=constraints, ephemeral_disk=300))
            placed += count
        if not groups:
            break
        jobs.append(Job(id=f"job-{i:05d}", name=f"job-{i:05d}", type="batch" if batch else "service",
                        datacenters=["dc1", "dc2"] if rng.random() < 0.9 else ["dc1"], groups=groups))
    return jobs


# -- the state the scheduler reads ------------------------------------------------------------


class Cluster:
    """A StateStore written only through the real FSM, with the servers' usage index (kept by the FSM)."""

    def __init__(self, nodes: Iterable[Node], jobs: Iterable[Job], now: float) -> None:
        self.store = StateStore()
        self.fsm = FSM(self.store)
        self.usage = UsageIndexer(self.store)
        self.fsm.add_indexer(self.usage)
        self.evals: list[Evaluation] = []
        for n in nodes:
            self.commit(ops.NODE_REGISTER, ops.NodeRegister(node=n, now=now))
        for j in jobs:
            ev = Evaluation(id=f"eval-{j.id}", namespace=j.namespace, job_id=j.id, type=j.type,
                            priority=j.priority, triggered_by="job-register", create_time=now, modify_time=now)
            self.commit(ops.JOB_REGISTER, ops.JobRegister(job=j, eval=ev, now=now))
            self.evals.append(ev)

    def commit(self, op: str, payload: object) -> ApplyResult:
        result = self.fsm.apply(op, codec.encode(payload))
        if result.error:
            raise RuntimeError(f"{op}: {result.error}")
        return result

    def view(self) -> IndexedState:
        """What a server's worker plans on: a snapshot and a copy of the index at the same index."""
        return self.usage.state()


# -- the plan applier, in-process ----------------------------------------------------------------


@dataclass
class Clock:
    """Where the time went: scheduling, the applier's fit check, the commit (the worker's evaluation
    outcome and the ``plan.apply`` command built, encoded, applied by the FSM)."""

    schedule: float = 0.0
    check: float = 0.0
    commit: float = 0.0


def apply_plan(cluster: Cluster, plan: Plan, evaluation: Evaluation, view: IndexedState, now: float,
               clock: Clock) -> tuple[int, int]:
    """The server's plan-apply step without Raft: the plan applier's check against the latest state
    (``server.plan_apply.check_plan``), then the command the server submits for it (``plan_payload``,
    with the evaluation's outcome as a worker computes it on ``view``, the state it planned on)
    committed through the FSM. Returns (placed, refused nodes)."""
    t0 = time.perf_counter()
    check = check_plan(cluster.store.snapshot(), plan)
    t1 = time.perf_counter()
    payload = plan_payload(plan, check, eval_outcome(evaluation, plan, view, now), now)
    cluster.commit(ops.PLAN_APPLY, payload)
    clock.check += t1 - t0
    clock.commit += time.perf_counter() - t1
    return len(payload.allocs), len(check.refused)


# -- the naive first-fit baseline ----------------------------------------------------------------


def first_fit_plan(state: IndexedState, evaluation: Evaluation, *, now: float, new_id: Callable[[], str],
                   order: list[Node]) -> Plan:
    """Every placement takes the first node of ``order`` that passes the group's
    feasibility checks and fits (resources and ports). Within one evaluation a
    node found infeasible or full for a group stays so (the plan only adds), so
    each group's scan resumes where its previous placement found a node: the
    same choices as rescanning from the first node, without the rescan."""
    job = state.job(evaluation.namespace, evaluation.job_id)
    assert job is not None
    plan = Plan(eval_id=evaluation.id, namespace=job.namespace, job_id=job.id,
                job_modify_index=job.job_modify_index, priority=job.priority)
    allocs = state.allocs_by_job(job.namespace, job.id)
    result = reconcile(job, allocs, tainted_nodes(state, allocs), now=now, eval_id=evaluation.id)
    usage = PlanUsage(state, allocs)
    for stop in result.stop:
        usage.stop(stop.alloc)
        plan.append_stop(stopped_record(stop, now))
    shared = job_plan_checkers(job, usage)
    base = JobNodeFilter(job)
    groups: dict[str, tuple[TaskGroup, GroupFeasibility, Resources, PortAsk | None]] = {}
    resume: dict[str, int] = {}
    failed: set[str] = set()
    for p in result.place:
        if p.group in failed:
            continue
        if p.group not in groups:
            g = job.group(p.group)
            assert g is not None
            cpu = sum(t.resources.cpu for t in g.tasks)
            mem = sum(t.resources.memory for t in g.tasks)
            groups[p.group] = (g, GroupFeasibility(job, g, usage, shared, base), Resources(cpu=cpu, memory=mem, disk=g.ephemeral_disk),
                               PortAsk.for_group(g))
        g, feasibility, ask, ports = groups[p.group]
        chosen = None
        for i in range(resume.get(p.group, 0), len(order)):
            node = order[i]
            if feasibility.reason(node) is not None:
                continue
            t = usage.tally(node)
            if (t.cpu + ask.cpu > t.cpu_cap or t.memory + ask.memory > t.memory_cap or t.disk + ask.disk > t.disk_cap
                    or (ports is not None and port_exhausted(t, ports) is not None)):
                continue
            chosen = node
            resume[p.group] = i
            break
        if chosen is None:
            failed.add(p.group)
            continue
        alloc = Allocation(id=new_id(), name=p.name, namespace=job.namespace, job_id=job.id, job_version=job.version,
                           task_group=p.group, index=p.index, node_id=chosen.id, eval_id=evaluation.id,
                           resources=Resources(cpu=ask.cpu, memory=ask.memory, disk=ask.disk),
                           desired_status=DESIRED_RUN, client_status=ALLOC_PENDING, create_time=now, modify_time=now)
        if ports is not None:
            alloc.ports = assign_ports(usage.tally(chosen), ports)
        plan.append_alloc(alloc)
        usage.place(chosen, alloc)
    return plan


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    nodes: int
    wanted: int
    placed: int
    refused_nodes: int
    seconds: float
    cpu_seconds: float  # process time: less sensitive to other load on the machine
    nodes_used: int
    lower_bound: int
    overcommitted: int
    clock: Clock

    @property
    def placements_per_s(self) -> float:
        return self.placed / self.seconds if self.seconds > 0 else 0.0

    @property
    def efficiency(self) -> float:
        return self.lower_bound / self.nodes_used if self.nodes_used else 0.0


def nodes_needed(capacities: list[int], total: int) -> int:
    """How many of the largest capacities it takes to cover ``total``."""
    n = 0
    for c in sorted(capacities, reverse=True):
        if total <= 0:
            break
        total -= c
        n += 1
    return n


def lower_bound(nodes: list[Node], allocs: list[Allocation]) -> int:
    cpu = sum(a.resources.cpu for a in allocs)
    mem = sum(a.resources.memory for a in allocs)
    caps_cpu = [n.resources.cpu - n.reserved.cpu for n in nodes]
    caps_mem = [n.resources.memory - n.reserved.memory for n in nodes]
    return max(nodes_needed(caps_cpu, cpu), nodes_needed(caps_mem, mem))


def overcommitted(nodes: list[Node], allocs: list[Allocation]) -> int:
    """Nodes whose live allocations exceed a resource or share a host port (must be 0)."""
    by_node: dict[str, list[Allocation]] = {}
    for a in allocs:
        by_node.setdefault(a.node_id, []).append(a)
    bad = 0
    for n in nodes:
        if node_fit(n, [], by_node.get(n.id, [])) is not None:
            bad += 1
    return bad


def run(nodes: list[Node], jobs: list[Job], *, first_fit: bool, now: float = 1_000_000.0) -> Outcome:
    cluster = Cluster(nodes, jobs, now)
    wanted = sum(g.count for j in jobs for g in j.groups)
    counter = iter(range(10**9))

    def new_id() -> str:
        return f"alloc-{next(counter):08d}"

    order = sorted(nodes, key=lambda n: n.id)
    placed = refused = 0
    clock = Clock()
    gc.collect()
    gc.disable()
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        for ev in cluster.evals:
            t = time.perf_counter()
            view = cluster.view()
            if first_fit:
                plan = first_fit_plan(view, ev, now=now, new_id=new_id, order=order)
            else:
                plan = schedule(view, ev, now=now, new_id=new_id)
            clock.schedule += time.perf_counter() - t
            p, r = apply_plan(cluster, plan, ev, view, now, clock)
            placed += p
            refused += r
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        gc.enable()
    with cluster.store.reader() as s:
        live_allocs = [a for a in s.allocs() if live(a)]
        all_nodes = s.nodes()
    used = len({a.node_id for a in live_allocs})
    return Outcome(len(nodes), wanted, placed, refused, seconds, cpu_seconds, used, lower_bound(all_nodes, live_allocs),
                   overcommitted(all_nodes, live_allocs), clock)


def workload(size: int, seed: int, shapes: dict[float, int] = MEMORY_PER_MHZ) -> tuple[list[Node], list[Job]]:
    rng = random.Random(f"{seed}-{size}")
    return make_nodes(size, rng), make_jobs(size * ALLOCS_PER_NODE, rng, shapes)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,5000", help="cluster sizes (nodes), comma separated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-first-fit", action="store_true", help="skip the naive first-fit runs")
    ap.add_argument("--diverse-size", type=int, default=0,
                    help="cluster size of the run with diverse allocation shapes (default: the smallest size; 0 with --no-diverse)")
    ap.add_argument("--no-diverse", action="store_true", help="skip the run with diverse allocation shapes")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    figures: dict[str, float] = {}
    rows = []
    wall = time.perf_counter()
    runs: list[tuple[int, str, dict[float, int]]] = []
    for size in sizes:
        runs.append((size, "nodes", MEMORY_PER_MHZ))
        if not args.no_first_fit:
            runs.append((size, "first_fit", MEMORY_PER_MHZ))
    if not args.no_diverse:
        runs.append((args.diverse_size or min(sizes), "diverse_shapes", DIVERSE_MEMORY_PER_MHZ))
    for size, name, shapes in runs:
        nodes, jobs = workload(size, args.seed, shapes)
        o = run(nodes, jobs, first_fit=name == "first_fit")
        rows.append((f"{name.replace('nodes', 'shoal')} {size}", o))
        figures[f"{name}_{size}_placements_per_s"] = round(o.placements_per_s, 1)
        figures[f"{name}_{size}_efficiency"] = round(o.efficiency, 4)
        figures[f"{name}_{size}_seconds"] = round(o.seconds, 3)
        figures[f"{name}_{size}_placements_per_cpu_s"] = round(o.placed / o.cpu_seconds, 1) if o.cpu_seconds else 0.0
        figures[f"{name}_{size}_schedule_seconds"] = round(o.clock.schedule, 3)
        figures[f"{name}_{size}_fit_check_seconds"] = round(o.clock.check, 3)
        figures[f"{name}_{size}_commit_seconds"] = round(o.clock.commit, 3)
        figures[f"{name}_{size}_placed_allocs"] = o.placed
        figures[f"{name}_{size}_nodes_used"] = o.nodes_used
        figures[f"{name}_{size}_overcommitted_nodes"] = o.overcommitted
    print(f"{'run':<22}{'nodes':>7}{'wanted':>9}{'placed':>9}{'refused':>8}{'seconds':>9}{'placed/s':>10}"
          f"{'used':>7}{'bound':>7}{'effic.':>8}{'overcommit':>11}   seconds in: schedule / fit check / commit")
    for name, o in rows:
        print(f"{name:<22}{o.nodes:>7}{o.wanted:>9}{o.placed:>9}{o.refused_nodes:>8}{o.seconds:>9.2f}"
              f"{o.placements_per_s:>10.0f}{o.nodes_used:>7}{o.lower_bound:>7}{o.efficiency:>8.3f}{o.overcommitted:>11}"
              f"   {o.clock.schedule:.2f} / {o.clock.check:.2f} / {o.clock.commit:.2f}")
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        a, b = figures[f"nodes_{lo}_placements_per_s"], figures[f"nodes_{hi}_placements_per_s"]
        figures["scale_ratio"] = round(max(a, b) / min(a, b), 3) if min(a, b) > 0 else 0.0
        print(f"placements/s at {lo} nodes vs {hi} nodes: {figures['scale_ratio']:.2f}x apart")
    if not args.no_first_fit:
        for size in sizes:
            ours, ff = figures[f"nodes_{size}_placements_per_s"], figures[f"first_fit_{size}_placements_per_s"]
            figures[f"speedup_over_first_fit_{size}"] = round(ours / ff, 2) if ff else 0.0
            figures[f"efficiency_over_first_fit_{size}"] = round(
                figures[f"nodes_{size}_efficiency"] / figures[f"first_fit_{size}_efficiency"], 3
            ) if figures[f"first_fit_{size}_efficiency"] else 0.0
    figures["total_seconds"] = round(time.perf_counter() - wall, 1)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
