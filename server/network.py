"""RPC endpoints of the overlay: subnet leases for agents, the lease table they follow,
and purging a node (which releases its leases).

The overlay's settings (CIDR, subnet size, VNI, UDP port) belong to the servers, so every
node of a cluster agrees on them: a lease answer carries them to the agent.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shoal import codec
from shoal.errors import InvalidRequest, NotFound
from shoal.ids import resolve_prefix
from shoal.jobs.network import DEFAULT_NETWORK, valid_network_name
from shoal.raft import ops
from shoal.raft.state import StateSnapshot
from shoal.server.heartbeats import node_evals

if TYPE_CHECKING:
    from shoal.server.endpoints import Endpoints

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

def check_network_name(name: str) -> str:
    name = name or DEFAULT_NETWORK
    if not valid_network_name(name):
        raise InvalidRequest(f"network name {name!r}: letters, digits, '.', '_' and '-' only (at most 64, "
                             "starting with a letter or digit)")
    return name


class NetworkEndpoints:
    def __init__(self, endpoints: Endpoints):
        self.ep = endpoints
        self.server = endpoints.server
        self.store = endpoints.store
        self.cfg = endpoints.server.cfg  # the overlay's settings are the servers' (one for the cluster)

    def writes(self) -> dict[str, Handler]:
        return {"Network.Lease": self.lease, "Node.Purge": self.node_purge}

    def reads(self) -> dict[str, Handler]:
        return {"Network.Leases": self.leases}

    async def lease(self, req: dict[str, Any]) -> dict[str, Any]:
        """Lease the asking node a subnet of a network (the one it holds, if any)."""
        node_id = str(req.get("node_id") or "")
        network = check_network_name(str(req.get("network") or ""))
        underlay = str(req.get("underlay") or "")
        try:
            ipaddress.IPv4Address(underlay)
        except ValueError:
            raise InvalidRequest(f"underlay address {underlay!r} is not an IPv4 address") from None
        cfg = self.cfg
        payload = ops.NetworkLease(network=network, node_id=node_id, underlay=underlay, cidr=cfg.overlay_cidr,
                                   subnet_prefix=cfg.overlay_subnet_prefix)
        index, value = await self.server.raft.submit(ops.NETWORK_LEASE, payload)
        return {"index": index, "subnet": value["subnet"], "network": network, "cidr": cfg.overlay_cidr,
                "subnet_prefix": cfg.overlay_subnet_prefix, "vni": cfg.overlay_vni, "port": cfg.overlay_port}

    async def leases(self, req: dict[str, Any]) -> dict[str, Any]:
        """Every lease and every node's status: what an agent programs its VXLAN peers from."""
        def read(s: StateSnapshot) -> dict[str, Any]:
            return {"leases": [codec.to_plain(le) for le in s.leases()],
                    "nodes": {n.id: n.status for n in s.nodes()}}

        return await self.ep._blocking(req, ("Network", "Node"), read)

    async def node_purge(self, req: dict[str, Any]) -> dict[str, Any]:
        """Forget a node (Nomad's node purge): its leases are released, its allocations replaced."""
        now = time.time()
        with self.store.reader() as s:
            ids = [n.id for n in s.nodes()]
            if not ids:
                raise NotFound("there are no nodes")
            node_id = resolve_prefix(str(req.get("node_id") or ""), ids, "node")
            evals = node_evals(s, node_id, "node-deregister", now)
        index, value = await self.server.raft.submit(ops.NODE_PURGE, ops.NodePurge(node_id=node_id, evals=evals, now=now))
        return {"index": index, "node_id": node_id, "released": value.get("released", []),
                "eval_ids": [e.id for e in evals]}
