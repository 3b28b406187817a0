"""The state tables the FSM writes and everyone else reads.

Tables are persistent maps (HAMTs, ``immutables.Map``): a write makes a new
version of a table in O(log n) and leaves older versions intact, so a
snapshot is O(1) — it keeps references to the current versions (go-memdb gives
Nomad the same). Writes happen on the Raft thread under ``lock``; records are
never mutated in place, only replaced.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from immutables import Map

from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation, Node, ServerMember, ServiceRegistration, SubnetLease

JobKey = tuple[str, str]  # (namespace, job id)

EMPTY: Map = Map()


@dataclass(slots=True)
class Tables:
    jobs: Map = EMPTY  # JobKey -> Job
    job_versions: Map = EMPTY  # JobKey -> tuple[Job, ...]
    evals: Map = EMPTY  # id -> Evaluation
    allocs: Map = EMPTY  # id -> Allocation
    nodes: Map = EMPTY  # id -> Node
    servers: Map = EMPTY  # Raft address -> ServerMember
    leases: Map = EMPTY  # (network, node id) -> SubnetLease
    services: Map = EMPTY  # registration id -> ServiceRegistration
    # secondary indexes: key -> Map of ids (used as a persistent set)
    allocs_by_job: Map = EMPTY
    allocs_by_node: Map = EMPTY
    evals_by_job: Map = EMPTY
    services_by_alloc: Map = EMPTY
    # last modify index per table, and overall
    table_index: Map = EMPTY
    index: int = 0


def _add(index: Map, key: Any, member: str) -> Map:
    return index.set(key, index.get(key, EMPTY).set(member, None))


def _discard(index: Map, key: Any, member: str) -> Map:
    ids = index.get(key)
    if ids is None or member not in ids:
        return index
    ids = ids.delete(member)
    return index.set(key, ids) if ids else index.delete(key)


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
        allocs = self._t.allocs
        return [allocs[i] for i in self._t.allocs_by_job.get((namespace, job_id), EMPTY)]

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        allocs = self._t.allocs
        return [allocs[i] for i in self._t.allocs_by_node.get(node_id, EMPTY)]

    # overlay subnet leases
    def leases(self, network: str | None = None) -> list[SubnetLease]:
        return sorted((le for (net, _), le in self._t.leases.items() if network is None or net == network),
                      key=lambda le: (le.network, le.subnet))

    def lease(self, network: str, node_id: str) -> SubnetLease | None:
        return self._t.leases.get((network, node_id))

    # the service catalog
    def services(self, namespace: str | None = None, name: str | None = None) -> list[ServiceRegistration]:
        """Registrations (of ``namespace`` and service ``name`` where given), in a stable order."""
        regs = [r for r in self._t.services.values()
                if (namespace is None or r.namespace == namespace) and (name is None or r.service_name == name)]
        return sorted(regs, key=lambda r: (r.namespace, r.service_name, r.id))

    def services_by_alloc(self, alloc_id: str) -> list[ServiceRegistration]:
        services = self._t.services
        return sorted((services[i] for i in self._t.services_by_alloc.get(alloc_id, EMPTY)), key=lambda r: r.id)

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
        evals = self._t.evals
        return [evals[i] for i in self._t.evals_by_job.get((namespace, job_id), EMPTY)]


class StateStore:
    """The live tables. Only the FSM writes (under ``lock``); readers take snapshots."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.t = Tables()

    @contextmanager
    def reader(self) -> Iterator[StateSnapshot]:
        """A view of the current tables (as cheap as a snapshot; kept for call sites that read briefly)."""
        yield self.snapshot()

    def snapshot(self) -> StateSnapshot:
        """A consistent point-in-time view, O(1): the tables are persistent maps."""
        with self.lock:
            return StateSnapshot(dataclasses.replace(self.t))

    @property
    def index(self) -> int:
        return self.t.index

    # --- reads the FSM uses while applying ---
    def job(self, key: JobKey) -> Job | None:
        return self.t.jobs.get(key)

    def get_eval(self, eval_id: str) -> Evaluation | None:
        return self.t.evals.get(eval_id)

    def get_alloc(self, alloc_id: str) -> Allocation | None:
        return self.t.allocs.get(alloc_id)

    def get_node(self, node_id: str) -> Node | None:
        return self.t.nodes.get(node_id)

    def get_server(self, raft: str) -> ServerMember | None:
        return self.t.servers.get(raft)

    def get_lease(self, network: str, node_id: str) -> SubnetLease | None:
        return self.t.leases.get((network, node_id))

    def get_service(self, reg_id: str) -> ServiceRegistration | None:
        return self.t.services.get(reg_id)

    def service_ids_of_alloc(self, alloc_id: str) -> list[str]:
        return list(self.t.services_by_alloc.get(alloc_id, EMPTY))

    def alloc_ids_of_node(self, node_id: str) -> list[str]:
        return list(self.t.allocs_by_node.get(node_id, EMPTY))

    def subnets_leased(self) -> list[str]:
        return [le.subnet for le in self.t.leases.values()]

    # --- writes (FSM only) ---
    def put_job(self, job: Job) -> None:
        t = self.t
        key = (job.namespace, job.id)
        t.jobs = t.jobs.set(key, job)
        versions = t.job_versions.get(key, ())
        if versions and versions[-1].version == job.version:
            versions = versions[:-1]
        t.job_versions = t.job_versions.set(key, (*versions, job))

    def delete_job(self, namespace: str, job_id: str) -> None:
        """Purge a job and its versions. Its allocations stay until their evaluation stops them."""
        key = (namespace, job_id)
        t = self.t
        if key in t.jobs:
            t.jobs = t.jobs.delete(key)
        if key in t.job_versions:
            t.job_versions = t.job_versions.delete(key)

    def put_eval(self, ev: Evaluation) -> None:
        t = self.t
        t.evals = t.evals.set(ev.id, ev)
        t.evals_by_job = _add(t.evals_by_job, (ev.namespace, ev.job_id), ev.id)

    def put_alloc(self, alloc: Allocation) -> None:
        t = self.t
        old = t.allocs.get(alloc.id)
        if old is not None and old.node_id != alloc.node_id:
            t.allocs_by_node = _discard(t.allocs_by_node, old.node_id, alloc.id)
        t.allocs = t.allocs.set(alloc.id, alloc)
        if old is None:
            t.allocs_by_job = _add(t.allocs_by_job, (alloc.namespace, alloc.job_id), alloc.id)
        if old is None or old.node_id != alloc.node_id:
            t.allocs_by_node = _add(t.allocs_by_node, alloc.node_id, alloc.id)

    def put_node(self, node: Node) -> None:
        self.t.nodes = self.t.nodes.set(node.id, node)

    def delete_node(self, node_id: str) -> None:
        """Forget a node and its leases (its allocations stay until their evaluations replace them)."""
        t = self.t
        if node_id in t.nodes:
            t.nodes = t.nodes.delete(node_id)
        for key in [k for k in t.leases.keys() if k[1] == node_id]:
            t.leases = t.leases.delete(key)

    def put_lease(self, lease: SubnetLease) -> None:
        self.t.leases = self.t.leases.set((lease.network, lease.node_id), lease)

    def put_service(self, reg: ServiceRegistration) -> None:
        t = self.t
        t.services = t.services.set(reg.id, reg)
        t.services_by_alloc = _add(t.services_by_alloc, reg.alloc_id, reg.id)

    def delete_service(self, reg_id: str) -> None:
        t = self.t
        reg = t.services.get(reg_id)
        if reg is not None:
            t.services = t.services.delete(reg_id)
            t.services_by_alloc = _discard(t.services_by_alloc, reg.alloc_id, reg_id)

    def put_server(self, member: ServerMember) -> None:
        self.t.servers = self.t.servers.set(member.raft, member)

    def delete_server(self, raft: str) -> None:
        if raft in self.t.servers:
            self.t.servers = self.t.servers.delete(raft)

    def bump(self, index: int, tables: set[str]) -> None:
        t = self.t
        t.index = index
        with t.table_index.mutate() as m:
            for name in tables:
                m[name] = index
            t.table_index = m.finish()

    # --- snapshot / restore (plain values, through the codec) ---
    TABLE_TYPES = (("job_versions", Job), ("jobs", Job), ("evals", Evaluation), ("allocs", Allocation),
                   ("nodes", Node), ("servers", ServerMember), ("leases", SubnetLease),
                   ("services", ServiceRegistration))

    def dump_records(self, snap: StateSnapshot | None = None) -> Iterator[tuple[str, Any]]:
        """The state of ``snap`` (default: now) as a stream of small records: ("meta", {...}), then
        one (table, plain record) per row. Small pieces let a snapshot thread share the GIL."""
        from shoal.codec import to_plain

        t = (snap or self.snapshot())._t
        yield "meta", {"index": t.index, "table_index": dict(t.table_index)}
        for vs in t.job_versions.values():
            for j in vs:
                yield "job_versions", to_plain(j)
        for name, table in (("jobs", t.jobs), ("evals", t.evals), ("allocs", t.allocs), ("nodes", t.nodes),
                            ("servers", t.servers), ("leases", t.leases), ("services", t.services)):
            for rec in table.values():
                yield name, to_plain(rec)

    def load_records(self, records: Iterable[tuple[str, Any]]) -> None:
        from shoal.codec import from_plain

        types = dict(self.TABLE_TYPES)
        with self.lock:
            self.t = Tables()
            versions: dict[JobKey, list[Job]] = {}
            jobs: dict[JobKey, Job] = {}
            meta: dict[str, Any] = {}
            for kind, raw in records:
                if kind == "meta":
                    meta = raw
                    continue
                rec = from_plain(types[kind], raw)
                if kind == "job_versions":
                    versions.setdefault((rec.namespace, rec.id), []).append(rec)
                elif kind == "jobs":
                    jobs[(rec.namespace, rec.id)] = rec
                elif kind == "evals":
                    self.put_eval(rec)
                elif kind == "allocs":
                    self.put_alloc(rec)
                elif kind == "nodes":
                    self.put_node(rec)
                elif kind == "servers":
                    self.put_server(rec)
                elif kind == "leases":
                    self.put_lease(rec)
                elif kind == "services":
                    self.put_service(rec)
            self.t.job_versions = Map({k: tuple(v) for k, v in versions.items()})
            self.t.jobs = Map(jobs)
            self.t.table_index = Map(meta.get("table_index", {}))
            self.t.index = int(meta.get("index", 0))

    def dump(self, snap: StateSnapshot | None = None) -> dict[str, Any]:
        """The whole state as one plain dict (tests and tools; snapshots stream ``dump_records``)."""
        out: dict[str, Any] = {name: [] for name, _ in self.TABLE_TYPES}
        for kind, rec in self.dump_records(snap):
            if kind == "meta":
                out.update(rec)
            else:
                out[kind].append(rec)
        return out

    def load(self, data: dict[str, Any]) -> None:
        meta = {"index": data.get("index", 0), "table_index": data.get("table_index", {})}
        records = [("meta", meta)] + [(name, r) for name, _ in self.TABLE_TYPES for r in data.get(name, ())]
        self.load_records(records)
