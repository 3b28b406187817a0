"""RPC endpoints: thin handlers from wire maps to state reads and Raft writes.

Writes are validated here, before they are submitted (the FSM must never
fail on bad input); reads of lists and allocations are blocking queries:
``min_index`` + ``wait`` answer when the state passes the index, or time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog

from shoal import codec
from shoal.errors import InvalidRequest, JobFileError, NotFound
from shoal.ids import ALL_NAMESPACES, DEFAULT_NAMESPACE, new_id, resolve_prefix
from shoal.jobs.model import Job
from shoal.jobs.structs import (
    ALLOC_RUNNING,
    NODE_DOWN,
    AllocUpdate,
    Allocation,
    Evaluation,
    JobSummary,
    Node,
    ServerMember,
    dynamic_range_error,
)
from shoal.jobs.validate import validate_job
from shoal.raft import ops
from shoal.raft.state import StateSnapshot
from shoal.rpc.transport import RpcServer
from shoal.server.dryrun import plan_job
from shoal.server.heartbeats import node_evals
from shoal.server.catalog import CatalogEndpoints
from shoal.server.network import NetworkEndpoints
from shoal.server.lookup import find_alloc, find_eval, find_job, namespaced

if TYPE_CHECKING:
    from shoal.server.server import Server

log = structlog.get_logger("shoal.server.endpoints")

MAX_WAIT = 300.0
EVENT_BUFFER = 1024


def job_summary(snap: StateSnapshot, job: Job) -> JobSummary:
    groups: dict[str, dict[str, int]] = {g.name: {} for g in job.groups}
    for a in snap.allocs_by_job(job.namespace, job.id):
        counts = groups.setdefault(a.task_group, {})
        counts[a.client_status] = counts.get(a.client_status, 0) + 1
    return JobSummary(job_id=job.id, groups=groups)


def job_status(snap: StateSnapshot, job: Job) -> str:
    allocs = snap.allocs_by_job(job.namespace, job.id)
    if any(a.client_status == ALLOC_RUNNING for a in allocs):
        return "running"
    if job.stop or (allocs and all(a.terminal() for a in allocs)):
        return "dead"
    return "pending"


def alloc_brief(a: Allocation) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "namespace": a.namespace,
        "job_id": a.job_id,
        "job_version": a.job_version,
        "task_group": a.task_group,
        "node_id": a.node_id,
        "desired_status": a.desired_status,
        "client_status": a.client_status,
        "client_description": a.client_description,
        "create_time": a.create_time,
        "modify_time": a.modify_time,
        "modify_index": a.modify_index,
    }


class Endpoints:
    def __init__(self, server: Server):
        self.server = server
        self.store = server.fsm.store
        self.watch = server.watch

    def register(self, rpc: RpcServer) -> None:
        # Answered by the leader (forwarded there from any server).
        writes = {
            "Job.Register": self.job_register,
            "Job.Deregister": self.job_deregister,
            "Node.Register": self.node_register,
            "Node.Heartbeat": self.node_heartbeat,
            "Node.ReportDead": self.node_report_dead,
            "Alloc.Update": self.alloc_update,
            "Alloc.Stop": self.alloc_stop,
            "Node.UpdateDrain": self.node_update_drain,
            "Node.UpdateEligibility": self.node_update_eligibility,
            "Operator.RaftAddPeer": self.raft_add_peer,
            "Operator.RaftRemovePeer": self.raft_remove_peer,
        }
        # Consistent reads go to the leader too; with ``stale`` any server answers from its own state.
        reads = {
            "Job.List": self.job_list,
            "Job.Plan": self.job_plan,
            "Job.Get": self.job_get,
            "Eval.Get": self.eval_get,
            "Eval.List": self.eval_list,
            "Node.List": self.node_list,
            "Node.Get": self.node_get,
            "Node.Allocations": self.node_allocations,
            "Alloc.List": self.alloc_list,
            "Alloc.Get": self.alloc_get,
            "Server.Members": self.server_members,
        }
        for group in (NetworkEndpoints(self), CatalogEndpoints(self)):
            writes.update(group.writes())
            reads.update(group.reads())
        for name, fn in writes.items():
            rpc.unary(name, self._on_leader(name, fn, stale_ok=False))
        for name, fn in reads.items():
            rpc.unary(name, self._on_leader(name, fn, stale_ok=True))
        # Answered by whichever server is asked.
        rpc.unary("Status.Leader", self.status_leader)
        rpc.unary("Server.Info", self.server_info)
        rpc.unary("Operator.RaftPeers", self.raft_peers)
        rpc.stream("Event.Stream", self.event_stream)

    def _on_leader(self, name: str, fn: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], *, stale_ok: bool):
        async def handler(req: dict[str, Any]) -> dict[str, Any]:
            if stale_ok and req.get("stale"):
                return await fn(req)
            return await self.server.forward(name, req, fn)

        return handler

    # --- helpers ---
    async def _blocking(self, req: dict[str, Any], topics: Iterable[str], read: Callable[[StateSnapshot], dict[str, Any]]) -> dict[str, Any]:
        topics = tuple(topics)
        min_index = int(req.get("min_index") or 0)
        wait = min(float(req.get("wait") or 0.0), MAX_WAIT)
        deadline = time.monotonic() + wait
        while True:
            with self.store.reader() as s:
                index = max(s.table_index(t) for t in topics)
                remaining = deadline - time.monotonic()
                if index > min_index or remaining <= 0:
                    return {"index": index, **read(s)}
                seen = s.index
            # A change applied since this read wakes the waiter at once: none can slip by.
            await self.watch.wait(topics, remaining, seen)

    @staticmethod
    def _namespace(req: dict[str, Any]) -> str:
        """The request's namespace: lookups and lists are scoped by it; ``*`` means all of them."""
        return str(req.get("namespace") or DEFAULT_NAMESPACE)

    @staticmethod
    def _job_of(req: dict[str, Any]) -> Job:
        """The request's job, decoded and validated (it names its own namespace, never ``*``)."""
        try:
            job = codec.from_plain(Job, req.get("job") or {})
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed job: {exc}") from None
        job.name = job.name or job.id  # Nomad's canonical default
        problems = validate_job(job, filename=str(req.get("source") or "<request>"))
        if problems:
            raise JobFileError(problems)
        return job

    @staticmethod
    def _eval(job: Job, triggered_by: str, now: float, node_id: str = "") -> Evaluation:
        return Evaluation.for_job(job, new_id(), triggered_by, now, node_id=node_id)

    # --- jobs ---
    async def job_register(self, req: dict[str, Any]) -> dict[str, Any]:
        job = self._job_of(req)
        now = time.time()
        ev = self._eval(job, "job-register", now)
        payload = ops.JobRegister(job=job, eval=ev, now=now)  # built for this write alone
        index, value = await self.server.raft.submit(ops.JOB_REGISTER, payload, owned=True)
        return {"index": index, "eval_id": ev.id, **value}

    async def job_plan(self, req: dict[str, Any]) -> dict[str, Any]:
        """A dry run of ``job run``: the diff against the running version and what the scheduler would do."""
        job = self._job_of(req)
        snap = self.server.usage.state()
        result = await asyncio.to_thread(plan_job, snap, job, self.server.leader.scheduler)
        return {"index": snap.snapshot.index, **result}

    async def job_deregister(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            job = find_job(s, self._namespace(req), str(req.get("job_id") or ""))
        now = time.time()
        ev = self._eval(job, "job-deregister", now)
        payload = ops.JobDeregister(namespace=job.namespace, job_id=job.id, purge=bool(req.get("purge")), eval=ev, now=now)
        index, value = await self.server.raft.submit(ops.JOB_DEREGISTER, payload)
        return {"index": index, "eval_id": ev.id, "job_id": job.id, "namespace": job.namespace, **value}

    async def job_list(self, req: dict[str, Any]) -> dict[str, Any]:
        ns = self._namespace(req)

        def read(s: StateSnapshot) -> dict[str, Any]:
            jobs = sorted(s.jobs(None if ns == ALL_NAMESPACES else ns), key=lambda j: (j.id, j.namespace))
            return {
                "jobs": [
                    {"id": j.id, "namespace": j.namespace, "type": j.type, "priority": j.priority,
                     "version": j.version, "status": job_status(s, j), "stop": j.stop,
                     "submit_time": j.submit_time, "summary": job_summary(s, j).groups}
                    for j in jobs
                ]
            }

        return await self._blocking(req, ("Job", "Allocation"), read)

    async def job_get(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            found = find_job(s, self._namespace(req), str(req.get("job_id") or ""))
        ns, job_id = found.namespace, found.id

        def read(s: StateSnapshot) -> dict[str, Any]:
            job = s.job(ns, job_id)
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            evals = sorted(s.evals_by_job(ns, job_id), key=lambda e: e.create_index, reverse=True)
            allocs = sorted(s.allocs_by_job(ns, job_id), key=lambda a: (a.create_index, a.name), reverse=True)
            return {
                "job": codec.to_plain(job),
                "status": job_status(s, job),
                "summary": job_summary(s, job).groups,
                "allocations": [alloc_brief(a) for a in allocs],
                "evaluations": [codec.to_plain(e) for e in evals[:5]],
            }

        return await self._blocking(req, ("Job", "Allocation", "Evaluation"), read)

    async def eval_get(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            eval_id = find_eval(s, self._namespace(req), str(req.get("eval_id") or "")).id

        def read(s: StateSnapshot) -> dict[str, Any]:
            ev = s.eval(eval_id)
            if ev is None:
                raise NotFound(f"evaluation {eval_id!r} not found")
            allocs = [alloc_brief(a) for a in s.allocs_by_job(ev.namespace, ev.job_id) if a.eval_id == ev.id]
            return {"eval": codec.to_plain(ev), "allocations": allocs}

        return await self._blocking(req, ("Evaluation",), read)

    async def eval_list(self, req: dict[str, Any]) -> dict[str, Any]:
        """Evaluations of a namespace (``*``: all), newest first; optionally of one job id, or in one status."""
        ns, job_id, status = self._namespace(req), req.get("job_id"), req.get("status")

        def read(s: StateSnapshot) -> dict[str, Any]:
            evals = [e for e in namespaced(ns, s.evals())
                     if (not job_id or e.job_id == job_id) and (not status or e.status == status)]
            evals.sort(key=lambda e: e.create_index, reverse=True)
            return {"evaluations": [codec.to_plain(e) for e in evals]}

        return await self._blocking(req, ("Evaluation",), read)

    # --- nodes ---
    async def node_register(self, req: dict[str, Any]) -> dict[str, Any]:
        node = codec.from_plain(Node, req.get("node") or {})
        if not node.id or not node.name:
            raise InvalidRequest("node id and name are required")
        why = dynamic_range_error(node.min_dynamic_port, node.max_dynamic_port)
        if why is not None:
            raise InvalidRequest(f"node {node.name}: {why}")
        now = time.time()
        with self.store.reader() as s:
            old = s.node(node.id)
            # A node that is new or comes back ready may run system jobs, and may unblock evaluations.
            evals = [] if old is not None and old.status == "ready" else [
                self._eval(j, "node-register", now, node_id=node.id)
                for j in s.jobs() if j.type in ("system", "sysbatch") and not j.stop
            ]
        index, _ = await self.server.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node, evals=evals, now=now))
        ttl = self.server.heartbeat(node.id)
        return {"index": index, "heartbeat_ttl": ttl}

    async def node_heartbeat(self, req: dict[str, Any]) -> dict[str, Any]:
        node_id = str(req.get("node_id") or "")
        with self.store.reader() as s:
            node = s.node(node_id)
        if node is None:
            raise NotFound(f"node {node_id!r} is not registered")
        if node.status == NODE_DOWN:
            return {"reregister": True, "heartbeat_ttl": 0}
        return {"reregister": False, "heartbeat_ttl": self.server.heartbeat(node_id)}

    async def node_report_dead(self, req: dict[str, Any]) -> dict[str, Any]:
        """An agent's gossip declared a node dead: the leader marks it down once the node's own
        heartbeats confirm the silence (heartbeats.py)."""
        node_id = str(req.get("node_id") or "")
        reporter = str(req.get("reporter") or "")
        with self.store.reader() as s:
            if s.node(node_id) is None:
                raise NotFound(f"node {node_id!r} is not registered")
            if s.node(reporter) is None:
                raise InvalidRequest(f"reporter {reporter!r} is not a registered node")
        wait = self.server.reported_dead(node_id)
        log.info("gossip reports a node dead", node_id=node_id, reporter=reporter,
                 down_in_seconds=None if wait is None else round(wait, 3))
        return {"down_in": wait}

    async def node_update_drain(self, req: dict[str, Any]) -> dict[str, Any]:
        """Drain (or stop draining) a node: it takes no new work and its allocations migrate."""
        return await self._node_eligibility(req, drain=bool(req.get("enable")), eligible=None)

    async def node_update_eligibility(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self._node_eligibility(req, drain=None, eligible=bool(req.get("enable")))

    async def _node_eligibility(self, req: dict[str, Any], *, drain: bool | None, eligible: bool | None) -> dict[str, Any]:
        now = time.time()
        with self.store.reader() as s:
            node_id = resolve_prefix(str(req.get("node_id") or ""), [n.id for n in s.nodes()], "node")
            node = s.node(node_id)
            new_drain = node.drain if drain is None else drain
            # Draining makes a node ineligible; ending a drain makes it eligible again (as Nomad).
            new_eligible = (not new_drain) if eligible is None else eligible
            evals = node_evals(s, node_id, "node-drain", now) if new_drain and not node.drain else []
            if new_eligible and not node.eligible or (not new_drain and node.drain):
                evals += [self._eval(j, "node-update", now, node_id=node_id)
                          for j in s.jobs() if j.type in ("system", "sysbatch") and not j.stop]
        payload = ops.NodeEligibility(node_id=node_id, eligible=new_eligible, drain=new_drain, evals=evals)
        index, _ = await self.server.raft.submit(ops.NODE_ELIGIBILITY, payload)
        return {"index": index, "node_id": node_id, "drain": new_drain, "eligible": new_eligible,
                "eval_ids": [e.id for e in evals]}

    async def node_list(self, req: dict[str, Any]) -> dict[str, Any]:
        def read(s: StateSnapshot) -> dict[str, Any]:
            out = []
            for n in sorted(s.nodes(), key=lambda n: n.name):
                live = [a for a in s.allocs_by_node(n.id) if not a.terminal()]
                out.append({**codec.to_plain(n), "running_allocs": len(live)})
            return {"nodes": out}

        return await self._blocking(req, ("Node",), read)

    async def node_get(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            node_id = resolve_prefix(str(req.get("node_id") or ""), [n.id for n in s.nodes()], "node")
            node = s.node(node_id)
            allocs = [alloc_brief(a) for a in s.allocs_by_node(node_id)]
            leases = [codec.to_plain(le) for le in s.leases() if le.node_id == node_id]
            return {"index": s.table_index("Node"), "node": codec.to_plain(node), "allocations": allocs,
                    "leases": leases}

    async def node_allocations(self, req: dict[str, Any]) -> dict[str, Any]:
        """The agent's watch: its allocations and the job versions they run."""
        node_id = str(req.get("node_id") or "")

        def read(s: StateSnapshot) -> dict[str, Any]:
            allocs = s.allocs_by_node(node_id)
            jobs: dict[str, Any] = {}
            for a in allocs:
                key = f"{a.namespace}/{a.job_id}@{a.job_version}"
                if key not in jobs:
                    job = s.job_version(a.namespace, a.job_id, a.job_version)
                    jobs[key] = codec.to_plain(job) if job else None
            return {"allocations": [codec.to_plain(a) for a in allocs], "jobs": jobs}

        return await self._blocking(req, ("Allocation",), read)

    # --- allocations ---
    async def alloc_list(self, req: dict[str, Any]) -> dict[str, Any]:
        job_id = req.get("job_id")
        ns = self._namespace(req)

        def read(s: StateSnapshot) -> dict[str, Any]:
            if job_id and ns != ALL_NAMESPACES:
                allocs = s.allocs_by_job(ns, job_id)
            else:
                allocs = [a for a in namespaced(ns, s.allocs()) if not job_id or a.job_id == job_id]
            return {"allocations": [alloc_brief(a) for a in sorted(allocs, key=lambda a: a.create_index)]}

        return await self._blocking(req, ("Allocation",), read)

    async def alloc_get(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            a = find_alloc(s, self._namespace(req), str(req.get("alloc_id") or ""))
            node = s.node(a.node_id)
            return {
                "index": s.table_index("Allocation"),
                "allocation": codec.to_plain(a),
                "node": {"id": node.id, "name": node.name, "address": node.address} if node else None,
            }

    async def alloc_update(self, req: dict[str, Any]) -> dict[str, Any]:
        node_id = str(req.get("node_id") or "")
        updates = [codec.from_plain(AllocUpdate, u) for u in req.get("updates") or ()]
        if not updates:
            return {"index": self.store.index}
        now = time.time()
        evals: dict[tuple[str, str], Evaluation] = {}
        with self.store.reader() as s:
            for u in updates:
                a = s.alloc(u.id)
                if a is None or a.client_status == u.client_status:
                    continue
                # A failure may be rescheduled; a stop frees capacity a blocked evaluation may want.
                if u.client_status == "failed" and a.desired_status == "run":
                    job = s.job(a.namespace, a.job_id)
                    if job is not None and not job.stop and (a.namespace, a.job_id) not in evals:
                        evals[(a.namespace, a.job_id)] = self._eval(job, "alloc-failure", now)
        payload = ops.AllocClientUpdate(node_id=node_id, updates=updates, evals=list(evals.values()), now=now)
        index, value = await self.server.raft.submit(ops.ALLOC_CLIENT_UPDATE, payload, owned=True)
        return {"index": index, **value}

    async def alloc_stop(self, req: dict[str, Any]) -> dict[str, Any]:
        """``shoal alloc stop``: the allocation is told to stop and an evaluation places its replacement."""
        with self.store.reader() as s:
            a = find_alloc(s, self._namespace(req), str(req.get("alloc_id") or ""))
            job = s.job(a.namespace, a.job_id)
        if a.desired_status != "run":
            raise InvalidRequest(f"allocation {a.id} is already told to {a.desired_status}")
        now = time.time()
        evals = [self._eval(job, "alloc-stop", now)] if job is not None and not job.stop else []
        stop = ops.AllocStop(id=a.id, desired_status="stop", desired_description="alloc was stopped by a user")
        payload = ops.PlanApply(namespace=a.namespace, job_id=a.job_id, stops=[stop], evals=evals, now=now)
        index, _ = await self.server.raft.submit(ops.PLAN_APPLY, payload)
        return {"index": index, "alloc_id": a.id, "namespace": a.namespace, "eval_id": evals[0].id if evals else ""}

    # --- servers, Raft membership ---
    async def status_leader(self, req: dict[str, Any]) -> dict[str, Any]:
        leader = self.server.raft.leader
        return {"leader": leader, "leader_api": self.server.api_of(leader), "is_leader": self.server.raft.is_leader}

    async def server_info(self, req: dict[str, Any]) -> dict[str, Any]:
        raft = self.server.raft
        return {
            "name": self.server.name,
            "api": self.server.cfg.rpc_bind,
            "raft": self.server.cfg.raft_bind,
            "leader": raft.leader,
            "is_leader": raft.is_leader,
            "peers": [p["address"] for p in raft.peers()],
            "index": self.store.index,
            "raft_status": raft.status(),
        }

    async def server_members(self, req: dict[str, Any]) -> dict[str, Any]:
        raft = self.server.raft
        leader = raft.leader
        connected = {p["address"]: p["connected"] for p in raft.peers()}
        with self.store.reader() as s:
            members = [
                {"name": m.name, "api": m.api, "raft": m.raft, "leader": m.raft == leader,
                 "voter": m.raft in connected, "status": "alive" if connected.get(m.raft) else "unreachable"}
                for m in s.servers()
            ]
            return {"index": s.table_index("Server"), "members": members}

    async def raft_peers(self, req: dict[str, Any]) -> dict[str, Any]:
        raft = self.server.raft
        with self.store.reader() as s:
            names = {m.raft: m for m in s.servers()}
        peers = []
        for p in raft.peers():
            m = names.get(p["address"])
            peers.append({**p, "name": m.name if m else "", "api": m.api if m else ""})
        return {"peers": peers, "leader": raft.leader}

    async def raft_add_peer(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = str(req.get("raft") or "")
        if ":" not in addr:
            raise InvalidRequest("raft address host:port is required")
        raft = self.server.raft
        if addr not in {p["address"] for p in raft.peers()}:
            await raft.add_peer(addr)
        member = ServerMember(raft=addr, api=str(req.get("api") or ""), name=str(req.get("name") or ""))
        if member.api:
            await raft.submit(ops.SERVER_UPSERT, ops.ServerUpsert(member=member))
        return {"index": self.store.index, "peers": [p["address"] for p in raft.peers()]}

    async def raft_remove_peer(self, req: dict[str, Any]) -> dict[str, Any]:
        addr = str(req.get("raft") or "")
        raft = self.server.raft
        peers = {p["address"] for p in raft.peers()}
        if addr not in peers:
            with self.store.reader() as s:  # accept a server's name or API address too
                match = [m.raft for m in s.servers() if addr in (m.name, m.api)]
            if len(match) != 1 or match[0] not in peers:
                raise NotFound(f"{addr!r} is not a Raft peer (peers: {', '.join(sorted(peers))})")
            addr = match[0]
        if addr == self.server.cfg.raft_bind:
            raise InvalidRequest("the leader cannot remove itself; remove it from another server after it steps down")
        await raft.remove_peer(addr)
        index, _ = await raft.submit(ops.SERVER_REMOVE, ops.ServerRemove(raft=addr))
        return {"index": index, "peers": [p["address"] for p in raft.peers() if p["address"] != addr]}

    # --- the event stream ---
    async def event_stream(self, req: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Committed changes as they are applied on this server, filtered by topic."""
        topics = {t.lower() for t in req.get("topics") or ()}
        queue: asyncio.Queue[list] = asyncio.Queue(maxsize=EVENT_BUFFER)

        def deliver(changes: list) -> None:
            picked = [c for c in changes if not topics or c.topic.lower() in topics]
            if picked:
                try:
                    queue.put_nowait(picked)
                except asyncio.QueueFull:  # the reader is told it fell behind
                    overflow.append(True)

        overflow: list[bool] = []
        unsubscribe = self.watch.subscribe(deliver)
        try:
            yield {"index": self.store.index, "events": []}
            while True:
                batch = await queue.get()
                if overflow:
                    raise InvalidRequest("event stream consumer fell behind; reconnect")
                yield {
                    "index": batch[-1].index,
                    "events": [
                        {"index": c.index, "topic": c.topic, "type": c.type, "key": c.key,
                         "payload": codec.to_plain(c.obj) if c.obj is not None else None}
                        for c in batch
                    ],
                }
        finally:
            unsubscribe()
