"""What a node's VXLAN device must know of its peers: flannel's "vxlan" backend, as data.

For every other node with a subnet lease, three static entries (learning is off); a node has one
VTEP (its device, at the first address of its default network's subnet) and its other networks'
subnets are routed through it:

- neighbour: the peer's VTEP address -> the peer's VTEP MAC, on our VXLAN device (no ARP
  crosses the overlay);
- FDB: the peer's VTEP MAC -> the peer's underlay address (where to send the UDP);
- route: the peer's subnet via the peer's VTEP address, onlink, on our VXLAN device.

VTEP MACs are derived from VTEP addresses (``vtep_mac``), so the lease table alone tells
every node everything; nothing else travels. ``diff`` turns the wanted set and what the
kernel has into the adds and removes that make them equal: the I/O shell applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from shoal.netoverlay.ipam import SubnetLayout


def vtep_mac(vtep: str) -> str:
    """A locally administered unicast MAC for a VTEP address: 0e:5e:a.b.c.d in hex."""
    octets = IPv4Address(vtep).packed
    return "0e:5e:" + ":".join(f"{b:02x}" for b in octets)


@dataclass(slots=True, frozen=True)
class Peer:
    """Another node of the overlay: its id, where its VXLAN traffic goes, its subnet."""

    node_id: str
    underlay: str  # the peer host's address that VXLAN UDP is sent to
    subnet: str  # one of its leased CIDRs
    vtep_subnet: str = ""  # the lease whose first address is its VTEP (its default network's); "": subnet


@dataclass(slots=True, frozen=True, order=True)
class Neigh:
    address: str  # the peer's VTEP address
    mac: str


@dataclass(slots=True, frozen=True, order=True)
class Fdb:
    mac: str
    dst: str  # the peer's underlay address


@dataclass(slots=True, frozen=True, order=True)
class Route:
    subnet: str
    via: str  # the peer's VTEP address


@dataclass(slots=True)
class PeerEntries:
    neighs: set[Neigh] = field(default_factory=set)
    fdbs: set[Fdb] = field(default_factory=set)
    routes: set[Route] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.neighs) + len(self.fdbs) + len(self.routes)


def wanted(self_node: str, self_underlay: str, peers: Iterable[Peer]) -> PeerEntries:
    """The entries our device needs for ``peers`` (ourselves, and peers sharing our underlay address,
    left out: a stale lease of a re-registered host must not shadow it)."""
    out = PeerEntries()
    for p in sorted(peers, key=lambda p: p.node_id):
        if p.node_id == self_node or not p.subnet or not p.underlay or p.underlay == self_underlay:
            continue
        vtep = str(SubnetLayout.of(p.vtep_subnet or p.subnet).vtep)
        mac = vtep_mac(vtep)
        out.neighs.add(Neigh(vtep, mac))
        out.fdbs.add(Fdb(mac, p.underlay))
        out.routes.add(Route(str(SubnetLayout.of(p.subnet).subnet), vtep))
    return out


@dataclass(slots=True)
class EntryDiff:
    add: PeerEntries = field(default_factory=PeerEntries)
    remove: PeerEntries = field(default_factory=PeerEntries)

    def empty(self) -> bool:
        return not len(self.add) and not len(self.remove)


def diff(want: PeerEntries, have: PeerEntries) -> EntryDiff:
    """What to add and remove so that ``have`` becomes ``want``. An FDB entry or route whose key
    (MAC, subnet) points elsewhere now is removed and added again."""
    return EntryDiff(
        add=PeerEntries(want.neighs - have.neighs, want.fdbs - have.fdbs, want.routes - have.routes),
        remove=PeerEntries(have.neighs - want.neighs, have.fdbs - want.fdbs, have.routes - want.routes),
    )
