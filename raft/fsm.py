"""The finite-state machine: ``apply(op, payload, index) -> result``.

Pure and deterministic: everything random or time-dependent (ids, timestamps)
arrives in the payload, chosen by the submitter. It never raises: PySyncObj
would re-apply an entry whose method raised. Errors come back as values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import structlog

from shoal import codec
from shoal.jobs.model import Job
from shoal.jobs.network import IpamError, OverlayConfig, lease_subnet
from shoal.jobs.structs import ALLOC_PENDING, NODE_READY, Allocation, Evaluation, SubnetLease
from shoal.raft import catalog, ops
from shoal.raft.change import Change
from shoal.raft.state import StateSnapshot, StateStore

log = structlog.get_logger("shoal.raft.fsm")

# Job fields the servers own; a resubmitted job whose other fields are equal is not a new version.
# At most this many owned payloads are kept (a batch of writes in flight is a few hundred).
MAX_OWNED = 4096
SERVER_JOB_FIELDS = frozenset(
    {"version", "status", "stop", "submit_time", "create_index", "modify_index", "job_modify_index"}
)


@dataclass(slots=True)
class ApplyResult:
    index: int
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    changes: list[Change] = field(default_factory=list)


def job_spec(job: Job) -> dict[str, Any]:
    plain = codec.to_plain(job)
    for k in SERVER_JOB_FIELDS:
        plain.pop(k, None)
    return plain


class Indexer(Protocol):
    def changed(self, changes: list[Change]) -> None: ...

    def rebuild(self, snapshot: StateSnapshot) -> None: ...


class FSM:
    def __init__(self, store: StateStore | None = None):
        self.store = store or StateStore()
        self.listeners: list[Callable[[ApplyResult], None]] = []
        # Derived views of the state (the scheduler's usage index): told of every change while the
        # store's lock is still held, so a reader taking the lock sees them at the same index as
        # a snapshot; rebuilt from the store when a snapshot file replaces it.
        self.indexers: list[Indexer] = []
        # Payloads this server submitted as owned (see RaftNode.submit), by their encoding: applied as
        # they are, without decoding the entry. Filled on the event loop, taken on the Raft thread.
        self._owned: dict[bytes, Any] = {}
        self._handlers: dict[str, Callable[[Any, int], ApplyResult]] = {
            ops.JOB_REGISTER: self._job_register,
            ops.JOB_DEREGISTER: self._job_deregister,
            ops.NODE_REGISTER: self._node_register,
            ops.NODE_STATUS: self._node_status,
            ops.NODE_ELIGIBILITY: self._node_eligibility,
            ops.EVAL_UPSERT: self._eval_upsert,
            ops.PLAN_APPLY: self._plan_apply,
            ops.ALLOC_CLIENT_UPDATE: self._alloc_client_update,
            ops.SERVER_UPSERT: self._server_upsert,
            ops.SERVER_REMOVE: self._server_remove,
            ops.NETWORK_LEASE: self._network_lease,
            ops.NODE_PURGE: self._node_purge,
            ops.SERVICE_SYNC: self._service_sync,
        }

    # --- entry point ---
    def apply(self, op: str, payload: bytes) -> ApplyResult:
        """Apply one command (or a ``batch`` of them); listeners hear of it once."""
        with self.store.lock:
            if op == ops.BATCH:
                results = [self._apply_one(sub_op, sub_payload) for sub_op, sub_payload in _batch_items(payload)]
                result = ApplyResult(
                    self.store.index,
                    {"results": [(r.index, r.value, r.error) for r in results]},
                    changes=[c for r in results for c in r.changes],
                )
            else:
                result = self._apply_one(op, payload)
            for indexer in self.indexers:
                try:
                    indexer.changed(result.changes)
                except Exception as exc:
                    log.error("fsm indexer failed; rebuilding it", error=repr(exc))
                    indexer.rebuild(self.store.snapshot())
        for listener in self.listeners:
            try:
                listener(result)
            except Exception as exc:
                log.error("fsm listener failed", error=repr(exc))
        return result

    def restore(self, records: Iterable[tuple[str, Any]]) -> None:
        """Replace the whole state with a snapshot file's records; derived views are rebuilt."""
        with self.store.lock:
            self.store.load_records(records)
            snap = self.store.snapshot()
            for indexer in self.indexers:
                indexer.rebuild(snap)

    def add_indexer(self, indexer: Indexer) -> None:
        with self.store.lock:
            indexer.rebuild(self.store.snapshot())
            self.indexers.append(indexer)

    def own(self, data: bytes, payload: Any) -> None:
        """``payload`` is what ``data`` decodes to, and nobody else holds it: apply it as it is."""
        owned = self._owned
        owned[data] = payload
        while len(owned) > MAX_OWNED:  # writes that never committed: forget the oldest
            try:
                del owned[next(iter(owned))]
            except (KeyError, RuntimeError, StopIteration):  # the Raft thread took it meanwhile
                pass

    def disown(self, data: bytes) -> None:
        self._owned.pop(data, None)

    def _apply_one(self, op: str, payload: bytes) -> ApplyResult:
        index = self.store.index + 1
        try:
            if op == ops.NOOP:
                result = ApplyResult(index)
            else:
                handler = self._handlers.get(op)
                if handler is None:
                    result = ApplyResult(index, error=f"unknown operation {op!r}")
                else:
                    obj = self._owned.pop(payload, None) if self._owned else None
                    result = handler(codec.decode(payload, ops.PAYLOADS[op]) if obj is None else obj, index)
            self.store.bump(index, {c.topic for c in result.changes} | {"_all"})
        except Exception as exc:  # never raise into PySyncObj
            log.error("fsm apply failed", op=op, index=index, error=repr(exc))
            self.store.bump(index, {"_all"})
            result = ApplyResult(index, error=f"internal error applying {op}: {exc}")
        return result

    # --- handlers ---
    def _put_evals(self, evals: list[Evaluation], index: int, changes: list[Change]) -> None:
        s = self.store
        for ev in evals:
            old = s.get_eval(ev.id)
            ev.create_index = old.create_index if old else index
            ev.modify_index = index
            s.put_eval(ev)
            changes.append(Change(index, "Evaluation", "EvaluationUpdated", ev.id, ev))

    def _update_alloc(self, old: Allocation, index: int, now: float, changes: list[Change], **fields: Any) -> None:
        """Store ``old`` with ``fields`` changed, as modified at ``index``."""
        alloc = dataclasses.replace(old, modify_index=index, alloc_modify_index=index, modify_time=now, **fields)
        self.store.put_alloc(alloc)
        changes.append(Change(index, "Allocation", "AllocationUpdated", alloc.id, alloc))
        catalog.drop_if_done(self.store, alloc, index, changes)

    def _job_register(self, p: ops.JobRegister, index: int) -> ApplyResult:
        s = self.store
        job = p.job
        old = s.job((job.namespace, job.id))
        if old is None:
            job.version, job.create_index, job.job_modify_index = 0, index, index
        else:
            job.create_index = old.create_index
            if old.stop or job_spec(old) != job_spec(job):
                job.version, job.job_modify_index = old.version + 1, index
            else:
                job.version, job.job_modify_index = old.version, old.job_modify_index
        job.modify_index, job.stop, job.submit_time = index, False, p.now
        job.status = "pending" if old is None else old.status
        s.put_job(job)
        changes = [Change(index, "Job", "JobRegistered", job.id, job)]
        value: dict[str, Any] = {"job_modify_index": job.job_modify_index, "version": job.version}
        if p.eval is not None:
            p.eval.job_modify_index = job.job_modify_index
            self._put_evals([p.eval], index, changes)
            value["eval_id"] = p.eval.id
        return ApplyResult(index, value, changes=changes)

    def _job_deregister(self, p: ops.JobDeregister, index: int) -> ApplyResult:
        s = self.store
        old = s.job((p.namespace, p.job_id))
        if old is None:
            return ApplyResult(index, error=f"job {p.job_id!r} not found")
        changes: list[Change] = []
        if p.purge:
            s.delete_job(p.namespace, p.job_id)
            changes.append(Change(index, "Job", "JobDeregistered", p.job_id, None))
        else:
            job = dataclasses.replace(old, stop=True, modify_index=index, job_modify_index=index)
            s.put_job(job)
            changes.append(Change(index, "Job", "JobDeregistered", p.job_id, job))
        value: dict[str, Any] = {}
        if p.eval is not None:
            p.eval.job_modify_index = index
            self._put_evals([p.eval], index, changes)
            value["eval_id"] = p.eval.id
        return ApplyResult(index, value, changes=changes)

    def _node_register(self, p: ops.NodeRegister, index: int) -> ApplyResult:
        s = self.store
        node = p.node
        old = s.get_node(node.id)
        node.create_index = old.create_index if old else index
        node.modify_index = index
        if old is not None:  # operator decisions survive a re-registration
            node.eligible, node.drain = old.eligible, old.drain
        node.status = NODE_READY
        node.last_heartbeat = p.now
        s.put_node(node)
        changes = [Change(index, "Node", "NodeRegistration", node.id, node)]
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, {"node_modify_index": index}, changes=changes)

    def _node_status(self, p: ops.NodeStatus, index: int) -> ApplyResult:
        s = self.store
        old = s.get_node(p.node_id)
        if old is None:
            return ApplyResult(index, error=f"node {p.node_id!r} not found")
        node = dataclasses.replace(old, status=p.status, modify_index=index, last_heartbeat=p.now or old.last_heartbeat)
        s.put_node(node)
        changes = [Change(index, "Node", "NodeStatusUpdated", node.id, node)]
        if node.status != NODE_READY:  # down or initializing: none of its allocations is reachable
            catalog.drop_node(s, node.id, index, changes)
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, changes=changes)

    def _node_eligibility(self, p: ops.NodeEligibility, index: int) -> ApplyResult:
        s = self.store
        old = s.get_node(p.node_id)
        if old is None:
            return ApplyResult(index, error=f"node {p.node_id!r} not found")
        node = dataclasses.replace(old, eligible=p.eligible, drain=p.drain, modify_index=index)
        s.put_node(node)
        changes = [Change(index, "Node", "NodeEligibilityUpdated", node.id, node)]
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, changes=changes)

    def _eval_upsert(self, p: ops.EvalUpsert, index: int) -> ApplyResult:
        changes: list[Change] = []
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, changes=changes)

    def _plan_apply(self, p: ops.PlanApply, index: int) -> ApplyResult:
        s = self.store
        changes: list[Change] = []
        for stop in p.stops:
            old = s.get_alloc(stop.id)
            if old is None:
                continue
            self._update_alloc(
                old, index, p.now, changes,
                desired_status=stop.desired_status,
                desired_description=stop.desired_description,
                client_status=stop.client_status or old.client_status,
                preempted_by_allocation=stop.preempted_by_allocation or old.preempted_by_allocation,
            )
        for up in p.inplace:
            old = s.get_alloc(up.id)
            if old is None:
                continue
            self._update_alloc(
                old, index, p.now, changes,
                job_version=up.job_version,
                eval_id=up.eval_id or old.eval_id,
                followup_eval_id=up.followup_eval_id,
            )
        for alloc in p.allocs:
            alloc.create_index = alloc.modify_index = alloc.alloc_modify_index = index
            alloc.client_status = ALLOC_PENDING
            alloc.create_time = alloc.modify_time = p.now
            s.put_alloc(alloc)
            changes.append(Change(index, "Allocation", "AllocationUpdated", alloc.id, alloc))
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, {"placed": len(p.allocs), "stopped": len(p.stops)}, changes=changes)

    def _alloc_client_update(self, p: ops.AllocClientUpdate, index: int) -> ApplyResult:
        s = self.store
        changes: list[Change] = []
        ignored = 0
        for up in p.updates:
            old = s.get_alloc(up.id)
            if old is None or old.node_id != p.node_id:
                ignored += 1
                continue
            alloc = dataclasses.replace(
                old,
                client_status=up.client_status,
                client_description=up.client_description,
                task_states=up.task_states,
                healthy=up.healthy,
                checks=up.checks,
                network_status=up.network_status or old.network_status,
                modify_index=index,
                modify_time=p.now,
            )
            s.put_alloc(alloc)
            changes.append(Change(index, "Allocation", "AllocationUpdated", alloc.id, alloc))
            catalog.drop_if_done(s, alloc, index, changes)
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, {"updated": len(p.updates) - ignored, "ignored": ignored}, changes=changes)

    def _node_purge(self, p: ops.NodePurge, index: int) -> ApplyResult:
        s = self.store
        if s.get_node(p.node_id) is None:
            return ApplyResult(index, error=f"node {p.node_id!r} not found")
        leases = [le for le in s.t.leases.values() if le.node_id == p.node_id]
        changes: list[Change] = []
        catalog.drop_node(s, p.node_id, index, changes)
        s.delete_node(p.node_id)
        changes.append(Change(index, "Node", "NodeDeregistered", p.node_id, None))
        changes += [Change(index, "Network", "LeaseReleased", f"{le.network}/{le.node_id}", None) for le in leases]
        self._put_evals(p.evals, index, changes)
        return ApplyResult(index, {"released": [le.subnet for le in leases]}, changes=changes)

    def _network_lease(self, p: ops.NetworkLease, index: int) -> ApplyResult:
        s = self.store
        if s.get_node(p.node_id) is None:
            return ApplyResult(index, error=f"node {p.node_id!r} is not registered")
        old = s.get_lease(p.network, p.node_id)
        if old is not None and old.underlay == p.underlay:
            return ApplyResult(index, {"subnet": old.subnet, "created": False})
        if old is not None:
            lease = dataclasses.replace(old, underlay=p.underlay, modify_index=index)
        else:
            try:
                subnet = lease_subnet(OverlayConfig(p.cidr, p.subnet_prefix), s.subnets_leased())
            except IpamError as exc:
                return ApplyResult(index, error=str(exc))
            if subnet is None:
                return ApplyResult(index, error=f"overlay {p.cidr} has no free /{p.subnet_prefix} subnet left")
            lease = SubnetLease(network=p.network, node_id=p.node_id, subnet=subnet, underlay=p.underlay,
                                create_index=index, modify_index=index)
        s.put_lease(lease)
        change = Change(index, "Network", "LeaseUpdated", f"{lease.network}/{lease.node_id}", lease)
        return ApplyResult(index, {"subnet": lease.subnet, "created": old is None}, changes=[change])

    def _service_sync(self, p: ops.ServiceSync, index: int) -> ApplyResult:
        changes: list[Change] = []
        value = catalog.sync(self.store, p, index, changes)
        return ApplyResult(index, dict(value), changes=changes)

    def _server_upsert(self, p: ops.ServerUpsert, index: int) -> ApplyResult:
        m = p.member
        old = self.store.get_server(m.raft)
        m.create_index = old.create_index if old else index
        m.modify_index = index
        self.store.put_server(m)
        return ApplyResult(index, changes=[Change(index, "Server", "ServerJoined", m.raft, m)])

    def _server_remove(self, p: ops.ServerRemove, index: int) -> ApplyResult:
        self.store.delete_server(p.raft)
        return ApplyResult(index, changes=[Change(index, "Server", "ServerLeft", p.raft, None)])


def encode_batch(items: list[tuple[str, bytes]]) -> bytes:
    return msgpack.packb([[op, payload] for op, payload in items], use_bin_type=True)


def _batch_items(payload: bytes) -> list[tuple[str, bytes]]:
    try:
        return [(str(op), bytes(p)) for op, p in msgpack.unpackb(payload, raw=False)]
    except Exception as exc:
        log.error("malformed batch", error=repr(exc))
        return []
