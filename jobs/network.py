"""Overlay networks as the servers see them: the cluster's overlay CIDR and how a node's
subnet is leased from it (lowest free first, never one another lease holds).

Pure and shared: the FSM leases with it (deterministically, from the payload's CIDR and
the lease table, so every replica picks the same subnet), the agents lay out their subnet
with ``shoal.netoverlay.ipam``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

from shoal.jobs.model import TaskGroup

DEFAULT_OVERLAY_CIDR = "10.200.0.0/16"
DEFAULT_SUBNET_PREFIX = 24
DEFAULT_NETWORK = "default"
MAX_SUBNET_PREFIX = 29  # .0 VTEP, .1 gateway, at least 5 allocations, broadcast


MODE_HOST, MODE_BRIDGE, MODE_NONE, MODE_OVERLAY = "host", "bridge", "none", "overlay"
NETWORK_MODES = (MODE_HOST, MODE_BRIDGE, MODE_NONE, MODE_OVERLAY)
ISOLATING_DRIVERS = frozenset({"docker", "container", "exec"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_network_name(name: str) -> bool:
    return bool(_NAME.match(name))


def group_network(group: TaskGroup) -> tuple[str, str]:
    """(mode, overlay network) an allocation of ``group`` gets. A group that names no mode is
    bridged when it runs container or exec tasks (they have namespaces to join), else on the host.
    Bridge mode is the default overlay network; overlay mode names one (or the default)."""
    net = group.networks[0] if group.networks else None
    mode = net.mode if net is not None and net.mode else (
        MODE_BRIDGE if any(t.driver in ISOLATING_DRIVERS for t in group.tasks) else MODE_HOST)
    if mode == MODE_BRIDGE:
        return mode, DEFAULT_NETWORK
    if mode == MODE_OVERLAY:
        return mode, (net.name if net is not None and net.name else DEFAULT_NETWORK)
    return mode, ""


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
