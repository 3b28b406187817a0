"""The agent's two links to the service catalog.

- ``ServiceSyncer`` pushes what this node's allocations want registered: each allocation's
  services hook sets the whole set it wants (``set``), a burst of changes goes to the servers
  as one ``Service.Sync``, and a failed push is retried with everything still wanted. The
  servers keep a set only while its allocation serves, so a set that is refused is forgotten.
- ``CatalogFollower`` keeps this node's copy of the whole catalog (the DNS server's view) up
  to date with a blocking query on ``Service.Catalog``: a change wakes it, nothing polls, and
  no DNS query ever goes to a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from shoal import codec
from shoal.jobs.structs import ServiceRegistration

log = structlog.get_logger("shoal.agent.catalog")

Call = Callable[..., Awaitable[dict[str, Any]]]
COALESCE = 0.02  # seconds: changes within this go in one write
WATCH_WAIT = 30.0


class View(Protocol):
    def replace(self, registrations: list[ServiceRegistration], index: int) -> None: ...


class ServiceSyncer:
    def __init__(self, call: Call, node_id: str):
        self.call = call
        self.node_id = node_id
        self._wanted: dict[str, list[ServiceRegistration]] = {}
        self._dirty: set[str] = set()
        self._event = asyncio.Event()

    def set(self, alloc_id: str, registrations: list[ServiceRegistration]) -> None:
        """The allocation's registrations should now be exactly these (empty: none)."""
        if alloc_id in self._wanted and self._wanted[alloc_id] == registrations and alloc_id not in self._dirty:
            return
        self._wanted[alloc_id] = list(registrations)
        self._dirty.add(alloc_id)
        self._event.set()

    def resync(self) -> None:
        """Push every wanted set again (the node registered anew: the servers may have dropped them)."""
        self._dirty |= set(self._wanted)
        if self._dirty:
            self._event.set()

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    async def run(self) -> None:
        """Push changes as they come; raises (for the caller's retry with backoff) when a push fails."""
        while True:
            await self._event.wait()
            self._event.clear()
            await asyncio.sleep(COALESCE)
            batch, self._dirty = self._dirty, set()
            sets = {a: self._wanted[a] for a in batch if a in self._wanted}
            if not sets:
                continue
            try:
                resp = await self.call("Service.Sync", {
                    "node_id": self.node_id,
                    "allocs": [{"alloc_id": a, "registrations": [codec.to_plain(r) for r in regs]}
                               for a, regs in sets.items()]})
            except BaseException:
                self._dirty |= set(sets) - self._dirty  # still wanted, unless something newer came
                self._event.set()
                raise
            for alloc_id in resp.get("refused") or ():
                log.info("the servers hold no registrations for this allocation any more", alloc_id=alloc_id)
            for alloc_id, regs in sets.items():  # done with: deregistered, or refused for good
                if alloc_id not in self._dirty and (not regs or alloc_id in (resp.get("refused") or ())):
                    self._wanted.pop(alloc_id, None)


class CatalogFollower:
    def __init__(self, call: Call, view: View):
        self.call = call
        self.view = view
        self.index = 0

    async def run(self) -> None:
        while True:
            resp = await self.call("Service.Catalog", {"min_index": self.index, "wait": WATCH_WAIT, "stale": True},
                                   timeout=WATCH_WAIT + 10)
            index = int(resp.get("index") or 0)
            if index != self.index or index == 0:
                regs = [codec.from_plain(ServiceRegistration, r) for r in resp.get("registrations") or ()]
                self.view.replace(regs, index)
            self.index = index
