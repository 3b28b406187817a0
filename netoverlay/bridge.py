"""A node's bridges and allocations' network namespaces, through pyroute2.

Per overlay network a node has one bridge carrying the gateway address of its subnet
(``shoal0`` for the default network). Each allocation in bridge or overlay mode gets a
network namespace of its own, shared by all its tasks (a pod): a veth pair, one end on the
bridge, the other as ``eth0`` inside with the allocation's address, the gateway as its
default route, the overlay's MTU. Every step is idempotent: an agent restarted with its
allocations still running adopts what is there instead of building it twice.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from shoal.netoverlay import netns
from shoal.netoverlay.ipam import SubnetLayout
from shoal.netoverlay.vxlan import DEFAULT_DEVICE, NetworkSetupError

log = structlog.get_logger("shoal.netoverlay.bridge")

DEFAULT_BRIDGE = "shoal0"
IFNAME_MAX = 15
INNER_IFNAME = "eth0"


def bridge_name(network: str) -> str:
    """``shoal0`` for the default network, else ``shbr-`` and a digest of the network's name."""
    if network in ("", "default"):
        return DEFAULT_BRIDGE
    return "shbr-" + hashlib.sha256(network.encode()).hexdigest()[:IFNAME_MAX - 5]


def veth_name(alloc_id: str) -> str:
    """The host end of an allocation's veth (15 bytes at most, from the whole allocation id)."""
    return "shv" + hashlib.sha256(alloc_id.encode()).hexdigest()[:IFNAME_MAX - 3]


def netns_name(alloc_id: str) -> str:
    return f"shoal-{alloc_id}"


def ensure_bridge(ipr: IPRoute, name: str, layout: SubnetLayout, mtu: int) -> int:
    """The bridge with the subnet's gateway address, up, forwarding; returns its index."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
        found = ipr.link_lookup(ifname=name)
    index = found[0]
    ipr.link("set", index=index, mtu=mtu)
    gw, plen = str(layout.gateway), layout.prefixlen
    addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)}
    for addr, p in addrs - {(gw, plen)}:
        ipr.addr("del", index=index, address=addr, prefixlen=p)
    if (gw, plen) not in addrs:
        ipr.addr("add", index=index, address=gw, prefixlen=plen)
    ipr.link("set", index=index, state="up")
    netns.interface_sysctl(name, "forwarding", "1")
    netns.interface_sysctl(name, "route_localnet", "1")  # DNAT from 127.0.0.1 to an allocation
    return index


def remove_link(ipr: IPRoute, name: str) -> bool:
    for index in ipr.link_lookup(ifname=name):
        with contextlib.suppress(NetlinkError):
            ipr.link("del", index=index)
            return True
    return False


@dataclass(slots=True, frozen=True)
class AllocNetwork:
    """What one allocation's namespace is wired to."""

    alloc_id: str
    bridge: str
    address: str
    layout: SubnetLayout
    mtu: int

    @property
    def netns(self) -> str:
        return netns_name(self.alloc_id)

    @property
    def veth(self) -> str:
        return veth_name(self.alloc_id)


def setup_alloc(ipr: IPRoute, net: AllocNetwork) -> str:
    """Build (or adopt) the allocation's namespace and veth; returns the namespace's path."""
    path = netns.create(net.netns)
    bridges = ipr.link_lookup(ifname=net.bridge)
    if not bridges:
        raise NetworkSetupError(f"bridge {net.bridge} is missing")
    host = ipr.link_lookup(ifname=net.veth)
    with netns.ipr_in(path) as inner:
        if not host or not inner.link_lookup(ifname=INNER_IFNAME):
            for index in host:  # half a pair from an interrupted setup
                ipr.link("del", index=index)
            peer = f"{net.veth[:-1]}p"
            ipr.link("add", ifname=net.veth, kind="veth", peer={"ifname": peer}, mtu=net.mtu)
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=str(path))
            moved = inner.link_lookup(ifname=peer)[0]
            inner.link("set", index=moved, ifname=INNER_IFNAME, mtu=net.mtu)
            host = ipr.link_lookup(ifname=net.veth)
        ipr.link("set", index=host[0], master=bridges[0], mtu=net.mtu, state="up")
        eth = inner.link_lookup(ifname=INNER_IFNAME)[0]
        inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
        plen = net.layout.prefixlen
        addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in inner.get_addr(index=eth, family=2)}
        for addr, p in addrs - {(net.address, plen)}:
            inner.addr("del", index=eth, address=addr, prefixlen=p)
        if (net.address, plen) not in addrs:
            inner.addr("add", index=eth, address=net.address, prefixlen=plen)
        inner.link("set", index=eth, state="up")
        inner.route("replace", dst="0.0.0.0/0", gateway=str(net.layout.gateway), oif=eth)
    return str(path)


def teardown_alloc(ipr: IPRoute, alloc_id: str) -> None:
    """Remove the allocation's veth and namespace (its processes must be gone first)."""
    remove_link(ipr, veth_name(alloc_id))
    netns.remove(netns_name(alloc_id))


def remove_leftovers(ipr: IPRoute, alloc_ids: list[str], *, node: bool) -> None:
    """What a dead agent may have left in this namespace: its allocations' veths and namespaces, and with
    ``node`` its own default bridge and VXLAN device (a cleanup tool's step, never the agent's)."""
    for alloc_id in alloc_ids:
        remove_link(ipr, veth_name(alloc_id))
        if netns.path_of(netns_name(alloc_id)).exists():
            netns.remove(netns_name(alloc_id))
    if node:
        remove_link(ipr, DEFAULT_BRIDGE)
        remove_link(ipr, DEFAULT_DEVICE)
