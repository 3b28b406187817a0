"""A shoal server: the Raft node and FSM, the RPC API, forwarding to the leader, and
leader duties when leading.

Forming a cluster: ``--join`` names other servers' API addresses. A new server asks
them (``Server.Info``) for their Raft addresses; when a cluster already counts it among
its peers it starts with them; when a cluster already has a leader the server asks it
to add this one as a peer; otherwise it waits until it knows ``bootstrap_expect - 1``
peers and they start together (``plan_join``). The peers it started with are kept in
the data dir, so a restarted server rejoins on its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from shoal.config import ServerConfig
from shoal.errors import NoLeader, ShoalError, Unavailable
from shoal.jobs.structs import ServerMember
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.raft.node import DEFAULT_WRITE_TIMEOUT, RaftConfig, RaftNode, check_bindable
from shoal.rpc.transport import RpcClient, RpcServer
from shoal.server.endpoints import Endpoints
from shoal.server.leader import LeaderDuties
from shoal.server.scheduler_config import scheduler_config
from shoal.server.usage import UsageIndexer
from shoal.server.watch import StateWatch

log = structlog.get_logger("shoal.server")

MAX_FORWARD_HOPS = 2
JOIN_RETRY = 0.5


@dataclass(frozen=True, slots=True)
class StartWith:
    peers: list[str]  # the other servers' Raft addresses


@dataclass(frozen=True, slots=True)
class AskLeader:
    api: str  # the leader's API address: it adds this server as a peer


def plan_join(infos: list[dict[str, Any]], me: str, want: int) -> StartWith | AskLeader | None:
    """What a server without Raft peers does with the ``Server.Info`` answers of the servers it was
    told to join (``me``: its own Raft address; ``want``: bootstrap_expect - 1). None: ask again later.

    A cluster that already counts this server among its Raft peers is started with, leader or not:
    its other servers learned this one's address while it was still asking around, and they cannot
    elect a leader without its vote if one of them is down."""
    formed = [i for i in infos if i.get("leader")]
    if formed:
        peers = formed[0].get("peers", ())
        return StartWith([p for p in peers if p != me]) if me in peers else AskLeader(formed[0]["api"])
    counted_in = next((i for i in infos if me in i.get("peers", ())), None)
    if counted_in is not None:
        return StartWith([p for p in counted_in["peers"] if p != me])
    if len(infos) >= want:
        return StartWith([i["raft"] for i in infos])
    return None


class Server:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.name = cfg.name or f"{socket.gethostname()}.{cfg.rpc_bind}"
        self.fsm = FSM()
        self.rpc = RpcServer()
        self._leadership_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._peers: dict[str, RpcClient] = {}
        self._learned: dict[str, str] = {}  # raft address -> API address, from join
        self.raft_started = asyncio.Event()

    # --- lifecycle ---
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.watch = StateWatch(loop)
        self.fsm.listeners.append(self.watch.on_apply)
        self.raft = RaftNode(
            RaftConfig(
                bind=self.cfg.raft_bind,
                peers=[],
                data_dir=self.cfg.data_dir / "raft",
                password=self.cfg.raft_password,
                min_timeout=self.cfg.raft_min_timeout,
                max_timeout=self.cfg.raft_max_timeout,
            ),
            self.fsm,
            on_leadership=self._on_leadership,
        )
        self.usage = UsageIndexer(self.fsm.store)
        self.fsm.add_indexer(self.usage)
        self.leader = LeaderDuties(
            self.fsm.store, self.raft, self.watch, self.usage, workers=self.cfg.workers,
            heartbeat_ttl=self.cfg.heartbeat_ttl, scheduler=scheduler_config(self.cfg),
        )
        Endpoints(self).register(self.rpc)
        check_bindable(self.cfg.raft_bind)  # Raft itself starts later (after joining): fail now if it cannot
        await self.rpc.start(self.cfg.rpc_bind)
        self._spawn(self._join_and_start())
        log.info("server started", name=self.name, rpc=self.cfg.rpc_bind, raft=self.cfg.raft_bind, join=self.cfg.join)

    async def stop(self) -> None:
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.leader.stop()
        await self.rpc.stop()
        self.raft.stop()
        for c in self._peers.values():
            await c.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- forming and joining a cluster ---
    @property
    def _peers_file(self):
        return self.cfg.data_dir / "raft" / "peers.json"

    async def _join_and_start(self) -> None:
        if self._peers_file.exists():
            saved = json.loads(self._peers_file.read_text())
            peers = saved["peers"]
            self._learned.update(saved.get("apis", {}))
        elif self.cfg.raft_peers:
            peers = list(self.cfg.raft_peers)
        elif self.cfg.join:
            peers = await self._discover()
        else:
            peers = []
        peers = [p for p in peers if p != self.cfg.raft_bind]
        self._peers_file.parent.mkdir(parents=True, exist_ok=True)
        self._peers_file.write_text(json.dumps({"peers": peers, "apis": self._learned}))
        self.raft.cfg.peers = peers
        self.raft.start(asyncio.get_running_loop())
        self.raft_started.set()
        await self._register_member()

    async def _discover(self) -> list[str]:
        """Learn the other servers' Raft addresses; join an existing cluster through its leader."""
        want = max(0, self.cfg.bootstrap_expect - 1)
        me = self.cfg.raft_bind
        while True:
            infos: list[dict[str, Any]] = []
            unanswered: dict[str, str] = {}
            for addr in self.cfg.join:
                if addr == self.cfg.rpc_bind:
                    continue
                try:
                    infos.append(await self._peer(addr).call("Server.Info", {}, timeout=2.0))
                except ShoalError as err:
                    unanswered[addr] = str(err)
            for info in infos:
                self._learned[info["raft"]] = info["api"]
            step = plan_join(infos, me, want)
            if isinstance(step, StartWith):
                return step.peers
            if isinstance(step, AskLeader):
                try:
                    resp = await self._peer(step.api).call(
                        "Operator.RaftAddPeer", {"raft": me, "api": self.cfg.rpc_bind, "name": self.name}, timeout=15.0
                    )
                    log.info("joined an existing cluster", peers=resp["peers"])
                    return [p for p in resp["peers"] if p != me]
                except ShoalError as err:
                    log.warning("joining the cluster failed; retrying", error=str(err))
            log.info("waiting for peers", known=len(infos), expect=self.cfg.bootstrap_expect, unanswered=unanswered)
            await asyncio.sleep(JOIN_RETRY)

    async def _register_member(self) -> None:
        member = ServerMember(raft=self.cfg.raft_bind, api=self.cfg.rpc_bind, name=self.name)
        while True:
            with self.fsm.store.reader() as s:
                known = s.server(member.raft)
            if known is not None and known.api == member.api and known.name == member.name:
                return
            try:
                await self.raft.submit(ops.SERVER_UPSERT, ops.ServerUpsert(member=member), timeout=5.0)
                return
            except NoLeader:
                await asyncio.sleep(JOIN_RETRY)

    # --- forwarding ---
    def api_of(self, raft_addr: str | None) -> str | None:
        if not raft_addr:
            return None
        with self.fsm.store.reader() as s:
            m = s.server(raft_addr)
        return m.api if m else self._learned.get(raft_addr)

    def _peer(self, api: str) -> RpcClient:
        if api not in self._peers:
            self._peers[api] = RpcClient(api)
        return self._peers[api]

    async def forward(self, name: str, req: dict[str, Any], local: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Answer on the leader: here if we lead, else by forwarding the call to it."""
        hops = int(req.get("_hops") or 0)
        deadline = time.monotonic() + DEFAULT_WRITE_TIMEOUT
        while True:
            if self.raft.is_leader:
                return await local(req)
            api = self.api_of(self.raft.leader)
            if api and api != self.cfg.rpc_bind and hops < MAX_FORWARD_HOPS:
                timeout = float(req.get("wait") or 0.0) + DEFAULT_WRITE_TIMEOUT + 5.0
                try:
                    resp = await self._peer(api).call(name, {**req, "_hops": hops + 1}, timeout=timeout)
                except Unavailable:
                    resp = None  # the leader just went away: wait for the next one
                if resp is not None:
                    index = int(resp.get("index") or 0)
                    if index > self.fsm.store.index:  # read-your-writes for stale reads here
                        await self.watch.wait_index(index, 1.0)
                    return resp
            if time.monotonic() > deadline:
                raise NoLeader(f"no cluster leader: none answered within {DEFAULT_WRITE_TIMEOUT:g}s; retry")
            await asyncio.sleep(0.05)

    # --- leader duties ---
    def heartbeat(self, node_id: str) -> float:
        """Reset a node's heartbeat timer (on the leader); returns the TTL to announce."""
        if self.leader.running:
            return self.leader.heartbeat(node_id)
        return self.cfg.heartbeat_ttl

    def reported_dead(self, node_id: str) -> float | None:
        """Gossip says a node is dead (on the leader): seconds until it is marked down, None if not watched."""
        return self.leader.reported_dead(node_id) if self.leader.running else None

    def _on_leadership(self, is_leader: bool) -> None:
        self._spawn(self._transition(is_leader))

    async def _transition(self, is_leader: bool) -> None:
        async with self._leadership_lock:
            if is_leader and not self.leader.running and self.raft.is_leader:
                await self.leader.start()
            elif not is_leader and self.leader.running:
                await self.leader.stop()
