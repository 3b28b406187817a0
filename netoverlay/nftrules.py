"""shoal's one nftables table, rendered from state: published ports, masquerade, isolation.

The whole table is replaced in one ``nft -f`` transaction (``render`` starts by creating
and deleting it, so the file works whether or not it exists, leaves no stale chain behind,
and a file that fails anywhere changes nothing). Nothing here touches the kernel: the
agent renders the text from its allocations and the lease table, ``nft.apply`` loads it.

- ``prerouting`` / ``output`` (nat): a published host port DNATs to the allocation's
  address and port, for traffic from other hosts and from this host itself (``fib daddr
  type local``: any address of this host, loopback included).
- ``postrouting`` (nat): the overlay's traffic leaving the overlay is masqueraded; a
  published port reached from the same subnet (hairpin) or from 127.0.0.0/8 is too, so
  replies come back the way the request went.
- ``forward`` (filter): an allocation on one overlay network cannot reach an address of
  another (each network is the set of its nodes' subnets, cluster-wide).

A chain with nothing to do is left out: every base chain costs each packet that crosses its
hook, empty or not, so ``prerouting``/``output`` exist only while a port is published and
``forward`` only while there are two networks to keep apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TABLE = "shoal"
FAMILY = "ip"
_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(slots=True, frozen=True, order=True)
class PortMapping:
    """A host port published to an allocation: ``host_port`` on this host -> ``address:to_port``."""

    host_port: int
    proto: str  # tcp | udp
    address: str
    to_port: int


@dataclass(slots=True, frozen=True)
class NetworkSubnets:
    """One overlay network and the subnets every node leased on it."""

    name: str
    subnets: tuple[str, ...]


@dataclass(slots=True)
class Ruleset:
    overlay_cidr: str
    local_subnets: tuple[str, ...] = ()  # this node's leases (every network): hairpin masquerade
    ports: list[PortMapping] = field(default_factory=list)
    networks: list[NetworkSubnets] = field(default_factory=list)  # isolation sets; one network: nothing to isolate


def set_name(network: str) -> str:
    """An nftables identifier for a network name (names are free text in job files)."""
    digest = hashlib.sha256(network.encode()).hexdigest()[:8]
    return f"net_{_NAME.sub('_', network)[:32]}_{digest}"


def _elements(items: Iterable[str]) -> str:
    return ", ".join(items)


def render(rs: Ruleset) -> str:
    """The full ``nft -f`` text for ``rs``: deterministic (sorted), so an unchanged state renders the same."""
    lines = [f"table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}", f"table {FAMILY} {TABLE} {{"]
    isolate = [n for n in sorted(rs.networks, key=lambda n: n.name) if n.subnets] if len(rs.networks) > 1 else []
    for net in isolate:
        lines += [f"  set {set_name(net.name)} {{",
                  "    type ipv4_addr; flags interval;",
                  f"    elements = {{ {_elements(sorted(net.subnets))} }}",
                  "  }"]
    dnat = [f"    fib daddr type local {p.proto} dport {p.host_port} dnat to {p.address}:{p.to_port}"
            for p in sorted(set(rs.ports))]
    if dnat:  # an empty base chain still costs every packet its hook (~9% of forwarding here)
        lines += ["  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;", *dnat, "  }"]
        lines += ["  chain output {", "    type nat hook output priority -100; policy accept;", *dnat, "  }"]
    lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
              f"    ip saddr {rs.overlay_cidr} ip daddr != {rs.overlay_cidr} masquerade"]
    for sub in sorted(rs.local_subnets):
        lines.append(f"    ip saddr {sub} ip daddr {sub} ct status dnat masquerade")
    lines += ["    ip saddr 127.0.0.0/8 ct status dnat masquerade", "  }"]
    if isolate:
        lines += ["  chain forward {", "    type filter hook forward priority filter; policy accept;"]
        for net in isolate:
            s = set_name(net.name)
            lines.append(f"    ip saddr @{s} ip daddr {rs.overlay_cidr} ip daddr != @{s} drop")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_delete() -> str:
    """Removes the table, whether or not it exists."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
