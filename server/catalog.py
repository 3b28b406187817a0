"""RPC endpoints of the service catalog: agents write their allocations' registrations; users
and agents read them, as blocking queries.

- ``Service.Sync`` (an agent): set the registrations of some allocations of its node.
- ``Service.List``: the services of a namespace (``*``: all) with their tags (Nomad's
  ``/v1/services`` shape: one entry per namespace).
- ``Service.Info``: the instances of one service (Nomad's ``/v1/service/NAME``).
- ``Service.Catalog``: every registration of every namespace: what an agent's DNS view follows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shoal import codec
from shoal.errors import InvalidRequest, NotFound
from shoal.ids import ALL_NAMESPACES
from shoal.jobs.structs import ServiceRegistration, service_name_error
from shoal.raft import ops
from shoal.raft.state import StateSnapshot

if TYPE_CHECKING:
    from shoal.server.endpoints import Endpoints

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_ALLOCS = 1024  # allocations in one sync
MAX_REGISTRATIONS = 64  # registrations of one allocation
MAX_TAGS = 64
MAX_TEXT = 255  # any one string of a registration


def check_registration(reg: ServiceRegistration, alloc_id: str) -> None:
    """Refuse what the DNS server and the CLI could not serve: bad names, addresses, ports, sizes."""
    why = service_name_error(reg.service_name)
    if why is not None:
        raise InvalidRequest(f"registration {reg.id!r}: {why}")
    if reg.alloc_id != alloc_id:
        raise InvalidRequest(f"registration {reg.id!r} belongs to allocation {reg.alloc_id!r}, not {alloc_id!r}")
    if not reg.id or any(len(s) > MAX_TEXT for s in (reg.id, reg.task, reg.datacenter, *reg.tags, *reg.checks)):
        raise InvalidRequest(f"registration {reg.id!r}: an empty id, or a name, tag or check over {MAX_TEXT} characters")
    if len(reg.tags) > MAX_TAGS or len(reg.checks) > MAX_REGISTRATIONS:
        raise InvalidRequest(f"registration {reg.id!r}: more than {MAX_TAGS} tags or {MAX_REGISTRATIONS} checks")
    try:
        ipaddress.IPv4Address(reg.address)
    except ValueError:
        raise InvalidRequest(f"registration {reg.id!r}: address {reg.address!r} is not an IPv4 address") from None
    if not 0 < reg.port <= 65535:
        raise InvalidRequest(f"registration {reg.id!r}: port {reg.port} is not 1-65535")


class CatalogEndpoints:
    def __init__(self, endpoints: Endpoints):
        self.ep = endpoints
        self.server = endpoints.server
        self.store = endpoints.store

    def writes(self) -> dict[str, Handler]:
        return {"Service.Sync": self.sync}

    def reads(self) -> dict[str, Handler]:
        return {"Service.List": self.list, "Service.Info": self.info, "Service.Catalog": self.catalog}

    async def sync(self, req: dict[str, Any]) -> dict[str, Any]:
        node_id = str(req.get("node_id") or "")
        raw = req.get("allocs") or []
        if not isinstance(raw, list) or len(raw) > MAX_ALLOCS:
            raise InvalidRequest(f"allocs: a list of at most {MAX_ALLOCS} allocations")
        try:
            entries = [codec.from_plain(ops.AllocServices, e) for e in raw]
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed registrations: {exc}") from None
        with self.store.reader() as s:
            if s.node(node_id) is None:
                raise NotFound(f"node {node_id!r} is not registered")
        for e in entries:
            if len(e.registrations) > MAX_REGISTRATIONS:
                raise InvalidRequest(f"allocation {e.alloc_id}: more than {MAX_REGISTRATIONS} registrations")
            for reg in e.registrations:
                check_registration(reg, e.alloc_id)
        index, value = await self.server.raft.submit(ops.SERVICE_SYNC, ops.ServiceSync(node_id=node_id, allocs=entries))
        return {"index": index, **value}

    async def list(self, req: dict[str, Any]) -> dict[str, Any]:
        namespace = self.ep._namespace(req)

        def read(s: StateSnapshot) -> dict[str, Any]:
            by_ns: dict[str, dict[str, set[str]]] = {}
            for r in s.services(None if namespace == ALL_NAMESPACES else namespace):
                by_ns.setdefault(r.namespace, {}).setdefault(r.service_name, set()).update(r.tags)
            return {"namespaces": [{"namespace": ns, "services": [{"service_name": name, "tags": sorted(tags)}
                                                                   for name, tags in sorted(services.items())]}
                                   for ns, services in sorted(by_ns.items())]}

        return await self.ep._blocking(req, ("Service",), read)

    async def info(self, req: dict[str, Any]) -> dict[str, Any]:
        namespace = self.ep._namespace(req)
        name = str(req.get("name") or "")
        if not name:
            raise InvalidRequest("a service name is needed")

        def read(s: StateSnapshot) -> dict[str, Any]:
            regs = s.services(None if namespace == ALL_NAMESPACES else namespace, name)
            nodes = {r.node_id: s.node(r.node_id) for r in regs}
            return {"registrations": [{**codec.to_plain(r), "node_name": n.name if (n := nodes[r.node_id]) else ""}
                                      for r in regs]}

        return await self.ep._blocking(req, ("Service",), read)

    async def catalog(self, req: dict[str, Any]) -> dict[str, Any]:
        def read(s: StateSnapshot) -> dict[str, Any]:
            return {"registrations": [codec.to_plain(r) for r in s.services()]}

        return await self.ep._blocking(req, ("Service",), read)
