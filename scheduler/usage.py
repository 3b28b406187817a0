"""What the cluster is using, as this scheduler run's plan changes it.

A :class:`NodeTally` per node holds capacity (resources minus reserved) and what
non-terminal allocations use. Tallies are built lazily, once per run, the first
time a node is ranked (one pass over ``allocs_by_node``), and then kept current
as the plan stops and places allocations: a placement costs O(1), never a
rescan of the node's allocations.

:class:`PlanUsage` also counts the job's live allocations per node and per
(node, group), which job anti-affinity and ``distinct_hosts`` read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shoal.jobs.model import Resources
from shoal.jobs.structs import Allocation, Node
from shoal.scheduler.state import StateReader


@dataclass(slots=True)
class NodeTally:
    cpu_cap: int  # MHz the node offers to allocations (resources - reserved)
    memory_cap: int  # MB
    disk_cap: int  # MB
    cpu: int = 0  # used by live allocations, this plan included
    memory: int = 0
    disk: int = 0

    @classmethod
    def for_node(cls, node: Node) -> NodeTally:
        r, z = node.resources, node.reserved
        return cls(r.cpu - z.cpu, r.memory - z.memory, r.disk - z.disk)

    def add(self, res: Resources, sign: int = 1) -> None:
        self.cpu += sign * res.cpu
        self.memory += sign * res.memory
        self.disk += sign * res.disk


class PlanUsage:
    """Per-node tallies and the job's per-node allocation counts, plan included."""

    __slots__ = ("_state", "tallies", "_stopped", "_job_counts", "_group_counts")

    def __init__(self, state: StateReader, job_allocs: Iterable[Allocation] = ()) -> None:
        self._state = state
        self.tallies: dict[str, NodeTally] = {}  # node id -> tally, for nodes looked at so far
        self._stopped: set[str] = set()  # ids of allocations this plan stops
        self._job_counts: dict[str, int] = {}
        self._group_counts: dict[tuple[str, str], int] = {}
        for a in job_allocs:
            if not a.terminal():
                self._count(a, 1)

    # -- tallies --

    def tally(self, node: Node) -> NodeTally:
        t = self.tallies.get(node.id)
        if t is None:
            t = self._build(node)
        return t

    def _build(self, node: Node) -> NodeTally:
        t = NodeTally.for_node(node)
        stopped = self._stopped
        cpu = mem = disk = 0
        for a in self._state.allocs_by_node(node.id):
            if a.terminal() or a.id in stopped:
                continue
            r = a.resources
            cpu += r.cpu
            mem += r.memory
            disk += r.disk
        t.cpu, t.memory, t.disk = cpu, mem, disk
        self.tallies[node.id] = t
        return t

    # -- the plan --

    def _count(self, a: Allocation, delta: int) -> None:
        n = a.node_id
        self._job_counts[n] = self._job_counts.get(n, 0) + delta
        key = (n, a.task_group)
        self._group_counts[key] = self._group_counts.get(key, 0) + delta

    def stop(self, alloc: Allocation) -> None:
        """The plan stops ``alloc`` (a record from the state): free what it used."""
        if alloc.id in self._stopped or alloc.terminal():
            self._stopped.add(alloc.id)
            return
        self._stopped.add(alloc.id)
        t = self.tallies.get(alloc.node_id)
        if t is not None:
            t.add(alloc.resources, -1)
        self._count(alloc, -1)

    def unstop(self, alloc: Allocation) -> None:
        """Undo :meth:`stop` (the replacement of a destructive update did not fit)."""
        if alloc.id not in self._stopped:
            return
        self._stopped.discard(alloc.id)
        if alloc.terminal():
            return
        t = self.tallies.get(alloc.node_id)
        if t is not None:
            t.add(alloc.resources)
        self._count(alloc, 1)

    def place(self, node: Node, alloc: Allocation) -> None:
        self.tally(node).add(alloc.resources)
        self._count(alloc, 1)

    def stopped(self, alloc_id: str) -> bool:
        return alloc_id in self._stopped

    # -- ProposedAllocs --

    def job_count(self, node_id: str) -> int:
        return self._job_counts.get(node_id, 0)

    def group_count(self, node_id: str, group: str) -> int:
        return self._group_counts.get((node_id, group), 0)
