"""Properties over random clusters and jobs: no node is over-committed on any
resource (host ports included), no hard constraint is violated, every service or
batch group ends with exactly ``count`` live allocations minus what the plan
reports as missing, and a system job never has two allocations of a group on one
node. With and without a usage index (the best-fit candidate order)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.jobs.model import Constraint, Job, Network, Port, Resources, Task, TaskGroup
from shoal.jobs.structs import NODE_DOWN, NODE_READY, AllocatedPort, Allocation, Evaluation, Node, NodeResources
from shoal.scheduler import schedule
from shoal.scheduler.usage import UsageIndex, node_fit

# Constraints with an independent oracle: (constraint, does the node satisfy it?)
Oracle = Callable[[Node], bool]
CONSTRAINTS: list[tuple[Constraint, Oracle]] = [
    (Constraint("${attr.kernel.name}", "=", "linux"), lambda n: n.attributes.get("kernel.name") == "linux"),
    (Constraint("${attr.kernel.name}", "!=", "darwin"), lambda n: n.attributes.get("kernel.name") != "darwin"),
    (Constraint("${meta.rack}", "regexp", "^r[12]$"), lambda n: n.meta.get("rack") in ("r1", "r2")),
    (Constraint("${meta.rack}", "is_set", ""), lambda n: "rack" in n.meta),
    (Constraint("${meta.ssd}", "is_not_set", ""), lambda n: "ssd" not in n.meta),
    (Constraint("${attr.cpu.cores}", ">=", "8"), lambda n: int(n.attributes.get("cpu.cores", "-1")) >= 8),
    (Constraint("${attr.os.version}", "version", ">= 20.4, < 24"),
     lambda n: "os.version" in n.attributes and (20, 4) <= tuple(map(int, n.attributes["os.version"].split("."))) < (24, 0)),
    (Constraint("${meta.tags}", "set_contains_any", "gpu,fast"),
     lambda n: bool({"gpu", "fast"} & set(n.meta.get("tags", "").split(",")))),
    (Constraint("${node.datacenter}", "=", "dc1"), lambda n: n.datacenter == "dc1"),
]


@st.composite
def nodes(draw) -> list[Node]:
    count = draw(st.integers(0, 12))
    out = []
    for i in range(count):
        cpu = draw(st.sampled_from([1000, 2000, 4000, 8000]))
        memory = draw(st.sampled_from([1024, 2048, 8192]))
        disk = draw(st.sampled_from([500, 2000, 10_000]))
        attributes = {"kernel.name": draw(st.sampled_from(["linux", "linux", "darwin"]))}
        if draw(st.booleans()):
            attributes["cpu.cores"] = str(draw(st.sampled_from([2, 4, 8, 16])))
        if draw(st.booleans()):
            attributes["os.version"] = draw(st.sampled_from(["18.4", "20.4", "22.4", "24.4"]))
        meta = {}
        if draw(st.booleans()):
            meta["rack"] = draw(st.sampled_from(["r1", "r2", "r3"]))
        if draw(st.booleans()):
            meta["ssd"] = "yes"
        if draw(st.booleans()):
            meta["tags"] = draw(st.sampled_from(["gpu", "slow", "fast,gpu", "slow,big"]))
        out.append(
            Node(
                id=f"n{i:02d}",
                name=f"node{i}",
                datacenter=draw(st.sampled_from(["dc1", "dc1", "dc2"])),
                node_pool=draw(st.sampled_from(["default", "default", "gpu"])),
                status=draw(st.sampled_from([NODE_READY, NODE_READY, NODE_READY, NODE_DOWN])),
                eligible=draw(st.booleans()) or draw(st.booleans()),
                drain=draw(st.integers(0, 5)) == 0,
                attributes=attributes,
                meta=meta,
                resources=NodeResources(cpu=cpu, memory=memory, disk=disk),
                reserved=NodeResources(cpu=draw(st.sampled_from([0, 100, 500])), memory=draw(st.sampled_from([0, 256]))),
                drivers=draw(st.sampled_from([["exec"], ["docker"], ["exec", "docker"], ["exec", "docker", "raw_exec"]])),
            )
        )
    return out


@st.composite
def jobs(draw) -> Job:
    groups = []
    for g in range(draw(st.integers(1, 3))):
        picked = draw(st.lists(st.sampled_from(range(len(CONSTRAINTS))), max_size=2, unique=True))
        tasks = [
            Task(
                name=f"t{t}",
                driver=draw(st.sampled_from(["exec", "docker"])),
                resources=Resources(cpu=draw(st.sampled_from([100, 500, 1500])), memory=draw(st.sampled_from([64, 512, 1500]))),
            )
            for t in range(draw(st.integers(1, 2)))
        ]
        ports = draw(st.sampled_from([[], [], [Port("http")], [Port("http", 8080)], [Port("a", 9090), Port("b")]]))
        groups.append(
            TaskGroup(
                name=f"g{g}",
                count=draw(st.integers(0, 8)),
                tasks=tasks,
                constraints=[CONSTRAINTS[i][0] for i in picked],
                ephemeral_disk=draw(st.sampled_from([0, 300, 1000])),
                networks=[Network(ports=ports)] if ports else [],
            )
        )
    job_constraints = [CONSTRAINTS[i][0] for i in draw(st.lists(st.sampled_from(range(len(CONSTRAINTS))), max_size=1))]
    if draw(st.integers(0, 3)) == 0:
        job_constraints.append(Constraint("", "distinct_hosts", "true"))
    return Job(
        id="app",
        type=draw(st.sampled_from(["service", "service", "batch", "system", "sysbatch"])),
        datacenters=draw(st.sampled_from([["*"], ["dc1"], ["dc2", "dc1"], ["d*"]])),
        node_pool=draw(st.sampled_from(["default", "all"])),
        groups=groups,
        constraints=job_constraints,
        version=draw(st.integers(0, 1)),
    )


@dataclass
class State:
    job_: Job
    node_map: dict[str, Node]
    allocs: list[Allocation]

    def job(self, namespace, job_id):
        return self.job_ if (namespace, job_id) == (self.job_.namespace, self.job_.id) else None

    def job_version(self, namespace, job_id, version):
        job = self.job(namespace, job_id)
        return job if job is not None and job.version == version else None  # keeps no older versions

    def nodes(self):
        return list(self.node_map.values())

    def node(self, node_id):
        return self.node_map.get(node_id)

    def allocs_by_job(self, namespace, job_id):
        return [a for a in self.allocs if (a.namespace, a.job_id) == (namespace, job_id)]

    def allocs_by_node(self, node_id):
        return [a for a in self.allocs if a.node_id == node_id]

    def usage_index(self):
        return None


class IndexedState(State):
    """The same, with a usage index: tallies from per-node sums, best-fit candidates."""

    def indexed(self) -> "IndexedState":
        self.index = UsageIndex(self.node_map.values(), self.allocs)
        return self

    def usage_index(self):
        return self.index


def _cap(node: Node) -> tuple[int, int, int]:
    r, z = node.resources, node.reserved
    return r.cpu - z.cpu, r.memory - z.memory, r.disk - z.disk


@st.composite
def clusters(draw) -> State:
    """A job and nodes, with existing allocations (of this and another job) that fit."""
    node_list = draw(nodes())
    job = draw(jobs())
    used = {n.id: [0, 0, 0] for n in node_list}
    ports_used: dict[str, set[int]] = {n.id: set() for n in node_list}
    allocs: list[Allocation] = []
    for k in range(draw(st.integers(0, 15))):
        if not node_list:
            break
        node = draw(st.sampled_from(node_list))
        mine = draw(st.booleans())
        group = draw(st.sampled_from(job.groups)) if mine else None
        res = (
            Resources(cpu=sum(t.resources.cpu for t in group.tasks), memory=sum(t.resources.memory for t in group.tasks), disk=group.ephemeral_disk)
            if group
            else Resources(cpu=draw(st.sampled_from([200, 1000])), memory=draw(st.sampled_from([128, 1024])), disk=100)
        )
        u, cap = used[node.id], _cap(node)
        if u[0] + res.cpu > cap[0] or u[1] + res.memory > cap[1] or u[2] + res.disk > cap[2]:
            continue
        u[0] += res.cpu
        u[1] += res.memory
        u[2] += res.disk
        held = [p for p in draw(st.sampled_from([[], [], [8080], [9090, 20000], [20001]])) if p not in ports_used[node.id]]
        ports_used[node.id].update(held)
        allocs.append(
            Allocation(
                id=f"e{k}",
                name=f"{'app' if mine else 'other'}.{group.name if group else 'x'}[{k}]",
                job_id="app" if mine else "other",
                job_version=draw(st.sampled_from([0, job.version])),
                task_group=group.name if group else "x",
                index=draw(st.integers(0, 9)),
                node_id=node.id,
                resources=res,
                client_status=draw(st.sampled_from(["running", "running", "pending"])),
                ports=[AllocatedPort("p", v, 0) for v in held],
            )
        )
    if draw(st.booleans()):
        return IndexedState(job, {n.id: n for n in node_list}, allocs).indexed()
    return State(job, {n.id: n for n in node_list}, allocs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.sampled_from(["binpack", "spread"]), st.text("abcdef0123", min_size=1, max_size=6))
def test_plans_never_overcommit_or_break_constraints(state: State, algorithm: str, eval_seed: str):
    job = state.job_
    ids = iter(range(10_000))
    plan = schedule(
        state, Evaluation(id=eval_seed, job_id=job.id), now=1.0, new_id=lambda: f"new{next(ids)}", algorithm=algorithm
    )
    stopped = {a.id for v in plan.node_update.values() for a in v}
    placed = [a for v in plan.node_allocation.values() for a in v]
    for node_id, allocs in plan.node_allocation.items():
        assert all(a.node_id == node_id for a in allocs)

    # 1. No node is over-committed after the plan.
    usage: dict[str, list[int]] = {n: [0, 0, 0] for n in state.node_map}
    live = [a for a in state.allocs if not a.terminal() and a.id not in stopped] + placed
    for a in live:
        u = usage[a.node_id]
        u[0] += a.resources.cpu
        u[1] += a.resources.memory
        u[2] += a.resources.disk
    for node_id, (cpu, mem, disk) in usage.items():
        ccap, mcap, dcap = _cap(state.node_map[node_id])
        assert cpu <= ccap and mem <= mcap and disk <= dcap, node_id
    # ... nor on host ports: no two live allocations of a node share one
    for node_id, node in state.node_map.items():
        assert node_fit(node, [], [a for a in live if a.node_id == node_id]) is None, node_id
    for a in placed:
        group = job.group(a.task_group)
        asked = [p for n in group.networks for p in n.ports]
        assert sorted(p.label for p in a.ports) == sorted(p.label for p in asked)
        assert all(p.value == q.static for p in a.ports for q in asked if q.label == p.label and q.static)

    # 2. Every placement is on a node that satisfies every hard constraint.
    dc_patterns = [re.compile("^" + ".*".join(map(re.escape, d.split("*"))) + "$") for d in job.datacenters]
    for a in placed:
        node = state.node_map[a.node_id]
        group = job.group(a.task_group)
        assert group is not None
        assert node.status == NODE_READY and node.eligible and not node.drain
        assert any(p.match(node.datacenter) for p in dc_patterns)
        assert job.node_pool == "all" or node.node_pool == job.node_pool
        assert {t.driver for t in group.tasks} <= set(node.drivers)
        for c in [*job.constraints, *group.constraints]:
            if c.operator == "distinct_hosts":
                continue
            oracle = next(o for k, o in CONSTRAINTS if k == c)
            assert oracle(node), (c, node)
        assert (a.resources.cpu, a.resources.memory) == (
            sum(t.resources.cpu for t in group.tasks),
            sum(t.resources.memory for t in group.tasks),
        )
    if any(c.operator == "distinct_hosts" for c in job.constraints):
        # existing allocations may already share a node; a placement never joins one
        mine = [a.node_id for a in live if a.job_id == job.id]
        for a in placed:
            assert mine.count(a.node_id) == 1, a.node_id

    if job.type in ("system", "sysbatch"):
        # 3'. A system job: at most one live allocation per group and node.
        for group in job.groups:
            on = [a.node_id for a in live if a.job_id == job.id and a.task_group == group.name]
            assert len(on) == len(set(on)), group.name
        return

    # 3. Each group ends with count live allocations of the job's version, less what
    # the plan says is missing; an old version is only left running when its
    # replacement is among the missing.
    for group in job.groups:
        alive = [a for a in live if a.job_id == job.id and a.task_group == group.name]
        current = [a for a in alive if a.job_version == job.version]
        failure = plan.failed_tg_allocs.get(group.name)
        missing = failure.missing if failure else 0
        assert len(current) == group.count - missing, group.name
        assert len(alive) - len(current) <= missing
        # a placed name is unique: not placed twice, not held by a kept allocation
        # (an old version whose replacement is missing may still share it)
        new_indexes = [a.index for a in placed if a.task_group == group.name]
        assert len(new_indexes) == len(set(new_indexes))
        kept = {a.index for a in current if a.id.startswith("e")}
        assert not kept & set(new_indexes)


@st.composite
def busy_clusters(draw) -> State:
    """Healthy nodes already running allocations that hold host ports, some with a narrow
    dynamic port range, and a job (any type) whose groups ask static and dynamic ports:
    where ports and one-per-node bite."""
    node_list = [
        Node(
            id=f"n{i}",
            name=f"node{i}",
            status=NODE_READY,
            attributes={"kernel.name": "linux"},
            resources=NodeResources(cpu=8000, memory=8192, disk=10_000),
            drivers=["exec"],
            reserved_ports=draw(st.sampled_from([[], [], [22], [20000]])),
        )
        for i in range(draw(st.integers(1, 6)))
    ]
    for n in node_list:  # the default dynamic range, or a narrow one the allocations' ports may lie in or not
        n.min_dynamic_port, n.max_dynamic_port = draw(
            st.sampled_from([(20000, 32000), (20000, 32000), (20000, 20002), (20001, 20004), (20010, 20010)]))
    groups = [
        TaskGroup(
            name=f"g{g}",
            count=draw(st.integers(0, 6)),
            tasks=[Task(name="t", driver="exec", resources=Resources(cpu=200, memory=128))],
            ephemeral_disk=0,
            networks=[Network(ports=draw(st.sampled_from([
                [Port("http")], [Port("http"), Port("admin")], [Port("web", 8080)], [Port("s", 20001), Port("d")],
            ])))],
        )
        for g in range(draw(st.integers(1, 2)))
    ]
    job = Job(id="app", type=draw(st.sampled_from(["service", "batch", "system", "sysbatch"])), groups=groups)
    allocs: list[Allocation] = []
    for k in range(draw(st.integers(0, 12))):
        node = draw(st.sampled_from(node_list))
        mine = draw(st.booleans())
        group = draw(st.sampled_from(groups)) if mine else None
        taken = {p.value for a in allocs if a.node_id == node.id for p in a.ports} | set(node.reserved_ports)
        want = draw(st.sampled_from([[20000], [20001, 20002], [8080], [20000 + k]]))
        held = [p for p in want if p not in taken]
        allocs.append(
            Allocation(
                id=f"e{k}",
                name=f"app.{group.name}[0]" if group else f"other.x[{k}]",
                job_id="app" if mine else "other",
                task_group=group.name if group else "x",
                index=0 if job.type in ("system", "sysbatch") else draw(st.integers(0, 6)),
                node_id=node.id,
                resources=Resources(cpu=200, memory=128),
                client_status=draw(st.sampled_from(["running", "pending", "complete", "failed"])),
                ports=[AllocatedPort("p", v, 0) for v in held],
            )
        )
    nodes_by_id = {n.id: n for n in node_list}
    if draw(st.booleans()):
        return IndexedState(job, nodes_by_id, allocs).indexed()
    return State(job, nodes_by_id, allocs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(busy_clusters(), st.text("abcdef0123", min_size=1, max_size=6))
def test_ports_never_collide_and_system_jobs_never_double_up(state: State, eval_seed: str):
    job = state.job_
    ids = iter(range(10_000))
    plan = schedule(state, Evaluation(id=eval_seed, job_id=job.id), now=1.0, new_id=lambda: f"new{next(ids)}")
    removed = {a.id for group in (plan.node_update, plan.node_preemptions) for v in group.values() for a in v}
    placed = [a for v in plan.node_allocation.values() for a in v]
    live = [a for a in state.allocs if not a.terminal() and a.id not in removed] + placed
    for node_id, node in state.node_map.items():
        here = [a for a in live if a.node_id == node_id]
        assert node_fit(node, [], here) is None, (node_id, [(a.id, [p.value for p in a.ports]) for a in here])
    for a in placed:
        asked = [p for n in job.group(a.task_group).networks for p in n.ports]
        assert len(a.ports) == len(asked)
        node = state.node_map[a.node_id]
        dynamic = {p.label for p in asked if p.static == 0}
        assert all(node.min_dynamic_port <= p.value <= node.max_dynamic_port for p in a.ports if p.label in dynamic)
    if job.type in ("system", "sysbatch"):
        for group in job.groups:
            on = [a.node_id for a in live if a.job_id == job.id and a.task_group == group.name]
            assert len(on) == len(set(on)), group.name
