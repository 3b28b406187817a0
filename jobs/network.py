"""Overlay networks as the servers see them: the cluster's overlay CIDR and how a node's
subnet is leased from it (lowest free first, never one another lease holds).

Pure and shared: the FSM leases with it (deterministically, from the payload's CIDR and
the lease table, so every replica picks the same subnet), the agents lay out their subnet
with ``shoal.netoverlay.ipam``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

DEFAULT_OVERLAY_CIDR = "10.200.0.0/16"
DEFAULT_SUBNET_PREFIX = 24
DEFAULT_NETWORK = "default"
MAX_SUBNET_PREFIX = 29  # .0 VTEP, .1 gateway, at least 5 allocations, broadcast


class IpamError(ValueError):
    """A CIDR or prefix that cannot work; the message names it."""


def parse_cidr(text: str, what: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=True)
    except ValueError as exc:
        raise IpamError(f"{what} {text!r}: {exc}") from None


@dataclass(slots=True, frozen=True)
class OverlayConfig:
    cidr: str = DEFAULT_OVERLAY_CIDR
    subnet_prefix: int = DEFAULT_SUBNET_PREFIX

    def network(self) -> IPv4Network:
        return parse_cidr(self.cidr, "overlay CIDR")

    def check(self) -> None:
        net = self.network()
        if not net.prefixlen < self.subnet_prefix <= MAX_SUBNET_PREFIX:
            raise IpamError(f"overlay subnet prefix /{self.subnet_prefix} must be longer than the overlay CIDR "
                            f"{net} and at most /{MAX_SUBNET_PREFIX}")


def lease_subnet(cfg: OverlayConfig, taken: Iterable[str]) -> str | None:
    """The lowest subnet of ``cfg`` not in ``taken`` (CIDR strings); None when the overlay is full."""
    used = {str(t) for t in taken}
    for sub in cfg.network().subnets(new_prefix=cfg.subnet_prefix):
        text = str(sub)
        if text not in used:
            return text
    return None
