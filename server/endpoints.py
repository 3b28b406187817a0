"""RPC endpoints: thin handlers from wire maps to state reads and Raft writes.

Writes are validated here, before they are submitted (the FSM must never
fail on bad input); reads of lists and allocations are blocking queries:
``min_index`` + ``wait`` answer when the state passes the index, or time out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from shoal import codec
from shoal.errors import InvalidRequest, JobFileError, NotFound
from shoal.ids import new_id, resolve_prefix
from shoal.jobs.model import Job
from shoal.jobs.structs import (
    ALLOC_RUNNING,
    EVAL_PENDING,
    NODE_DOWN,
    AllocUpdate,
    Allocation,
    Evaluation,
    JobSummary,
    Node,
)
from shoal.jobs.validate import validate_job
from shoal.raft import ops
from shoal.raft.state import StateSnapshot
from shoal.rpc.transport import RpcServer

if TYPE_CHECKING:
    from shoal.server.server import Server

MAX_WAIT = 300.0


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
        for name, fn in {
            "Job.Register": self.job_register,
            "Job.Deregister": self.job_deregister,
            "Job.List": self.job_list,
            "Job.Get": self.job_get,
            "Eval.Get": self.eval_get,
            "Node.Register": self.node_register,
            "Node.Heartbeat": self.node_heartbeat,
            "Node.List": self.node_list,
            "Node.Get": self.node_get,
            "Node.Allocations": self.node_allocations,
            "Alloc.List": self.alloc_list,
            "Alloc.Get": self.alloc_get,
            "Alloc.Update": self.alloc_update,
            "Status.Leader": self.status_leader,
        }.items():
            rpc.unary(name, fn)

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
            # No await between the read and registering the waiter: no change can slip by.
            await self.watch.wait(topics, remaining)

    @staticmethod
    def _namespace(req: dict[str, Any]) -> str:
        return str(req.get("namespace") or "default")

    def _find_job(self, s: StateSnapshot, ns: str, job_id: str) -> Job:
        job = s.job(ns, job_id)
        if job is not None:
            return job
        ids = [j.id for j in s.jobs(ns)]
        return s.job(ns, resolve_prefix(job_id, ids, "job"))  # type: ignore[return-value]

    # --- jobs ---
    async def job_register(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            job = codec.from_plain(Job, req.get("job") or {})
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed job: {exc}") from None
        problems = validate_job(job, filename=str(req.get("source") or "<request>"))
        if problems:
            raise JobFileError(problems)
        now = time.time()
        ev = Evaluation(
            id=new_id(), namespace=job.namespace, job_id=job.id, type=job.type, priority=job.priority,
            triggered_by="job-register", status=EVAL_PENDING, create_time=now, modify_time=now,
        )
        index, value = await self.server.raft.submit(ops.JOB_REGISTER, ops.JobRegister(job=job, eval=ev, now=now))
        return {"index": index, "eval_id": ev.id, **value}

    async def job_deregister(self, req: dict[str, Any]) -> dict[str, Any]:
        ns = self._namespace(req)
        with self.store.reader() as s:
            job = self._find_job(s, ns, str(req.get("job_id") or ""))
        now = time.time()
        ev = Evaluation(
            id=new_id(), namespace=ns, job_id=job.id, type=job.type, priority=job.priority,
            triggered_by="job-deregister", status=EVAL_PENDING, create_time=now, modify_time=now,
        )
        payload = ops.JobDeregister(namespace=ns, job_id=job.id, purge=bool(req.get("purge")), eval=ev, now=now)
        index, value = await self.server.raft.submit(ops.JOB_DEREGISTER, payload)
        return {"index": index, "eval_id": ev.id, "job_id": job.id, **value}

    async def job_list(self, req: dict[str, Any]) -> dict[str, Any]:
        ns = req.get("namespace")

        def read(s: StateSnapshot) -> dict[str, Any]:
            jobs = sorted(s.jobs(ns), key=lambda j: j.id)
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
        ns = self._namespace(req)
        job_id = str(req.get("job_id") or "")
        with self.store.reader() as s:
            job_id = self._find_job(s, ns, job_id).id

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
        eval_id = str(req.get("eval_id") or "")
        with self.store.reader() as s:
            eval_id = resolve_prefix(eval_id, [e.id for e in s.evals()], "evaluation")

        def read(s: StateSnapshot) -> dict[str, Any]:
            ev = s.eval(eval_id)
            if ev is None:
                raise NotFound(f"evaluation {eval_id!r} not found")
            allocs = [alloc_brief(a) for a in s.allocs_by_job(ev.namespace, ev.job_id) if a.eval_id == ev.id]
            return {"eval": codec.to_plain(ev), "allocations": allocs}

        return await self._blocking(req, ("Evaluation",), read)

    # --- nodes ---
    async def node_register(self, req: dict[str, Any]) -> dict[str, Any]:
        node = codec.from_plain(Node, req.get("node") or {})
        if not node.id or not node.name:
            raise InvalidRequest("node id and name are required")
        now = time.time()
        index, _ = await self.server.raft.submit(ops.NODE_REGISTER, ops.NodeRegister(node=node, now=now))
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
            return {"index": s.table_index("Node"), "node": codec.to_plain(node), "allocations": allocs}

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
            allocs = s.allocs_by_job(ns, job_id) if job_id else s.allocs()
            return {"allocations": [alloc_brief(a) for a in sorted(allocs, key=lambda a: a.create_index)]}

        return await self._blocking(req, ("Allocation",), read)

    async def alloc_get(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.store.reader() as s:
            alloc_id = resolve_prefix(str(req.get("alloc_id") or ""), [a.id for a in s.allocs()], "allocation")
            a = s.alloc(alloc_id)
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
        payload = ops.AllocClientUpdate(node_id=node_id, updates=updates, now=time.time())
        index, value = await self.server.raft.submit(ops.ALLOC_CLIENT_UPDATE, payload)
        return {"index": index, **value}

    # --- status ---
    async def status_leader(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"leader": self.server.raft.leader, "is_leader": self.server.raft.is_leader}
