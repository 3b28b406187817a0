"""The state tables the FSM writes and everyone else reads.

Writes happen on the Raft thread (``StateStore`` methods called by the FSM);
reads happen anywhere through ``snapshot()``, a consistent read-only view that
shares the (never mutated) records. A change replaces a record, it never edits
one in place.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation, Node, ServerMember

JobKey = tuple[str, str]  # (namespace, job id)

TABLES = ("jobs", "evals", "allocs", "nodes")


@dataclass(slots=True)
class Tables:
    jobs: dict[JobKey, Job] = field(default_factory=dict)
    job_versions: dict[JobKey, list[Job]] = field(default_factory=dict)
    evals: dict[str, Evaluation] = field(default_factory=dict)
    allocs: dict[str, Allocation] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    servers: dict[str, ServerMember] = field(default_factory=dict)  # by Raft address
    # secondary indexes: sets of alloc ids
    allocs_by_job: dict[JobKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    allocs_by_node: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    evals_by_job: dict[JobKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    # last modify index per table, and overall
    table_index: dict[str, int] = field(default_factory=dict)
    index: int = 0


class StateSnapshot:
    """A read-only, point-in-time view of the tables. Implements the scheduler's StateReader."""

    __slots__ = ("_t",)

    def __init__(self, tables: Tables):
        self._t = tables

    @property
    def index(self) -> int:
        return self._t.index

    def table_index(self, table: str) -> int:
        return self._t.table_index.get(table, 0)

    # jobs
    def job(self, namespace: str, job_id: str) -> Job | None:
        return self._t.jobs.get((namespace, job_id))

    def jobs(self, namespace: str | None = None) -> list[Job]:
        return [j for (ns, _), j in self._t.jobs.items() if namespace is None or ns == namespace]

    def job_versions(self, namespace: str, job_id: str) -> list[Job]:
        return list(self._t.job_versions.get((namespace, job_id), ()))

    def job_version(self, namespace: str, job_id: str, version: int) -> Job | None:
        for j in self._t.job_versions.get((namespace, job_id), ()):
            if j.version == version:
                return j
        return None

    # nodes
    def nodes(self) -> list[Node]:
        return list(self._t.nodes.values())

    def node(self, node_id: str) -> Node | None:
        return self._t.nodes.get(node_id)

    # allocations
    def alloc(self, alloc_id: str) -> Allocation | None:
        return self._t.allocs.get(alloc_id)

    def allocs(self) -> list[Allocation]:
        return list(self._t.allocs.values())

    def allocs_by_job(self, namespace: str, job_id: str) -> list[Allocation]:
        ids = self._t.allocs_by_job.get((namespace, job_id), ())
        return [self._t.allocs[i] for i in ids]

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        ids = self._t.allocs_by_node.get(node_id, ())
        return [self._t.allocs[i] for i in ids]

    # servers
    def servers(self) -> list[ServerMember]:
        return sorted(self._t.servers.values(), key=lambda m: m.raft)

    def server(self, raft: str) -> ServerMember | None:
        return self._t.servers.get(raft)

    # evaluations
    def eval(self, eval_id: str) -> Evaluation | None:
        return self._t.evals.get(eval_id)

    def evals(self) -> list[Evaluation]:
        return list(self._t.evals.values())

    def evals_by_job(self, namespace: str, job_id: str) -> list[Evaluation]:
        ids = self._t.evals_by_job.get((namespace, job_id), ())
        return [self._t.evals[i] for i in ids]


class StateStore:
    """The live tables. Only the FSM writes (under ``lock``); readers take snapshots."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.t = Tables()

    @contextmanager
    def reader(self) -> Iterator[StateSnapshot]:
        """A view of the live tables, valid while the lock is held: keep reads short, never await inside."""
        with self.lock:
            yield StateSnapshot(self.t)

    def snapshot(self) -> StateSnapshot:
        """A copy that stays consistent after the lock is released (for the scheduler)."""
        with self.lock:
            t = self.t
            copy = Tables(
                jobs=dict(t.jobs),
                job_versions={k: list(v) for k, v in t.job_versions.items()},
                evals=dict(t.evals),
                allocs=dict(t.allocs),
                nodes=dict(t.nodes),
                servers=dict(t.servers),
                allocs_by_job={k: set(v) for k, v in t.allocs_by_job.items()},
                allocs_by_node={k: set(v) for k, v in t.allocs_by_node.items()},
                evals_by_job={k: set(v) for k, v in t.evals_by_job.items()},
                table_index=dict(t.table_index),
                index=t.index,
            )
        return StateSnapshot(copy)

    @property
    def index(self) -> int:
        return self.t.index

    # --- writes (FSM only) ---
    def put_job(self, job: Job) -> None:
        key = (job.namespace, job.id)
        self.t.jobs[key] = job
        versions = self.t.job_versions.setdefault(key, [])
        if not versions or versions[-1].version != job.version:
            versions.append(job)
        else:
            versions[-1] = job

    def delete_job(self, namespace: str, job_id: str) -> None:
        """Purge a job and its versions. Its allocations stay until their evaluation stops them."""
        key = (namespace, job_id)
        self.t.jobs.pop(key, None)
        self.t.job_versions.pop(key, None)

    def put_eval(self, ev: Evaluation) -> None:
        self.t.evals[ev.id] = ev
        self.t.evals_by_job[(ev.namespace, ev.job_id)].add(ev.id)

    def put_alloc(self, alloc: Allocation) -> None:
        old = self.t.allocs.get(alloc.id)
        if old is not None and old.node_id != alloc.node_id:
            self.t.allocs_by_node[old.node_id].discard(alloc.id)
        self.t.allocs[alloc.id] = alloc
        self.t.allocs_by_job[(alloc.namespace, alloc.job_id)].add(alloc.id)
        self.t.allocs_by_node[alloc.node_id].add(alloc.id)

    def put_node(self, node: Node) -> None:
        self.t.nodes[node.id] = node

    def bump(self, index: int, tables: set[str]) -> None:
        self.t.index = index
        for name in tables:
            self.t.table_index[name] = index

    # --- snapshot / restore (plain values, through the codec) ---
    def dump(self) -> dict[str, Any]:
        from shoal.codec import to_plain

        with self.lock:
            t = self.t
            return {
                "index": t.index,
                "table_index": dict(t.table_index),
                "job_versions": [to_plain(j) for vs in t.job_versions.values() for j in vs],
                "jobs": [to_plain(j) for j in t.jobs.values()],
                "evals": [to_plain(e) for e in t.evals.values()],
                "allocs": [to_plain(a) for a in t.allocs.values()],
                "nodes": [to_plain(n) for n in t.nodes.values()],
                "servers": [to_plain(m) for m in t.servers.values()],
            }

    def load(self, data: dict[str, Any]) -> None:
        from shoal.codec import from_plain

        with self.lock:
            self.t = Tables()
            for raw in data.get("job_versions", ()):
                j = from_plain(Job, raw)
                self.t.job_versions.setdefault((j.namespace, j.id), []).append(j)
            for raw in data.get("jobs", ()):
                j = from_plain(Job, raw)
                self.t.jobs[(j.namespace, j.id)] = j
            for raw in data.get("evals", ()):
                self.put_eval(from_plain(Evaluation, raw))
            for raw in data.get("allocs", ()):
                self.put_alloc(from_plain(Allocation, raw))
            for raw in data.get("nodes", ()):
                self.put_node(from_plain(Node, raw))
            for raw in data.get("servers", ()):
                m = from_plain(ServerMember, raw)
                self.t.servers[m.raft] = m
            self.t.table_index = dict(data.get("table_index", {}))
            self.t.index = int(data.get("index", 0))
