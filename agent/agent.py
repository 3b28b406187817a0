"""The agent (client): registers its node, watches its allocations, runs them, reports back.

It talks to servers only through RPC: a blocking query on ``Node.Allocations``
wakes it when its allocations change; status changes go back in batches. Service
discovery rides the same way (discovery.py): registrations go up, the catalog comes down
into the view the agent's DNS server answers from.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import structlog

from shoal import codec
from shoal.agent import names
from shoal.agent.allocrunner import AllocRunner
from shoal.agent.allocstate import load_state
from shoal.agent.discovery import Discovery
from shoal.agent.gossip.keyring import KeyringError
from shoal.agent.membership import GOSSIP_ATTRIBUTE, Membership
from shoal.agent.drivers.base import Driver, DriverError, TaskHandle
from shoal.agent.drivers.registry import build_drivers
from shoal.agent.execsession import ExecManager
from shoal.agent.hooks.network import Networking
from shoal.agent.fingerprint import fingerprint
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagestore import ImageStore
from shoal.agent.logs import read_log
from shoal.agent.procwait import become_subreaper
from shoal.agent.registry_client import RegistryConfig, load_auth_file
from shoal.agent.taskrunner import TaskRunner
from shoal.config import ClientConfig
from shoal.errors import InvalidRequest, NotFound, ShoalError
from shoal.jobs.model import Job
from shoal.jobs.network import DEFAULT_NETWORK
from shoal.jobs.structs import ALLOC_COMPLETE, CLIENT_TERMINAL, DESIRED_RUN, TASK_DEAD, AllocUpdate, Allocation, Node, NodeResources
from shoal.netoverlay.netns import Route
from shoal.netoverlay.overlay import NodeOverlay
from shoal.netoverlay.vxlan import NetworkSetupError, source_address_to
from shoal.rpc.transport import RpcClient, RpcServer

log = structlog.get_logger("shoal.agent")

WATCH_WAIT = 30.0
RETRY_MIN, RETRY_MAX = 0.2, 5.0
HOUSEKEEPING_INTERVAL = 1.0  # log rotation checks
IMAGE_GC_INTERVAL = 300.0


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
        self._cleanup: asyncio.Task[None] | None = None  # destroying containers no allocation claims
        self._server_idx = 0
        self._clients: dict[str, RpcClient] = {}
        self.rpc = RpcServer()
        self.ready = asyncio.Event()
        self.execs = ExecManager()
        self.image_manager: ImageManager | None = None  # set by start
        self._gc_wanted = False
        self.overlay: NodeOverlay | None = None  # set by start, with networking
        self.networking: Networking | None = None
        self.discovery: Discovery | None = None  # set by start: registrations up, the catalog down, DNS
        self.membership: Membership | None = None  # set by start unless --no-gossip

    # --- lifecycle ---
    async def start(self) -> None:
        become_subreaper()
        data = self.cfg.data_dir
        (data / "allocs").mkdir(parents=True, exist_ok=True)
        registry = RegistryConfig(
            insecure=frozenset(self.cfg.insecure_registries),
            auths=load_auth_file(self.cfg.registry_auth) if self.cfg.registry_auth else {},
            default_registry=self.cfg.default_registry,
        )
        self.image_manager = ImageManager(ImageStore(self.cfg.image_dir), registry, gc_delay=self.cfg.image_gc_delay)
        self.drivers = build_drivers(
            self.image_manager, raw_exec_enabled=self.cfg.raw_exec, runc_root=self.cfg.runc_root,
            state_dir=data / "containers", allowed_volumes=list(self.cfg.allowed_volumes),
        )
        node_id = self._node_id()
        underlay = self._network_address()
        self.overlay = NodeOverlay(self._call, node_id, underlay, state_file=data / "overlay.json")
        self.discovery = Discovery(self.cfg, self._call, node_id)
        await self.discovery.start()
        self.networking = Networking(self.overlay, underlay, self.discovery.nameserver if self.cfg.dns else None)
        if self.cfg.gossip:
            self.membership = Membership(self.cfg, self._call, node_id, underlay,
                                         {"name": self.cfg.node_name or socket.gethostname()})
            await self.membership.start()
        self._restore()
        self.rpc.stream("Agent.Logs", self.logs)
        self.rpc.unary("Agent.AllocRestart", self.alloc_restart)
        self.rpc.unary("Agent.Members", self.gossip_members)
        self.rpc.unary("Agent.Keyring", self.gossip_keyring)
        self.rpc.unary("Agent.ExecStart", self.exec_start)
        self.rpc.stream("Agent.ExecOutput", self.exec_output)
        self.rpc.unary("Agent.ExecInput", self.exec_input)
        host = self.cfg.rpc_bind.rsplit(":", 1)[0]
        port = await self.rpc.start(self.cfg.rpc_bind)
        self.node = self._fingerprint(f"{host}:{port}")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_forever(self._register_and_heartbeat), name="agent-heartbeat"),
            loop.create_task(self._run_forever(self._watch), name="agent-watch"),
            loop.create_task(self._run_forever(self._report), name="agent-report"),
            loop.create_task(self._run_forever(self._housekeeping), name="agent-housekeeping"),
            loop.create_task(self._join_overlay(), name="agent-overlay"),
            loop.create_task(self._run_forever(self._push_services), name="agent-services"),
            loop.create_task(self._run_forever(self._follow_catalog), name="agent-catalog"),
        ]
        if self.membership is not None:
            self._tasks.append(loop.create_task(self._run_forever(self._gossip), name="agent-gossip"))
        log.info("agent started", node_id=self.node.id, name=self.node.name, drivers=sorted(self.node.drivers))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.execs.close()
        if self.cfg.destroy_on_shutdown and self.runners:
            log.info("stopping allocations before exit", count=len(self.runners))
            await asyncio.gather(*(r.stop("agent shutting down") for r in self.runners.values()), return_exceptions=True)
        else:
            # The tasks keep running; a restarted agent re-attaches to them from the state files.
            await asyncio.gather(*(r.detach() for r in self.runners.values()), return_exceptions=True)
        # Nothing of ours runs any more: leave the overlay (device, bridges, nftables table) behind us.
        if self.overlay is not None:
            still_running = [r for r in self.runners.values() if not r.done]
            await self.overlay.stop(leave=not still_running)
        if self.discovery is not None:
            await self.discovery.close()
        if self.membership is not None:
            await self.membership.close(leave=True)
        await self.rpc.stop(grace=0.2)
        for c in self._clients.values():
            await c.close()

    def _node_id(self) -> str:
        id_file = self.cfg.data_dir / "node-id"
        if id_file.exists():
            return id_file.read_text().strip()
        node_id = str(uuid.uuid4())
        id_file.write_text(node_id + "\n")
        return node_id

    def _network_address(self) -> str:
        """The address other hosts reach this one at: --network-address, else the --client-bind host,
        else (a wildcard bind) the source address towards the first server."""
        if self.cfg.network_address:
            return self.cfg.network_address
        host = self.cfg.rpc_bind.rsplit(":", 1)[0]
        if host not in ("", "0.0.0.0"):
            return host
        server = self.cfg.servers[0].rsplit(":", 1)[0]
        with Route() as ipr:
            return source_address_to(ipr, server)

    async def _push_services(self) -> None:
        await self.ready.wait()
        assert self.discovery is not None
        await self.discovery.syncer.run()

    async def _follow_catalog(self) -> None:
        await self.ready.wait()
        assert self.discovery is not None
        await self.discovery.follower.run()

    async def _gossip(self) -> None:
        await self.ready.wait()
        assert self.membership is not None
        await self.membership.run()

    async def _join_overlay(self) -> None:
        """Once registered: lease the node's subnet, build the device, follow the other nodes."""
        await self.ready.wait()
        assert self.overlay is not None
        try:
            await self.overlay.start()
        except NetworkSetupError as exc:
            log.error("joining the overlay failed: allocations on it cannot start here", error=str(exc))
            return
        if self.membership is not None and self.node is not None:
            att = await self.overlay.attach(DEFAULT_NETWORK)
            self.membership.update_meta({"name": self.node.name, "vtep": str(att.layout.vtep),
                                         "subnet": str(att.layout.subnet)})

    def _fingerprint(self, address: str) -> Node:
        node_id = self._node_id()
        driver_attrs: dict[str, str] = {}
        names = []
        for name, drv in self.drivers.items():
            attrs = drv.fingerprint()
            if attrs is not None:
                driver_attrs.update(attrs)
                names.append(name)
        res, attrs = fingerprint(self.cfg.data_dir, driver_attrs)
        attrs["driver.available"] = ",".join(sorted(names))
        if self.networking is not None:
            attrs["unique.network.ip-address"] = self.networking.host_ip
        if self.membership is not None:
            attrs[GOSSIP_ATTRIBUTE] = self.membership.address
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
            reserved_ports=list(self.cfg.reserved_ports),
            min_dynamic_port=self.cfg.min_dynamic_port,
            max_dynamic_port=self.cfg.max_dynamic_port,
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
        if self.discovery is not None:
            self.discovery.syncer.resync()  # a node that was down had its registrations dropped
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
        if self._cleanup is not None:
            # an allocation the servers still place here but no state file claimed starts afresh,
            # under the same container name: the old container must be gone first
            await self._cleanup
        index = 0
        while True:
            resp = await self._call(
                "Node.Allocations", {"node_id": self.node.id, "min_index": index, "wait": WATCH_WAIT, "stale": True}, timeout=WATCH_WAIT + 10
            )
            index = int(resp.get("index") or 0)
            jobs = {k: (codec.from_plain(Job, v) if v else None) for k, v in (resp.get("jobs") or {}).items()}
            allocs = [codec.from_plain(Allocation, a) for a in resp.get("allocations") or ()]
            await self._sync(allocs, jobs)

    # --- restore ---
    def _restore(self) -> None:
        """Re-create the runners of allocations an earlier agent process ran, from their state files.

        Their tasks are re-attached (same containers, same pids), not started again;
        containers no state file claims are destroyed.
        """
        allocs_dir = self.cfg.data_dir / "allocs"
        claimed: set[str] = set()
        for d in sorted(p for p in allocs_dir.iterdir() if p.is_dir()):
            state = load_state(d)
            if state is None:
                continue
            try:
                alloc = codec.from_plain(Allocation, state["alloc"])
                job = codec.from_plain(Job, state["job"])
                runner = AllocRunner(alloc, job, self.drivers, allocs_dir, self._mark_dirty, restored=state,
                                     networking=self.networking, **self._runner_services())
            except Exception as exc:
                log.warning("cannot restore an allocation; leaving it", alloc_dir=str(d), error=str(exc))
                continue
            for name, t in (state.get("tasks") or {}).items():
                claimed.add(names.container_id(alloc.id, name))
                if t.get("handle"):
                    claimed.add(str(t["handle"].get("id")))
            self._launch(runner)
            log.info("allocation restored", alloc_id=alloc.id, name=alloc.name)
        leftovers: dict[str, tuple[Driver, TaskHandle]] = {}  # by id: the runc drivers share their records
        for drv in self.drivers.values():
            for h in drv.leftover_handles():
                if h.id not in claimed:
                    leftovers.setdefault(h.id, (drv, h))
        if leftovers:
            log.info("destroying containers no allocation claims", count=len(leftovers))

            async def destroy() -> None:
                for drv, h in leftovers.values():
                    try:
                        await drv.destroy(h)
                    except Exception as exc:
                        log.warning("destroying a leftover container failed", id=h.id, error=str(exc))

            self._cleanup = asyncio.get_running_loop().create_task(destroy())

    async def _sync(self, allocs: list[Allocation], jobs: dict[str, Job | None]) -> None:
        known = {a.id for a in allocs}
        for alloc_id, runner in list(self.runners.items()):
            if alloc_id not in known:  # gone from the servers (purged): stop it and forget it
                asyncio.get_running_loop().create_task(self._forget(alloc_id, runner))
        for alloc in allocs:
            runner = self.runners.get(alloc.id)
            if alloc.desired_status != DESIRED_RUN:
                if runner is not None and not runner.done:
                    asyncio.get_running_loop().create_task(runner.stop(alloc.desired_description or "alloc stopped"))
                elif runner is None and alloc.client_status not in CLIENT_TERMINAL and alloc.id not in self._dirty:
                    # Told to stop, and nothing of it runs here (an earlier agent process died before saving
                    # its state; its containers were destroyed as unclaimed): say so, or it stays "running".
                    self._mark_dirty(AllocUpdate(id=alloc.id, client_status=ALLOC_COMPLETE,
                                                 client_description="not running on this node",
                                                 task_states=alloc.task_states))
                continue
            if runner is not None:
                if alloc.alloc_modify_index > runner.alloc.alloc_modify_index and not runner.done:
                    asyncio.get_running_loop().create_task(runner.update(alloc))  # an in-place update
                continue
            if alloc.terminal():
                continue
            job = jobs.get(f"{alloc.namespace}/{alloc.job_id}@{alloc.job_version}")
            if job is None:
                log.warning("allocation without its job; skipping", alloc_id=alloc.id)
                continue
            runner = AllocRunner(alloc, job, self.drivers, self.cfg.data_dir / "allocs", self._mark_dirty,
                                 networking=self.networking, **self._runner_services())
            self._launch(runner)
            log.info("allocation started", alloc_id=alloc.id, name=alloc.name)

    def _runner_services(self) -> dict[str, Any]:
        return {"syncer": self.discovery.syncer if self.discovery is not None else None,
                "datacenter": self.cfg.datacenter}

    def _launch(self, runner: AllocRunner) -> None:
        """Track and start a runner; when it ends, its image may be garbage now."""
        self.runners[runner.alloc.id] = runner
        runner.start().add_done_callback(lambda _t: self._want_gc())

    async def _forget(self, alloc_id: str, runner: AllocRunner) -> None:
        if self.runners.get(alloc_id) is not runner:
            return
        if not runner.done:
            await runner.stop("allocation no longer exists on the servers")
        if self.runners.get(alloc_id) is runner:
            del self.runners[alloc_id]
            await runner.destroy()
            self._want_gc()
            log.info("allocation removed", alloc_id=alloc_id)

    # --- housekeeping: log rotation, image garbage collection ---
    def _want_gc(self) -> None:
        self._gc_wanted = True

    def images_in_use(self) -> set[str]:
        out: set[str] = set()
        for r in self.runners.values():
            for tr in r.tasks:
                h = tr.handle
                if h is not None and h.state.get("image_digest"):
                    out.add(str(h.state["image_digest"]))
        return out

    async def _housekeeping(self) -> None:
        last_gc = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            for r in list(self.runners.values()):
                if not r.done:
                    r.rotate_logs()
            now = asyncio.get_running_loop().time()
            if self.image_manager is not None and (self._gc_wanted or now - last_gc >= IMAGE_GC_INTERVAL):
                self._gc_wanted = False
                last_gc = now
                try:
                    await self.image_manager.gc(self.images_in_use())
                except Exception as exc:
                    log.warning("image garbage collection failed", error=str(exc))

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
    def _runner(self, req: dict[str, Any]) -> AllocRunner:
        alloc_id = str(req.get("alloc_id") or "")
        runner = self.runners.get(alloc_id)
        if runner is None:
            raise NotFound(f"allocation {alloc_id!r} is not running on this node")
        return runner

    @staticmethod
    def _task_runner(runner: AllocRunner, task: str | None) -> TaskRunner:
        if task:
            tr = runner.by_name.get(task)
            if tr is None:
                raise NotFound(f"allocation has no task {task!r} (tasks: {', '.join(sorted(runner.by_name))})")
            return tr
        running = [tr for tr in runner.tasks if tr.running]
        if len(runner.tasks) == 1:
            return runner.tasks[0]
        if len(running) == 1:
            return running[0]
        raise NotFound(f"allocation has tasks {', '.join(sorted(runner.by_name))}: name one")

    async def logs(self, req: dict[str, Any]):
        alloc_id = str(req.get("alloc_id") or "")
        runner = self.runners.get(alloc_id)
        alloc_dir = names.alloc_dir(self.cfg.data_dir / "allocs", alloc_id)
        if not alloc_dir.is_dir():
            raise NotFound(f"allocation {alloc_id!r} has no directory on this node")
        task = req.get("task")
        if not task:
            known = runner.by_name if runner is not None else (load_state(alloc_dir) or {}).get("tasks") or {}
            tasks = sorted(t for t in known if names.log_files(alloc_dir, t)[0].exists())  # those that wrote logs
            if len(tasks) != 1:
                raise NotFound(f"allocation has tasks {', '.join(tasks) or '(none)'}: name one")
            task = tasks[0]
        stdout, stderr = names.log_files(alloc_dir, task)
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

    async def alloc_restart(self, req: dict[str, Any]) -> dict[str, Any]:
        runner = self._runner(req)
        task = req.get("task") or None
        if task and task not in runner.by_name:
            raise NotFound(f"allocation has no task {task!r} (tasks: {', '.join(sorted(runner.by_name))})")
        restarted = await runner.restart(task)
        if not restarted:
            raise InvalidRequest("nothing to restart: no task of the allocation is running")
        return {"restarted": restarted}

    async def gossip_members(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.membership is None:
            raise InvalidRequest("this agent runs no gossip (--no-gossip)")
        return {"members": self.membership.members(), "self": self.node.id if self.node else ""}

    async def gossip_keyring(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.membership is None:
            raise InvalidRequest("this agent runs no gossip (--no-gossip)")
        try:
            keys = self.membership.keyring_op(str(req.get("op") or "list"), str(req.get("key") or ""))
        except (KeyringError, ValueError) as exc:
            raise InvalidRequest(str(exc)) from None
        return {"keys": keys}

    async def exec_start(self, req: dict[str, Any]) -> dict[str, Any]:
        runner = self._runner(req)
        tr = self._task_runner(runner, req.get("task") or None)
        argv = [str(a) for a in req.get("command") or ()]
        if not argv:
            raise InvalidRequest("no command given: shoal alloc exec ID [TASK] -- COMMAND [ARGS...]")
        try:
            cmd = tr.exec_command(argv, tty=bool(req.get("tty")))
        except DriverError as exc:
            raise InvalidRequest(str(exc)) from None
        session = await self.execs.start(cmd.argv, cwd=cmd.cwd, env=cmd.env, tty=bool(req.get("tty")),
                                         rows=int(req.get("rows") or 0), cols=int(req.get("cols") or 0))
        return {"session": session.id, "task": tr.task.name}

    async def exec_output(self, req: dict[str, Any]):
        session = self.execs.get(str(req.get("session") or ""))
        if session is None or session.attached:
            raise NotFound("no such exec session (it ended, or another client has it)")
        session.attached = True
        try:
            while True:
                item = await session.output.get()
                if item is None:
                    yield {"exit_code": session.exit_code}
                    return
                stream, data = item
                yield {"stream": stream, "data": data}
        finally:
            if session.exit_code is None:
                session.kill()  # the client went away
            self.execs.forget(session)

    async def exec_input(self, req: dict[str, Any]) -> dict[str, Any]:
        session = self.execs.get(str(req.get("session") or ""))
        if session is None:
            raise NotFound("no such exec session")
        if req.get("rows") or req.get("cols"):
            session.resize(int(req.get("rows") or 0), int(req.get("cols") or 0))
        data = req.get("data")
        if data:
            try:
                await session.write(bytes(data))
            except (OSError, ConnectionError):
                pass  # the command has ended
        if req.get("eof"):
            await session.close_input()
        return {}
