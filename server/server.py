"""A shoal server: the Raft node and FSM, the RPC API, and leader duties when leading."""

from __future__ import annotations

import asyncio

import structlog

from shoal.config import ServerConfig
from shoal.raft.fsm import FSM
from shoal.raft.node import RaftConfig, RaftNode
from shoal.rpc.transport import RpcServer
from shoal.server.endpoints import Endpoints
from shoal.server.leader import LeaderDuties
from shoal.server.watch import StateWatch

log = structlog.get_logger("shoal.server")


class Server:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.fsm = FSM()
        self.rpc = RpcServer()
        self.rpc_port = 0
        self._leadership_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.watch = StateWatch(loop)
        self.fsm.listeners.append(self.watch.on_apply)
        self.raft = RaftNode(
            RaftConfig(
                bind=self.cfg.raft_bind,
                peers=self.cfg.raft_peers,
                data_dir=self.cfg.data_dir / "raft",
                password=self.cfg.raft_password,
                min_timeout=self.cfg.raft_min_timeout,
                max_timeout=self.cfg.raft_max_timeout,
            ),
            self.fsm,
            on_leadership=self._on_leadership,
        )
        self.leader = LeaderDuties(
            self.fsm.store, self.raft, self.watch, workers=self.cfg.workers, heartbeat_ttl=self.cfg.heartbeat_ttl
        )
        Endpoints(self).register(self.rpc)
        self.rpc_port = await self.rpc.start(self.cfg.rpc_bind)
        self.raft.start(loop)
        log.info("server started", rpc=self.cfg.rpc_bind, raft=self.cfg.raft_bind, peers=self.cfg.raft_peers)

    async def stop(self) -> None:
        await self.leader.stop()
        await self.rpc.stop()
        self.raft.stop()

    def heartbeat(self, node_id: str) -> float:
        """Reset a node's heartbeat timer (on the leader); returns the TTL to announce."""
        if self.leader.running:
            return self.leader.heartbeat(node_id)
        return self.cfg.heartbeat_ttl

    def _on_leadership(self, is_leader: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._transition(is_leader))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _transition(self, is_leader: bool) -> None:
        async with self._leadership_lock:
            if is_leader and not self.leader.running and self.raft.is_leader:
                await self.leader.start()
            elif not is_leader and self.leader.running:
                await self.leader.stop()
