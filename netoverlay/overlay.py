"""This node's place on the overlay: its leases, VXLAN device, bridges, peers and addresses.

``NodeOverlay`` is the agent's side of flannel's vxlan backend. At start it leases the
node's subnet of the default network from the servers (the lease outlives agent restarts),
builds the VXLAN device and the default bridge, then follows the lease table with a
blocking query and re-syncs the device's peer entries and the firewall's network sets on
every change (within a second of a node joining, moving or leaving). Named overlay
networks are leased on first use. Allocation addresses are handed out from the addresses
live allocations hold (restored allocations claim theirs first), never from a counter.

All kernel work runs on one thread of its own, in order; the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from pyroute2 import IPRoute

from shoal.jobs.network import DEFAULT_NETWORK
from shoal import codec
from shoal.jobs.structs import NODE_DOWN, SubnetLease
from shoal.netoverlay import bridge, netns, nft
from shoal.netoverlay.firewall import Firewall
from shoal.netoverlay.ipam import SubnetLayout, pick_address
from shoal.netoverlay.nftrules import PortMapping
from shoal.netoverlay.vxlan import (
    DEFAULT_DEVICE,
    VXLAN_OVERHEAD,
    NetworkSetupError,
    Underlay,
    VxlanConfig,
    VxlanDevice,
    find_underlay,
)
from shoal.netoverlay.vxlan_plan import Peer, wanted

log = structlog.get_logger("shoal.netoverlay")

Call = Callable[[str, dict[str, Any], float], Awaitable[dict[str, Any]]]
T = TypeVar("T")
WATCH_WAIT = 30.0
LOOPBACK_MTU = 1500  # a dev agent's bridge: no encapsulation
RETRY = 0.5


@dataclass(slots=True, frozen=True)
class Attachment:
    """Where an allocation on ``network`` plugs in on this node."""

    network: str
    bridge: str
    layout: SubnetLayout
    mtu: int


def peers_from(leases: list[SubnetLease], node_status: dict[str, str]) -> list[Peer]:
    """Every lease of a node that exists, is not down (its host may be gone: route nothing to it) and
    has its default lease (its VTEP: every subnet of the node is routed through it)."""
    vteps = {le.node_id: le.subnet for le in leases if le.network == DEFAULT_NETWORK}
    return [Peer(le.node_id, le.underlay, le.subnet, vteps[le.node_id]) for le in leases
            if le.node_id in vteps and node_status.get(le.node_id, NODE_DOWN) != NODE_DOWN]


def network_sets(leases: list[SubnetLease]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for le in leases:
        out.setdefault(le.network, []).append(le.subnet)
    return {n: tuple(sorted(s)) for n, s in out.items()}


@dataclass(slots=True)
class _Book:
    """Addresses held on one network of this node: address -> allocation id."""

    held: dict[str, str] = field(default_factory=dict)


class NodeOverlay:
    def __init__(self, call: Call, node_id: str, underlay_address: str, *, state_file: Path | None = None,
                 device: str = DEFAULT_DEVICE):
        self.call = call
        self.node_id = node_id
        self.underlay_address = underlay_address
        self.device_name = device
        self.state_file = state_file
        self.cidr = ""
        self.vxlan = VxlanConfig(device=device)
        self.firewall: Firewall | None = None
        self._subnets: dict[str, str] = {}  # network -> this node's lease, as last answered (kept in state_file)
        self._firewall_ready = asyncio.Event()
        self._load_state()
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-net")
        self._ipr: IPRoute | None = None
        self._underlay: Underlay | None = None
        self._device: VxlanDevice | None = None
        self._attachments: dict[str, Attachment] = {}
        self._books: dict[str, _Book] = {}
        self._watch: asyncio.Task[None] | None = None
        self._lease_lock = asyncio.Lock()
        self.synced = asyncio.Event()  # the first peer sync after start is done

    @property
    def single_host(self) -> bool:
        """A node on loopback (a dev agent) has no peers: no VXLAN device, bridges only."""
        return ipaddress.IPv4Address(self.underlay_address).is_loopback

    # --- the network thread ---
    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn)

    def _ip(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = netns.Route()
        return self._ipr

    # --- what the last leases said (a restarted agent rebuilds its allocations' networks without a server) ---
    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            saved = json.loads(self.state_file.read_text())
            self._settings(str(saved["cidr"]), int(saved["vni"]), int(saved["port"]))
            self._subnets = {str(k): str(v) for k, v in saved["subnets"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring an unreadable overlay state file", path=str(self.state_file), error=str(exc))

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cidr": self.cidr, "vni": self.vxlan.vni, "port": self.vxlan.port,
                                   "subnets": self._subnets}))
        os.replace(tmp, self.state_file)

    def _settings(self, cidr: str, vni: int, port: int) -> None:
        self.cidr = cidr
        self.vxlan = VxlanConfig(device=self.device_name, vni=vni, port=port)
        if self.firewall is None:
            self.firewall = Firewall(cidr, lambda text: self._run(lambda: nft.load(text)))
            self._firewall_ready.set()

    async def publish(self, alloc_id: str, ports: list[PortMapping]) -> None:
        """Publish an allocation's host ports (waits for the cluster's overlay settings, once)."""
        await self._firewall_ready.wait()
        assert self.firewall is not None
        await self.firewall.publish(alloc_id, ports)

    async def unpublish(self, alloc_id: str) -> None:
        if self.firewall is not None:
            await self.firewall.unpublish(alloc_id)

    # --- lifecycle ---
    async def start(self) -> None:
        """Lease (or confirm) the default subnet, build the device and bridge, follow the lease table."""
        self._subnets.pop(DEFAULT_NETWORK, None)  # ask the servers again: the underlay address may have moved
        self._attachments.pop(DEFAULT_NETWORK, None)
        att = await self.attach(DEFAULT_NETWORK)
        log.info("overlay up", node_id=self.node_id, subnet=str(att.layout.subnet), vtep=str(att.layout.vtep),
                 device=self.device_name, vni=self.vxlan.vni, port=self.vxlan.port)
        self._watch = asyncio.get_running_loop().create_task(self._follow_leases(), name="overlay-watch")

    async def stop(self, *, leave: bool) -> None:
        """Stop following the cluster; with ``leave`` also remove the device, bridges and table
        (the agent leaves the cluster with nothing of its own running)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.firewall is not None:
            await self.firewall.close()
        if leave:
            await self._run(self._remove_all)
            log.info("left the overlay: VXLAN device, bridges and nftables table removed", node_id=self.node_id)
        await self._run(self._close_ipr)
        self._exec.shutdown(wait=True)

    def _remove_all(self) -> None:
        """The device and every bridge this node had (by name: an earlier agent process may have made them)."""
        ipr = self._ip()
        for index in ipr.link_lookup(ifname=self.device_name):
            ipr.link("del", index=index)
        for network in set(self._subnets) | set(self._attachments) | {DEFAULT_NETWORK}:
            bridge.remove_link(ipr, bridge.bridge_name(network))
        nft.remove()

    def _close_ipr(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    # --- networks ---
    async def attach(self, network: str) -> Attachment:
        """The node's attachment to ``network``: leased from the servers and built on first use."""
        network = network or DEFAULT_NETWORK
        if network in self._attachments:
            return self._attachments[network]
        async with self._lease_lock:
            if network in self._attachments:
                return self._attachments[network]
            subnet = self._subnets.get(network)
            if subnet is None:
                resp = await self._lease(network)
                self._settings(str(resp["cidr"]), int(resp["vni"]), int(resp["port"]))
                subnet = self._subnets[network] = str(resp["subnet"])
                self._save_state()
            layout = SubnetLayout.of(subnet)
            att = await self._run(lambda: self._build(network, layout))
            self._attachments[network] = att
            self._books.setdefault(network, _Book())
            return att

    async def _lease(self, network: str) -> dict[str, Any]:
        while True:
            try:
                return await self.call("Network.Lease", {"node_id": self.node_id, "network": network,
                                                         "underlay": self.underlay_address}, 15.0)
            except Exception as exc:  # servers unreachable or no leader yet: the lease is worth waiting for
                log.warning("leasing an overlay subnet failed; retrying", network=network, error=str(exc))
                await asyncio.sleep(RETRY)

    def _build(self, network: str, layout: SubnetLayout) -> Attachment:
        ipr = self._ip()
        if self._underlay is None:
            self._underlay = find_underlay(ipr, self.underlay_address)
            netns.interface_sysctl(self._underlay.ifname, "forwarding", "1")
        if network == DEFAULT_NETWORK and not self.single_host:
            self._device = VxlanDevice(ipr, self.vxlan, self._underlay, str(layout.subnet))
            self._device.ensure()
            netns.interface_sysctl(self.vxlan.device, "forwarding", "1")
        mtu = LOOPBACK_MTU if self.single_host else self._underlay.mtu - VXLAN_OVERHEAD
        name = bridge.bridge_name(network)
        bridge.ensure_bridge(ipr, name, layout, mtu)
        return Attachment(network, name, layout, mtu)

    # --- peers ---
    async def _follow_leases(self) -> None:
        index = 0
        while True:
            try:
                resp = await self.call("Network.Leases", {"min_index": index, "wait": WATCH_WAIT}, WATCH_WAIT + 10.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following overlay leases failed; retrying", error=str(exc))
                await asyncio.sleep(RETRY)
                continue
            index = int(resp.get("index") or 0)
            leases = [codec.from_plain(SubnetLease, le) for le in resp.get("leases") or ()]
            status = {str(k): str(v) for k, v in (resp.get("nodes") or {}).items()}
            try:
                await self.apply_leases(leases, status)
            except (NetworkSetupError, OSError) as exc:
                log.error("updating overlay peers failed", error=str(exc))
                await asyncio.sleep(RETRY)

    async def apply_leases(self, leases: list[SubnetLease], status: dict[str, str]) -> None:
        peers = peers_from(leases, status)
        if self._device is not None:
            device = self._device
            await self._run(lambda: device.sync(wanted(self.node_id, self.underlay_address, peers)))
        if self.firewall is not None:
            local = tuple(le.subnet for le in leases if le.node_id == self.node_id)
            await self.firewall.set_networks(network_sets(leases), local)
        self.synced.set()

    # --- addresses ---
    def claim(self, network: str, alloc_id: str, address: str) -> bool:
        """A restored allocation takes back the address it had; False if another holds it."""
        book = self._books.setdefault(network or DEFAULT_NETWORK, _Book())
        holder = book.held.get(address)
        if holder is not None and holder != alloc_id:
            return False
        book.held[address] = alloc_id
        return True

    def allocate(self, att: Attachment, alloc_id: str) -> str:
        book = self._books.setdefault(att.network, _Book())
        for addr, holder in book.held.items():
            if holder == alloc_id:
                return addr
        addr = pick_address(att.layout, book.held)
        if addr is None:
            raise NetworkSetupError(f"no free address left in {att.layout.subnet} (network {att.network!r})")
        book.held[addr] = alloc_id
        return addr

    def release(self, alloc_id: str) -> None:
        for book in self._books.values():
            for addr in [a for a, holder in book.held.items() if holder == alloc_id]:
                del book.held[addr]

    # --- allocation namespaces (on the network thread) ---
    async def setup_alloc(self, net: bridge.AllocNetwork) -> str:
        return await self._run(lambda: bridge.setup_alloc(self._ip(), net))

    async def teardown_alloc(self, alloc_id: str) -> None:
        await self._run(lambda: bridge.teardown_alloc(self._ip(), alloc_id))

    async def isolated_netns(self, alloc_id: str) -> str:
        """A namespace with loopback only (``mode = "none"``)."""
        def build() -> str:
            path = netns.create(bridge.netns_name(alloc_id))
            with netns.ipr_in(path) as inner:
                inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
            return str(path)

        return await self._run(build)
