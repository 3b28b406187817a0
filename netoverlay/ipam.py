"""Addresses inside a node's leased subnet (``shoal.jobs.network`` leases the subnets).

Pure functions over what is already taken, never a counter: an agent picks addresses from the addresses its own
allocations hold (restored from their state files after a restart), so nothing is handed
out twice. The layout inside a node's subnet follows flannel's vxlan backend::

    10.200.7.0/24     the node's lease
    10.200.7.0/32     the node's VTEP address, on its VXLAN device
    10.200.7.1        the gateway, on the node's bridge
    10.200.7.2 ...    allocations, lowest free first
    10.200.7.255      broadcast, never handed out
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from shoal.jobs.network import parse_cidr

FIRST_HOST_OFFSET = 2  # .0 is the VTEP, .1 the gateway


@dataclass(slots=True, frozen=True)
class SubnetLayout:
    """Where things sit in one node's subnet."""

    subnet: IPv4Network

    @classmethod
    def of(cls, cidr: str) -> SubnetLayout:
        return cls(parse_cidr(cidr, "node subnet"))

    @property
    def vtep(self) -> IPv4Address:
        return self.subnet.network_address

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet.network_address + 1

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def hosts(self) -> Iterable[IPv4Address]:
        first = int(self.subnet.network_address) + FIRST_HOST_OFFSET
        last = int(self.subnet.broadcast_address) - 1
        return (IPv4Address(i) for i in range(first, last + 1))

    def contains(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.subnet
        except ValueError:
            return False


def pick_address(layout: SubnetLayout, used: Iterable[str]) -> str | None:
    """The lowest allocation address of ``layout`` not in ``used``; None when the subnet is full."""
    held = {str(u) for u in used}
    for addr in layout.hosts():
        text = str(addr)
        if text not in held:
            return text
    return None
