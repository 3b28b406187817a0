"""The node's nftables table as a function of what runs here and of the lease table.

Allocations add and remove their published ports, the overlay watch sets the networks'
subnets; every change re-renders the whole table and loads it in one transaction,
coalesced (changes within ``DELAY`` go in one load) and never concurrently. After an agent
restart the table is rebuilt from the restored allocations: nothing is appended to what an
earlier agent left, the table is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from shoal.netoverlay import nftrules

log = structlog.get_logger("shoal.netoverlay.firewall")

DELAY = 0.02  # seconds


class Firewall:
    def __init__(self, overlay_cidr: str, load: Callable[[str], Awaitable[None]]):
        self.overlay_cidr = overlay_cidr
        self._load = load
        self._ports: dict[str, list[nftrules.PortMapping]] = {}
        self._networks: dict[str, tuple[str, ...]] = {}
        self._local: tuple[str, ...] = ()
        self._loaded: str | None = None
        self._pending: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def ruleset(self) -> nftrules.Ruleset:
        return nftrules.Ruleset(
            overlay_cidr=self.overlay_cidr,
            local_subnets=self._local,
            ports=self._winning_ports(),
            networks=[nftrules.NetworkSubnets(n, subs) for n, subs in sorted(self._networks.items())],
        )

    def _winning_ports(self) -> list[nftrules.PortMapping]:
        """One mapping per host port and protocol: the allocation that published it last. The scheduler
        frees a stopping allocation's ports at once, so its successor may publish one before the old
        allocation's tasks are gone; traffic must go to the new one."""
        won: dict[tuple[int, str], nftrules.PortMapping] = {}
        for ports in self._ports.values():  # in publishing order
            for p in ports:
                won[(p.host_port, p.proto)] = p
        return list(won.values())

    def render(self) -> str:
        return nftrules.render(self.ruleset())

    # --- changes; each returns once the table that includes it is loaded ---
    async def publish(self, alloc_id: str, ports: list[nftrules.PortMapping]) -> None:
        self._ports.pop(alloc_id, None)  # re-published: it is the latest publisher again
        self._ports[alloc_id] = list(ports)
        await self._changed()

    async def unpublish(self, alloc_id: str) -> None:
        if self._ports.pop(alloc_id, None) is not None:
            await self._changed()

    async def set_networks(self, networks: dict[str, tuple[str, ...]], local: tuple[str, ...]) -> None:
        if networks == self._networks and local == self._local:
            return
        self._networks, self._local = dict(networks), tuple(sorted(local))
        await self._changed()

    async def _changed(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        """One task loads at a time; changes that arrive meanwhile go in its next round."""
        while self._waiters:
            await asyncio.sleep(DELAY)
            waiters, self._waiters = self._waiters, []
            text = self.render()
            error: Exception | None = None
            try:
                if text != self._loaded:
                    await self._load(text)
                    self._loaded = text
            except Exception as exc:
                log.error("loading shoal's nftables table failed", error=str(exc))
                error = exc
            for w in waiters:
                if w.done():
                    continue
                if error is None:
                    w.set_result(None)
                else:
                    w.set_exception(error)

    async def close(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending
