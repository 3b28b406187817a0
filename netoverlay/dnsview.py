"""The agent's copy of the service catalog, indexed for DNS answers.

The agent's catalog follower hands ``CatalogView.replace`` the whole catalog every time its
blocking query wakes (a few times a second at most); the DNS server asks it for the healthy
instances of one service on every query it cannot answer from its cache (thousands a second).
So the work goes into ``replace``: it builds, once, every lookup a query can make, the tagged
ones included, as plain dicts of tuples, and a lookup is one dict access.

Only healthy instances are kept: an unhealthy one is never answered, whatever the name form.
Instances without an IPv4 address are left out too: shoal's overlay and hosts are IPv4, and
such an instance could be put in neither an A nor an SRV answer (its target must resolve).
Names are case-insensitive, as DNS is: everything is indexed in lower case.

Pure: no I/O, no clock. Not thread-safe: replace it on the loop that serves the queries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from shoal.jobs.structs import ServiceRegistration

@dataclass(slots=True, frozen=True)
class Instance:
    """One healthy, answerable instance of a service."""

    address: str  # dotted IPv4
    port: int
    alloc_id: str
    node_id: str


NO_INSTANCES: tuple[Instance, ...] = ()


def _ipv4(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True


class CatalogView:
    """Healthy instances by (namespace, service) and by (namespace, service, tag)."""

    __slots__ = ("_index", "_generation", "_services", "_tagged")

    def __init__(self) -> None:
        self._index = 0
        self._generation = 0
        self._services: dict[tuple[str, str], tuple[Instance, ...]] = {}
        self._tagged: dict[tuple[str, str, str], tuple[Instance, ...]] = {}

    @property
    def index(self) -> int:
        """The catalog's Raft index this view was built from."""
        return self._index

    @property
    def generation(self) -> int:
        """Bumped by every ``replace``, even at the same index: what a cache of answers keys on."""
        return self._generation

    def replace(self, registrations: Iterable[ServiceRegistration], index: int) -> None:
        """Become the whole catalog ``registrations`` at Raft index ``index``."""
        services: dict[tuple[str, str], list[Instance]] = {}
        tagged: dict[tuple[str, str, str], list[Instance]] = {}
        for reg in registrations:
            if not reg.healthy or not _ipv4(reg.address):
                continue
            key = (reg.namespace.lower(), reg.service_name.lower())
            inst = Instance(reg.address, reg.port, reg.alloc_id, reg.node_id)
            services.setdefault(key, []).append(inst)
            for tag in {t.lower() for t in reg.tags}:
                tagged.setdefault((*key, tag), []).append(inst)
        self._services = {k: tuple(v) for k, v in services.items()}
        self._tagged = {k: tuple(v) for k, v in tagged.items()}
        self._index = index
        self._generation += 1

    def instances(self, namespace: str, service: str, tag: str = "") -> tuple[Instance, ...]:
        """The healthy instances of ``service`` in ``namespace`` (carrying ``tag`` when given), in
        catalog order; empty when there are none or the service is unknown."""
        if tag:
            return self._tagged.get((namespace.lower(), service.lower(), tag.lower()), NO_INSTANCES)
        return self._services.get((namespace.lower(), service.lower()), NO_INSTANCES)
