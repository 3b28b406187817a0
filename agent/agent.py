"""The agent (client): registers its node, watches its allocations, runs them, reports back.

It talks to servers only through RPC: a blocking query on ``Node.Allocations``
wakes it when its allocations change; status changes go back in batches.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path
from typing import Any

import structlog

from shoal import codec
from shoal.agent.allocrunner import AllocRunner
from shoal.agent.drivers.base import Driver
from shoal.agent.drivers.registry import build_drivers
from shoal.agent.fingerprint import fingerprint
from shoal.agent.images import ImageStore
from shoal.agent.logs import read_log
from shoal.agent.procwait import become_subreaper
from shoal.agent.taskrunner import log_paths
from shoal.config import ClientConfig
from shoal.errors import NotFound, ShoalError
from shoal.jobs.model import Job
from shoal.jobs.structs import DESIRED_RUN, TASK_DEAD, AllocUpdate, Allocation, Node, NodeResources
from shoal.rpc.transport import RpcClient, RpcServer

log = structlog.get_logger("shoal.agent")

WATCH_WAIT = 30.0
RETRY_MIN, RETRY_MAX = 0.2, 5.0


class Agent:
    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        self.runners: dict[str, AllocRunner] = {}
        self.drivers: dict[str, Driver] = {}
        self.node: Node | None = None
        self.heartbeat_ttl = 5.0
        self._dirty: dict[str, AllocUpdate] = {}
        self._dirty_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._server_idx = 0
        self._clients: dict[str, RpcClient] = {}
        self.rpc = RpcServer()
        self.ready = asyncio.Event()

    # --- lifecycle ---
    async def start(self) -> None:
        become_subreaper()
        data = self.cfg.data_dir
        (data / "allocs").mkdir(parents=True, exist_ok=True)
        images = ImageStore(self.cfg.image_dir)
        self.drivers = build_drivers(
            images, raw_exec_enabled=self.cfg.raw_exec, runc_root=self.cfg.runc_root, state_dir=data / "containers"
        )
        self.rpc.stream("Agent.Logs", self.logs)
        host = self.cfg.rpc_bind.rsplit(":", 1)[0]
        port = await self.rpc.start(self.cfg.rpc_bind)
        self.node = self._fingerprint(f"{host}:{port}")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_forever(self._register_and_heartbeat), name="agent-heartbeat"),
            loop.create_task(self._run_forever(self._watch), name="agent-watch"),
            loop.create_task(self._run_forever(self._report), name="agent-report"),
        ]
        log.info("agent started", node_id=self.node.id, name=self.node.name, drivers=sorted(self.node.drivers))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.cfg.destroy_on_shutdown and self.runners:
            log.info("stopping allocations before exit", count=len(self.runners))
            await asyncio.gather(*(r.stop("agent shutting down") for r in self.runners.values()), return_exceptions=True)
        await self.rpc.stop()
        for c in self._clients.values():
            await c.close()

    def _fingerprint(self, address: str) -> Node:
        id_file = self.cfg.data_dir / "node-id"
        if id_file.exists():
            node_id = id_file.read_text().strip()
        else:
            node_id = str(uuid.uuid4())
            id_file.write_text(node_id + "\n")
        driver_attrs: dict[str, str] = {}
        names = []
        for name, drv in self.drivers.items():
            attrs = drv.fingerprint()
            if attrs is not None:
                driver_attrs.update(attrs)
                names.append(name)
        res, attrs = fingerprint(self.cfg.data_dir, driver_attrs)
        return Node(
            id=node_id,
            name=self.cfg.node_name or socket.gethostname(),
            datacenter=self.cfg.datacenter,
            node_pool=self.cfg.node_pool,
            address=address,
            attributes=attrs,
            meta=dict(self.cfg.meta),
            resources=res,
            reserved=NodeResources(cpu=self.cfg.reserved_cpu, memory=self.cfg.reserved_memory),
            drivers=sorted(names),
        )

    # --- talking to servers ---
    def _client(self) -> RpcClient:
        addr = self.cfg.servers[self._server_idx % len(self.cfg.servers)]
        if addr not in self._clients:
            self._clients[addr] = RpcClient(addr)
        return self._clients[addr]

    async def _call(self, method: str, req: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        try:
            return await self._client().call(method, req, timeout=timeout)
        except ShoalError as err:
            if err.code in ("unavailable", "no_leader"):
                self._server_idx += 1  # try the next server next time
            raise

    async def _run_forever(self, fn) -> None:
        delay = RETRY_MIN
        while True:
            try:
                await fn()
                delay = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except ShoalError as err:
                log.warning("server call failed; retrying", task=fn.__name__, error=str(err), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception:
                log.exception("agent loop failed; retrying", task=fn.__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _register(self) -> None:
        assert self.node is not None
        resp = await self._call("Node.Register", {"node": codec.to_plain(self.node)})
        self.heartbeat_ttl = float(resp.get("heartbeat_ttl") or self.heartbeat_ttl)
        self.ready.set()
        log.info("node registered", node_id=self.node.id, heartbeat_ttl=self.heartbeat_ttl)

    async def _register_and_heartbeat(self) -> None:
        await self._register()
        while True:
            await asyncio.sleep(max(0.2, self.heartbeat_ttl / 3))
            try:
                resp = await self._call("Node.Heartbeat", {"node_id": self.node.id}, timeout=max(1.0, self.heartbeat_ttl / 2))
            except NotFound:
                return await self._register()
            if resp.get("reregister"):
                return await self._register()
            self.heartbeat_ttl = float(resp.get("heartbeat_ttl") or self.heartbeat_ttl)

    async def _watch(self) -> None:
        await self.ready.wait()
        index = 0
        while True:
            resp = await self._call(
                "Node.Allocations", {"node_id": self.node.id, "min_index": index, "wait": WATCH_WAIT, "stale": True}, timeout=WATCH_WAIT + 10
            )
            index = int(resp.get("index") or 0)
            jobs = {k: (codec.from_plain(Job, v) if v else None) for k, v in (resp.get("jobs") or {}).items()}
            allocs = [codec.from_plain(Allocation, a) for a in resp.get("allocations") or ()]
            await self._sync(allocs, jobs)

    async def _sync(self, allocs: list[Allocation], jobs: dict[str, Job | None]) -> None:
        for alloc in allocs:
            runner = self.runners.get(alloc.id)
            if alloc.desired_status != DESIRED_RUN:
                if runner is not None and not runner.done:
                    asyncio.get_running_loop().create_task(runner.stop(alloc.desired_description or "alloc stopped"))
                continue
            if runner is not None or alloc.terminal():
                continue
            job = jobs.get(f"{alloc.namespace}/{alloc.job_id}@{alloc.job_version}")
            if job is None:
                log.warning("allocation without its job; skipping", alloc_id=alloc.id)
                continue
            runner = AllocRunner(alloc, job, self.drivers, self.cfg.data_dir / "allocs", self._mark_dirty)
            self.runners[alloc.id] = runner
            runner.start()
            log.info("allocation started", alloc_id=alloc.id, name=alloc.name)

    # --- reporting ---
    def _mark_dirty(self, update: AllocUpdate) -> None:
        self._dirty[update.id] = update
        self._dirty_event.set()

    async def _report(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            await asyncio.sleep(0.02)  # let a burst of changes coalesce into one write
            batch, self._dirty = self._dirty, {}
            try:
                await self._call(
                    "Alloc.Update",
                    {"node_id": self.node.id, "updates": [codec.to_plain(u) for u in batch.values()]},
                )
            except BaseException:
                for k, v in batch.items():  # keep what failed, unless something newer came
                    self._dirty.setdefault(k, v)
                self._dirty_event.set()
                raise

    # --- the agent's own API ---
    async def logs(self, req: dict[str, Any]):
        alloc_id = str(req.get("alloc_id") or "")
        runner = self.runners.get(alloc_id)
        alloc_dir = self.cfg.data_dir / "allocs" / alloc_id
        if not alloc_dir.is_dir():
            raise NotFound(f"allocation {alloc_id!r} has no directory on this node")
        task = req.get("task")
        if not task:
            tasks = sorted(p.name.split(".")[0] for p in (alloc_dir / "alloc" / "logs").glob("*.stdout.0"))
            if len(tasks) != 1:
                raise NotFound(f"allocation has tasks {', '.join(tasks) or '(none)'}: name one")
            task = tasks[0]
        stdout, stderr = log_paths(alloc_dir, task)
        path = stderr if req.get("stderr") else stdout
        if not path.exists() and runner is None:
            raise NotFound(f"no logs for task {task!r} in allocation {alloc_id}")

        def running() -> bool:
            if runner is None:
                return False
            return any(tr.task.name == task and tr.state.state != TASK_DEAD for tr in runner.tasks)

        tail = req.get("tail_bytes")
        async for chunk in read_log(path, follow=bool(req.get("follow")), tail_bytes=tail, still_running=running):
            yield {"data": chunk}
