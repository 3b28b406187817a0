"""What the cluster is using, as this scheduler run's plan changes it.

A :class:`NodeTally` per node holds capacity (resources minus reserved), what
live allocations use (cpu, memory, disk) and the host ports they hold. Tallies
are built lazily, once per run, the first time a node is ranked, and then kept
current as the plan stops and places allocations: a placement costs O(1),
never a rescan of the node's allocations.

Building a tally costs one pass over the node's allocations, unless the state
offers ``node_usage(node_id) -> NodeUsage`` (a per-node sum kept as allocations
are written, see :class:`UsageIndex`): then it is O(1) plus a copy of the
node's port set. The run's own stops are subtracted either way.

:class:`PlanUsage` also counts the job's live allocations per node and per
(node, group), which job anti-affinity, ``distinct_hosts`` and the system
scheduler read.

:func:`node_fit` is the plan applier's check of one node: do the new
allocations fit next to the live ones, resources and ports?
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from shoal.jobs.model import Resources
from shoal.jobs.structs import CLIENT_TERMINAL, DESIRED_RUN, Allocation, Node
from shoal.scheduler.state import StateReader

MIN_DYNAMIC_PORT = 20000
MAX_DYNAMIC_PORT = 32000  # inclusive, as Nomad's default range
DYNAMIC_PORTS = MAX_DYNAMIC_PORT - MIN_DYNAMIC_PORT + 1

CPU, MEMORY, DISK = "cpu", "memory", "disk"
PORT_COLLISION = "network: port collision"
PORTS_EXHAUSTED = "network: dynamic port selection failed"


def live(a: Allocation) -> bool:
    """Holds resources on its node: wanted running and not finished on the client."""
    return a.desired_status == DESIRED_RUN and a.client_status not in CLIENT_TERMINAL


def _dynamic(port: int) -> bool:
    return MIN_DYNAMIC_PORT <= port <= MAX_DYNAMIC_PORT


@dataclass(slots=True)
class NodeTally:
    cpu_cap: int  # MHz the node offers to allocations (resources - reserved)
    memory_cap: int  # MB
    disk_cap: int  # MB
    cpu: int = 0  # used by live allocations, this plan included
    memory: int = 0
    disk: int = 0
    ports: set[int] = field(default_factory=set)  # host ports taken (reserved ones included)
    dynamic_used: int = 0  # how many of ``ports`` are in the dynamic range
    next_dynamic: int = MIN_DYNAMIC_PORT  # where the next dynamic port search starts

    @classmethod
    def for_node(cls, node: Node) -> NodeTally:
        r, z = node.resources, node.reserved
        t = cls(r.cpu - z.cpu, r.memory - z.memory, r.disk - z.disk)
        if node.reserved_ports:
            t.take_ports(node.reserved_ports)
        return t

    def add(self, res: Resources, sign: int = 1) -> None:
        self.cpu += sign * res.cpu
        self.memory += sign * res.memory
        self.disk += sign * res.disk

    def take_ports(self, values: Iterable[int]) -> None:
        ports = self.ports
        for v in values:
            if v not in ports:
                ports.add(v)
                if _dynamic(v):
                    self.dynamic_used += 1

    def free_ports(self, values: Iterable[int]) -> None:
        ports = self.ports
        for v in values:
            if v in ports:
                ports.discard(v)
                if _dynamic(v):
                    self.dynamic_used -= 1

    def add_alloc(self, alloc: Allocation, sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (-1) an allocation's resources and ports."""
        self.add(alloc.resources, sign)
        if alloc.ports:
            values = [p.value for p in alloc.ports]
            if sign > 0:
                self.take_ports(values)
            else:
                self.free_ports(values)


@dataclass(slots=True)
class NodeUsage:
    """The sum of a node's live allocations, as a state keeps it (:class:`UsageIndex`)."""

    cpu: int = 0
    memory: int = 0
    disk: int = 0
    ports: dict[int, int] = field(default_factory=dict)  # host port -> live allocations holding it


class UsageIndex:
    """Per-node usage of live allocations, kept current from allocation writes.

    Pure bookkeeping for a state store (or a listener on its change stream): call
    :meth:`upsert` with every allocation record written; :meth:`node_usage`
    answers the scheduler's optional ``StateReader.node_usage``. It keeps the
    last record per allocation id to subtract what a record replaced.
    """

    __slots__ = ("nodes", "_allocs")

    def __init__(self, allocs: Iterable[Allocation] = ()) -> None:
        self.nodes: dict[str, NodeUsage] = {}
        self._allocs: dict[str, Allocation] = {}
        for a in allocs:
            self.upsert(a)

    def _apply(self, a: Allocation, sign: int) -> None:
        u = self.nodes.get(a.node_id)
        if u is None:
            u = self.nodes[a.node_id] = NodeUsage()
        r = a.resources
        u.cpu += sign * r.cpu
        u.memory += sign * r.memory
        u.disk += sign * r.disk
        ports = u.ports
        for p in a.ports:
            n = ports.get(p.value, 0) + sign
            if n > 0:
                ports[p.value] = n
            else:
                ports.pop(p.value, None)

    def upsert(self, alloc: Allocation) -> None:
        old = self._allocs.get(alloc.id)
        if old is not None and live(old):
            self._apply(old, -1)
        self._allocs[alloc.id] = alloc
        if live(alloc):
            self._apply(alloc, 1)

    def delete(self, alloc_id: str) -> None:
        old = self._allocs.pop(alloc_id, None)
        if old is not None and live(old):
            self._apply(old, -1)

    def node_usage(self, node_id: str) -> NodeUsage:
        return self.nodes.get(node_id) or NodeUsage()


class PlanUsage:
    """Per-node tallies and the job's per-node allocation counts, plan included."""

    __slots__ = ("_state", "_node_usage", "tallies", "_stopped", "_pending", "_job_counts", "_group_counts")

    def __init__(self, state: StateReader, job_allocs: Iterable[Allocation] = ()) -> None:
        self._state = state
        self._node_usage = getattr(state, "node_usage", None)  # optional StateReader method
        self.tallies: dict[str, NodeTally] = {}  # node id -> tally, for nodes looked at so far
        self._stopped: set[str] = set()  # ids of allocations this plan stops
        self._pending: dict[str, list[Allocation]] = {}  # stops on nodes without a tally yet
        self._job_counts: dict[str, int] = {}
        self._group_counts: dict[tuple[str, str], int] = {}
        for a in job_allocs:
            if live(a):
                self._count(a, 1)

    # -- tallies --

    def tally(self, node: Node) -> NodeTally:
        t = self.tallies.get(node.id)
        if t is None:
            t = self._build(node)
        return t

    def _build(self, node: Node) -> NodeTally:
        t = NodeTally.for_node(node)
        u = self._node_usage(node.id) if self._node_usage is not None else None
        if u is not None:
            t.cpu, t.memory, t.disk = u.cpu, u.memory, u.disk
            if u.ports:
                t.take_ports(u.ports)
        else:
            cpu = mem = disk = 0
            for a in self._state.allocs_by_node(node.id):
                if a.desired_status != DESIRED_RUN or a.client_status in CLIENT_TERMINAL:
                    continue
                r = a.resources
                cpu += r.cpu
                mem += r.memory
                disk += r.disk
                if a.ports:
                    t.take_ports([p.value for p in a.ports])
            t.cpu, t.memory, t.disk = cpu, mem, disk
        for a in self._pending.pop(node.id, ()):
            t.add_alloc(a, -1)
        self.tallies[node.id] = t
        return t

    # -- the plan --

    def _count(self, a: Allocation, delta: int) -> None:
        n = a.node_id
        self._job_counts[n] = self._job_counts.get(n, 0) + delta
        key = (n, a.task_group)
        self._group_counts[key] = self._group_counts.get(key, 0) + delta

    def stop(self, alloc: Allocation, *, counted: bool = True) -> None:
        """The plan stops (or evicts) ``alloc``, a record from the state: free what it
        used. ``counted``: the allocation is the job's (in the per-node counts)."""
        if alloc.id in self._stopped:
            return
        self._stopped.add(alloc.id)
        if not live(alloc):
            return
        t = self.tallies.get(alloc.node_id)
        if t is not None:
            t.add_alloc(alloc, -1)
        else:
            self._pending.setdefault(alloc.node_id, []).append(alloc)
        if counted:
            self._count(alloc, -1)

    def unstop(self, alloc: Allocation, *, counted: bool = True) -> None:
        """Undo :meth:`stop` (the replacement of a destructive update did not fit)."""
        if alloc.id not in self._stopped:
            return
        self._stopped.discard(alloc.id)
        if not live(alloc):
            return
        t = self.tallies.get(alloc.node_id)
        if t is not None:
            t.add_alloc(alloc)
        else:
            pending = self._pending.get(alloc.node_id, [])
            if alloc in pending:
                pending.remove(alloc)
        if counted:
            self._count(alloc, 1)

    def place(self, node: Node, alloc: Allocation) -> None:
        self.tally(node).add_alloc(alloc)
        self._count(alloc, 1)

    def stopped(self, alloc_id: str) -> bool:
        return alloc_id in self._stopped

    # -- ProposedAllocs --

    def job_count(self, node_id: str) -> int:
        return self._job_counts.get(node_id, 0)

    def group_count(self, node_id: str, group: str) -> int:
        return self._group_counts.get((node_id, group), 0)


def alloc_exhausted(tally: NodeTally, alloc: Allocation) -> str | None:
    """None when ``alloc`` (resources and the host ports it holds) fits on the node
    next to what ``tally`` counts; else the first exhausted dimension."""
    r = alloc.resources
    if tally.cpu + r.cpu > tally.cpu_cap:
        return CPU
    if tally.memory + r.memory > tally.memory_cap:
        return MEMORY
    if tally.disk + r.disk > tally.disk_cap:
        return DISK
    seen: set[int] = set()
    for p in alloc.ports:
        if p.value in tally.ports or p.value in seen or not 0 < p.value < 65536:
            return PORT_COLLISION
        seen.add(p.value)
    return None


def node_fit(
    node: Node, existing: Iterable[Allocation], new: Iterable[Allocation], removed: Container[str] = ()
) -> str | None:
    """The plan applier's check of one node: None when every allocation of ``new``
    fits next to the live allocations of ``existing`` whose ids are not in
    ``removed`` (the plan's stops and preemptions on the node); else the first
    exhausted dimension (``cpu``, ``memory``, ``disk``, ``network: port collision``)."""
    tally = NodeTally.for_node(node)
    for a in existing:
        if live(a) and a.id not in removed:
            tally.add_alloc(a)
    for a in new:
        why = alloc_exhausted(tally, a)
        if why is not None:
            return why
        tally.add_alloc(a)
    return None
