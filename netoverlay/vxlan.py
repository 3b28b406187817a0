"""The node's VXLAN device and its static peer entries, through pyroute2 (the I/O shell
around ``vxlan_plan``).

One device per node (``shoal.vx`` by default): learning off, the node's VTEP address as
a /32, its MAC derived from that address, MTU 50 bytes below the underlay's. ``sync``
reads what the kernel holds for the device, diffs it against the wanted entries and
applies only the difference, so calling it again changes nothing and a restarted agent
rebuilds nothing twice.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from shoal.netoverlay.ipam import SubnetLayout
from shoal.netoverlay.vxlan_plan import EntryDiff, Fdb, Neigh, PeerEntries, Route, diff, vtep_mac

log = structlog.get_logger("shoal.netoverlay.vxlan")

DEFAULT_DEVICE = "shoal.vx"
DEFAULT_VNI = 4200
DEFAULT_PORT = 4789
VXLAN_OVERHEAD = 50  # outer Ethernet + IP + UDP + VXLAN headers
RTNH_F_ONLINK = 4
MAIN_TABLE = 254


class NetworkSetupError(RuntimeError):
    """The kernel refused a network change; the message says which and why."""


@dataclass(slots=True, frozen=True)
class VxlanConfig:
    device: str = DEFAULT_DEVICE
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT


@dataclass(slots=True, frozen=True)
class Underlay:
    """Where this node's VXLAN traffic leaves: the interface and address peers send to."""

    ifname: str
    address: str
    mtu: int


def find_underlay(ipr: IPRoute, address: str) -> Underlay:
    """The interface that holds ``address`` on this host."""
    for msg in ipr.get_addr(family=2):
        if msg.get_attr("IFA_ADDRESS") == address:
            link = ipr.get_links(msg["index"])[0]
            return Underlay(link.get_attr("IFLA_IFNAME"), address, int(link.get_attr("IFLA_MTU")))
    raise NetworkSetupError(f"no interface of this host has the address {address} (the node's underlay address)")


def source_address_to(ipr: IPRoute, destination: str) -> str:
    """This host's address on the way to ``destination`` (the kernel's route lookup)."""
    for r in ipr.route("get", dst=destination):
        src = r.get_attr("RTA_PREFSRC")
        if src:
            return str(src)
    raise NetworkSetupError(f"no route from this host to {destination}: give the agent --network-address")


class VxlanDevice:
    def __init__(self, ipr: IPRoute, cfg: VxlanConfig, underlay: Underlay, subnet: str):
        self.ipr = ipr
        self.cfg = cfg
        self.underlay = underlay
        self.layout = SubnetLayout.of(subnet)
        self.index = 0

    @property
    def mtu(self) -> int:
        return self.underlay.mtu - VXLAN_OVERHEAD

    def ensure(self) -> int:
        """Create the device (or adopt one that matches) and bring it up; returns its index."""
        vtep = str(self.layout.vtep)
        mac = vtep_mac(vtep)
        found = self.ipr.link_lookup(ifname=self.cfg.device)
        if found and not self._matches(found[0], mac):
            log.info("replacing a VXLAN device that does not match this node's lease", device=self.cfg.device)
            self.ipr.link("del", index=found[0])
            found = []
        if not found:
            lower = self.ipr.link_lookup(ifname=self.underlay.ifname)
            if not lower:
                raise NetworkSetupError(f"underlay interface {self.underlay.ifname!r} is gone")
            try:
                self.ipr.link("add", ifname=self.cfg.device, kind="vxlan", vxlan_id=self.cfg.vni,
                              vxlan_port=self.cfg.port, vxlan_local=self.underlay.address, vxlan_learning=0,
                              vxlan_link=lower[0], address=mac, mtu=self.mtu)
            except NetlinkError as exc:
                raise NetworkSetupError(f"cannot create VXLAN device {self.cfg.device} (VNI {self.cfg.vni}, UDP port "
                                        f"{self.cfg.port}): {exc}") from None
            found = self.ipr.link_lookup(ifname=self.cfg.device)
        self.index = found[0]
        addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(index=self.index, family=2)}
        for addr, plen in addrs - {(vtep, 32)}:
            self.ipr.addr("del", index=self.index, address=addr, prefixlen=plen)
        if (vtep, 32) not in addrs:
            self.ipr.addr("add", index=self.index, address=vtep, prefixlen=32)
        self.ipr.link("set", index=self.index, state="up")
        return self.index

    def _matches(self, index: int, mac: str) -> bool:
        link = self.ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return False
        data = info.get_attr("IFLA_INFO_DATA")
        return (data.get_attr("IFLA_VXLAN_ID") == self.cfg.vni and data.get_attr("IFLA_VXLAN_PORT") == self.cfg.port
                and data.get_attr("IFLA_VXLAN_LOCAL") == self.underlay.address
                and link.get_attr("IFLA_ADDRESS") == mac and link.get_attr("IFLA_MTU") == self.mtu)

    # --- peer entries ---
    def entries(self) -> PeerEntries:
        """What the kernel holds for our peers on this device now."""
        out = PeerEntries()
        for n in self.ipr.get_neighbours(ifindex=self.index, family=2):
            if n["state"] & ndmsg.NUD_PERMANENT and n.get_attr("NDA_LLADDR"):
                out.neighs.add(Neigh(n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")))
        for f in self.ipr.fdb("dump", ifindex=self.index):
            dst = f.get_attr("NDA_DST")
            if dst and f["ifindex"] == self.index:
                out.fdbs.add(Fdb(f.get_attr("NDA_LLADDR"), dst))
        for r in self.ipr.get_routes(family=2, oif=self.index, table=MAIN_TABLE):
            via = r.get_attr("RTA_GATEWAY")
            if via and r.get_attr("RTA_OIF") == self.index:
                out.routes.add(Route(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", via))
        return out

    def sync(self, want: PeerEntries) -> EntryDiff:
        """Make the device's peer entries exactly ``want``; returns what changed."""
        d = diff(want, self.entries())
        for r in sorted(d.remove.routes):
            self._quiet("route del", self.ipr.route, "del", dst=r.subnet, gateway=r.via, oif=self.index)
        for f in sorted(d.remove.fdbs):
            self._quiet("fdb del", self.ipr.fdb, "del", ifindex=self.index, lladdr=f.mac, dst=f.dst)
        for n in sorted(d.remove.neighs):
            self._quiet("neigh del", self.ipr.neigh, "del", dst=n.address, lladdr=n.mac, ifindex=self.index)
        for n in sorted(d.add.neighs):
            self.ipr.neigh("replace", dst=n.address, lladdr=n.mac, ifindex=self.index, state=ndmsg.NUD_PERMANENT)
        for f in sorted(d.add.fdbs):
            self._quiet("fdb append", self.ipr.fdb, "append", ifindex=self.index, lladdr=f.mac, dst=f.dst)
        for r in sorted(d.add.routes):
            self.ipr.route("replace", dst=r.subnet, gateway=r.via, oif=self.index, flags=RTNH_F_ONLINK)
        if not d.empty():
            log.info("overlay peers updated", added=len(d.add), removed=len(d.remove))
        return d

    def _quiet(self, what: str, fn, *args, **kwargs) -> None:
        """A remove of something already gone, or an add of something already there, is not an error."""
        try:
            fn(*args, **kwargs)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EEXIST):
                raise NetworkSetupError(f"{what} on {self.cfg.device}: {exc}") from None

    def remove(self) -> None:
        """Delete the device: its address, neighbours, FDB entries and routes go with it."""
        for index in self.ipr.link_lookup(ifname=self.cfg.device):
            self.ipr.link("del", index=index)
        self.index = 0
