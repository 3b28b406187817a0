"""What the cluster is using, as this scheduler run's plan changes it.

A :class:`NodeTally` per node holds capacity (resources minus reserved), what
live allocations use (cpu, memory, disk), the host ports they hold and the
node's dynamic port range (``Node.min_dynamic_port``..``max_dynamic_port``). Tallies
are built lazily, once per run, the first time a node is ranked, and then kept
current as the plan stops and places allocations: a placement costs O(1),
never a rescan of the node's allocations.

Building a tally costs one pass over the node's allocations, unless the state
keeps a :class:`UsageIndex` (per-node sums kept as allocations are written,
``SchedulerState.usage_index``): then it is O(1) plus a copy of the node's
port set. The run's own stops are subtracted either way.

:class:`PlanUsage` also counts the job's live allocations per node and per
(node, group), which job anti-affinity, ``distinct_hosts`` and the system
scheduler read.

:func:`node_fit` is the plan applier's check of one node: do the new
allocations fit next to the live ones, resources and ports?
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from immutables import Map

from shoal.jobs.model import Job, Resources
from shoal.jobs.structs import (
    CLIENT_TERMINAL,
    DEFAULT_MAX_DYNAMIC_PORT,
    DEFAULT_MIN_DYNAMIC_PORT,
    DESIRED_RUN,
    Allocation,
    Node,
)
from shoal.scheduler.state import SchedulerState, StateReader

CPU, MEMORY, DISK = "cpu", "memory", "disk"
PORT_COLLISION = "network: port collision"
PORTS_EXHAUSTED = "network: dynamic port selection failed"


def live(a: Allocation) -> bool:
    """Holds resources on its node: wanted running and not finished on the client."""
    return a.desired_status == DESIRED_RUN and a.client_status not in CLIENT_TERMINAL


@dataclass(slots=True)
class NodeTally:
    cpu_cap: int  # MHz the node offers to allocations (resources - reserved)
    memory_cap: int  # MB
    disk_cap: int  # MB
    cpu: int = 0  # used by live allocations, this plan included
    memory: int = 0
    disk: int = 0
    ports: set[int] = field(default_factory=set)  # host ports taken (reserved ones included)
    dynamic_used: int = 0  # how many of ``ports`` are in the node's dynamic range
    min_dynamic: int = DEFAULT_MIN_DYNAMIC_PORT  # the node's dynamic range (inclusive)
    max_dynamic: int = DEFAULT_MAX_DYNAMIC_PORT
    next_dynamic: int = DEFAULT_MIN_DYNAMIC_PORT  # where the next dynamic port search starts

    @classmethod
    def for_node(cls, node: Node) -> NodeTally:
        r, z = node.resources, node.reserved
        t = cls(r.cpu - z.cpu, r.memory - z.memory, r.disk - z.disk)
        t.min_dynamic = t.next_dynamic = node.min_dynamic_port  # stores: cheaper than keyword arguments
        t.max_dynamic = node.max_dynamic_port
        if node.reserved_ports:
            t.take_ports(node.reserved_ports)
        return t

    def add(self, res: Resources, sign: int = 1) -> None:
        self.cpu += sign * res.cpu
        self.memory += sign * res.memory
        self.disk += sign * res.disk

    def take_ports(self, values: Iterable[int]) -> None:
        ports, low, high = self.ports, self.min_dynamic, self.max_dynamic
        for v in values:
            if v not in ports:
                ports.add(v)
                if low <= v <= high:
                    self.dynamic_used += 1

    def free_ports(self, values: Iterable[int]) -> None:
        ports, low, high = self.ports, self.min_dynamic, self.max_dynamic
        for v in values:
            if v in ports:
                ports.discard(v)
                if low <= v <= high:
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
    allocs: int = 0  # live allocations


_EMPTY_USAGE = NodeUsage()
LEVELS_PER_OCTAVE = 4


def capacity_level(amount: int) -> int:
    """A free amount (MHz or MB) on a log scale, four levels per doubling."""
    return 0 if amount <= 0 else int(math.log2(amount) * LEVELS_PER_OCTAVE) + 1


class UsageIndex:
    """Per-node usage of live allocations, kept current from record writes, and
    the nodes ordered by free capacity.

    Pure bookkeeping for a state store (or a listener on its change stream): call
    :meth:`upsert` with every allocation record written and :meth:`put_node`
    with every node record. A scheduler reads it through
    ``SchedulerState.usage_index``: :meth:`node_usage` (the per-node sums) and
    :meth:`candidates`: the schedulable nodes that
    may fit an ask, used nodes with the least free capacity first (free cpu and
    memory bucketed on a log scale), then empty nodes, largest first. Placing
    in that order packs allocations onto few nodes (best fit, opening the
    largest node when nothing in use fits), and finding a fitting node costs
    about the same in a cluster of 500 or 5,000 nodes.
    """

    __slots__ = ("nodes", "_allocs", "_caps", "_where", "_cells", "_cell_keys", "_empty", "_empty_keys")

    # Persistent maps (``immutables.Map``): :meth:`view` is O(1) however large the cluster, and a view
    # never sees later writes. Only the small sorted key lists are copied.
    def __init__(self, nodes: Iterable[Node] = (), allocs: Iterable[Allocation] = ()) -> None:
        self.nodes: Map[str, NodeUsage] = Map()
        self._allocs: dict[str, Allocation] = {}  # the live index's own bookkeeping; views have none
        self._caps: Map[str, tuple[int, int]] = Map()  # schedulable node id -> (cpu, memory) offered
        self._where: Map[str, tuple[bool, tuple[int, int]]] = Map()  # node id -> (used?, cell or size class)
        self._cells: Map[tuple[int, int], Map[str, None]] = Map()  # (cpu level, memory level) -> used nodes
        self._cell_keys: list[tuple[int, int, int]] = []  # sorted (level sum, cpu level, memory level)
        self._empty: Map[tuple[int, int], Map[str, None]] = Map()  # (-cpu, -memory) capacity -> empty nodes
        self._empty_keys: list[tuple[int, int]] = []  # sorted: largest first
        for n in nodes:
            self.put_node(n)
        for a in allocs:
            self.upsert(a)

    # -- nodes --

    def put_node(self, node: Node) -> None:
        r, z = node.resources, node.reserved
        if node.schedulable():
            self._caps = self._caps.set(node.id, (r.cpu - z.cpu, r.memory - z.memory))
        elif node.id in self._caps:
            self._caps = self._caps.delete(node.id)
        self._place(node.id)

    def remove_node(self, node_id: str) -> None:
        if node_id in self._caps:
            self._caps = self._caps.delete(node_id)
        self._place(node_id)

    def _place(self, node_id: str) -> None:
        """Move the node to the cell its free capacity says (or out of the order)."""
        cap = self._caps.get(node_id)
        new: tuple[bool, tuple[int, int]] | None = None
        if cap is not None:
            u = self.nodes.get(node_id, _EMPTY_USAGE)
            if u.allocs > 0:
                new = (True, (capacity_level(cap[0] - u.cpu), capacity_level(cap[1] - u.memory)))
            else:
                new = (False, (-cap[0], -cap[1]))
        old = self._where.get(node_id)
        if old == new:
            return
        if old is not None:
            used, key = old
            table = self._cells if used else self._empty
            members = table[key].delete(node_id)
            if members:
                table = table.set(key, members)
            else:
                table = table.delete(key)
                keys = self._cell_keys if used else self._empty_keys
                sort_key = (key[0] + key[1], key[0], key[1]) if used else key
                del keys[bisect.bisect_left(keys, sort_key)]  # type: ignore[arg-type]
            if used:
                self._cells = table
            else:
                self._empty = table
            self._where = self._where.delete(node_id)
        if new is None:
            return
        used, key = new
        table = self._cells if used else self._empty
        members = table.get(key)
        if members is None:
            members = Map()
            keys = self._cell_keys if used else self._empty_keys
            bisect.insort(keys, (key[0] + key[1], key[0], key[1]) if used else key)  # type: ignore[arg-type]
        table = table.set(key, members.set(node_id, None))
        if used:
            self._cells = table
        else:
            self._empty = table
        self._where = self._where.set(node_id, new)

    # -- allocations --

    def _apply(self, a: Allocation, sign: int) -> None:
        # Copy on write: a NodeUsage handed out (by node_usage, or shared with a view) never changes.
        u = self.nodes.get(a.node_id) or _EMPTY_USAGE
        r = a.resources
        ports = u.ports
        if a.ports:
            ports = dict(ports)
            for p in a.ports:
                n = ports.get(p.value, 0) + sign
                if n > 0:
                    ports[p.value] = n
                else:
                    ports.pop(p.value, None)
        self.nodes = self.nodes.set(a.node_id, NodeUsage(u.cpu + sign * r.cpu, u.memory + sign * r.memory,
                                                         u.disk + sign * r.disk, ports, u.allocs + sign))

    def upsert(self, alloc: Allocation) -> None:
        old = self._allocs.get(alloc.id)
        self._allocs[alloc.id] = alloc
        was, now = old is not None and live(old), live(alloc)
        if not was and not now:
            return
        if was:
            self._apply(old, -1)  # type: ignore[arg-type]
        if now:
            self._apply(alloc, 1)
        self._place(alloc.node_id)
        if was and old.node_id != alloc.node_id:  # type: ignore[union-attr]
            self._place(old.node_id)  # type: ignore[union-attr]

    def delete(self, alloc_id: str) -> None:
        old = self._allocs.pop(alloc_id, None)
        if old is not None and live(old):
            self._apply(old, -1)
            self._place(old.node_id)

    # -- reads --

    def node_usage(self, node_id: str) -> NodeUsage:
        return self.nodes.get(node_id) or _EMPTY_USAGE

    def view(self) -> UsageIndex:
        """A copy for reading (``node_usage``, ``candidates``) that later writes to this index do not
        change: what a scheduler plans on while the state moves on. O(1) but for the short sorted lists
        of capacity cells."""
        v = UsageIndex.__new__(UsageIndex)
        v.nodes, v._caps, v._where, v._cells, v._empty = self.nodes, self._caps, self._where, self._cells, self._empty
        v._allocs = {}  # a view is not written to
        v._cell_keys = list(self._cell_keys)
        v._empty_keys = list(self._empty_keys)
        return v

    def node_count(self) -> int:
        """How many schedulable nodes the index orders."""
        return len(self._caps)

    def candidates(self, cpu: int, memory: int) -> Iterator[str]:
        """Ids of schedulable nodes that may have ``cpu`` and ``memory`` free: used
        nodes from the least free up, then empty nodes from the largest down. The
        order is a hint (a bucket holds nodes within a fifth of each other)."""
        lc, lm = capacity_level(cpu), capacity_level(memory)
        cells = self._cells
        fitting = [(max(c - lc, m - lm), c - lc + m - lm, c, m) for _, c, m in self._cell_keys if c >= lc and m >= lm]
        fitting.sort()
        for _, _, c, m in fitting:
            members = cells.get((c, m))
            if members:
                yield from list(members)
        empty = self._empty
        for key in list(self._empty_keys):
            if -key[0] >= cpu and -key[1] >= memory:
                members = empty.get(key)
                if members:
                    yield from list(members)


S = TypeVar("S", bound=StateReader)


class IndexedState(Generic[S]):
    """A :class:`~shoal.scheduler.state.SchedulerState`: a state snapshot plus a :class:`UsageIndex`
    taken at the same index, so tallies and candidates come without walking allocations. The
    snapshot stays at hand (``snapshot``) for what else its owner reads at that index."""

    __slots__ = ("snapshot", "_index")

    def __init__(self, snapshot: S, index: UsageIndex) -> None:
        self.snapshot: S = snapshot
        self._index = index

    def job(self, namespace: str, job_id: str) -> Job | None:
        return self.snapshot.job(namespace, job_id)

    def job_version(self, namespace: str, job_id: str, version: int) -> Job | None:
        return self.snapshot.job_version(namespace, job_id, version)

    def nodes(self) -> Iterable[Node]:
        return self.snapshot.nodes()

    def node(self, node_id: str) -> Node | None:
        return self.snapshot.node(node_id)

    def allocs_by_job(self, namespace: str, job_id: str) -> list[Allocation]:
        return self.snapshot.allocs_by_job(namespace, job_id)

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        return self.snapshot.allocs_by_node(node_id)

    def usage_index(self) -> UsageIndex:
        return self._index


class PlanUsage:
    """Per-node tallies and the job's per-node allocation counts, plan included."""

    __slots__ = ("_state", "_index", "tallies", "_stopped", "_pending", "_job_counts", "group_counts")

    def __init__(self, state: SchedulerState, job_allocs: Iterable[Allocation] = ()) -> None:
        self._state = state
        self._index = state.usage_index()
        self.tallies: dict[str, NodeTally] = {}  # node id -> tally, for nodes looked at so far
        self._stopped: set[str] = set()  # ids of allocations this plan stops
        self._pending: dict[str, list[Allocation]] = {}  # stops on nodes without a tally yet
        self._job_counts: dict[str, int] = {}
        self.group_counts: dict[tuple[str, str], int] = {}  # (node id, group) -> the job's live allocations
        for a in job_allocs:
            if live(a):
                self.count(a, 1)

    # -- tallies --

    def tally(self, node: Node) -> NodeTally:
        t = self.tallies.get(node.id)
        if t is None:
            t = self._build(node)
        return t

    def _build(self, node: Node) -> NodeTally:
        t = NodeTally.for_node(node)
        index = self._index
        if index is not None:
            u = index.node_usage(node.id)
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

    def count(self, a: Allocation, delta: int) -> None:
        """Add ``delta`` to the job's allocation counts of ``a``'s node (and group)."""
        n = a.node_id
        self._job_counts[n] = self._job_counts.get(n, 0) + delta
        key = (n, a.task_group)
        self.group_counts[key] = self.group_counts.get(key, 0) + delta

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
            self.count(alloc, -1)

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
            self.count(alloc, 1)

    def place(self, node: Node, alloc: Allocation) -> None:
        self.tally(node).add_alloc(alloc)
        self.count(alloc, 1)

    def stopped(self, alloc_id: str) -> bool:
        return alloc_id in self._stopped

    # -- ProposedAllocs --

    def job_count(self, node_id: str) -> int:
        return self._job_counts.get(node_id, 0)

    def group_count(self, node_id: str, group: str) -> int:
        return self.group_counts.get((node_id, group), 0)


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
