"""What the agent's DNS server answers: one pure function from a question to a reply.

Names under the cluster domain (``shoal.``), matched case-insensitively:

- ``NAME.service.shoal``, ``TAG.NAME.service.shoal``: A records of the healthy instances of
  service NAME (carrying TAG) in the default namespace; SRV records when SRV is asked.
- ``_NAME._tcp.service.shoal`` (or ``_udp``): the RFC 2782 form of the same lookup.
- ``NAME.service.NAMESPACE.shoal``, ``TAG.NAME.service.NAMESPACE.shoal``: the same, in NAMESPACE.
  The rightmost ``service`` label splits the name, so ``web.service.service.shoal`` is tag
  ``web`` of service ``service``.
- ``HEX.addr.shoal`` (eight hex digits): the IPv4 address they spell. It is the target of every
  SRV record (an SRV target must be a name, not an address), as Consul's ``<hex>.addr.dc1.consul``;
  like Consul, the address is decoded, not looked up, so a target stays resolvable.
- ``shoal.`` itself: its SOA.

Following Consul's ``serviceLookup`` (agent/dns.go), a service with no healthy instance gets the
same answer as an unknown one: NXDOMAIN, with the zone's SOA in the authority section, its
minimum (the negative-caching TTL, RFC 2308) set to the answers' TTL, 0 by default, so that a
service coming back is seen at once. Every other name under the domain is NXDOMAIN too. A
name that exists but has nothing of the asked type (AAAA: the overlay has no IPv6) gets an
empty NOERROR answer with the SOA (NODATA), so resolvers do not try other names or servers.
ANY is answered like A, as Consul does. A name outside the domain is for the host's resolvers
(``FORWARD``).

Each answer lists its instances in a new random order (the client takes the first: load
spreads). SRV records carry priority 1, weight 1, the instance's port, and the A record of
their target in the additional section, one per address.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from shoal.netoverlay.dnsview import CatalogView, Instance

# record types, classes and response codes (RFC 1035, 2782, 3596, 6891)
A, SOA, AAAA, SRV, OPT, ANY = 1, 6, 28, 33, 41, 255
CLASS_IN, CLASS_ANY = 1, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

Labels = tuple[str, ...]  # a domain name's labels, without the root
MAX_TTL = 2**31 - 1
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400  # Consul's; nothing transfers this zone
_RNG = random.Random()


@dataclass(slots=True, frozen=True)
class DnsSettings:
    domain: str = "shoal"
    ttl: int = 0  # seconds; 0: a change of health is seen by the next lookup
    default_namespace: str = "default"

    def __post_init__(self) -> None:
        labels = self.domain.strip(".").split(".")
        if not self.domain.strip(".") or any(not label or len(label) > 63 or not label.isascii() for label in labels):
            raise ValueError(f"DNS domain {self.domain!r} is not a domain name")
        if not 0 <= self.ttl <= MAX_TTL:
            raise ValueError(f"DNS TTL {self.ttl} is not between 0 and {MAX_TTL}")

    @property
    def domain_labels(self) -> Labels:
        return tuple(self.domain.strip(".").lower().split("."))


@dataclass(slots=True, frozen=True)
class Question:
    labels: Labels  # as asked: the reply's owner names keep their case
    qtype: int
    qclass: int = CLASS_IN

    @classmethod
    def of(cls, name: str, qtype: int, qclass: int = CLASS_IN) -> Question:
        """From dotted text (``"web.service.shoal."``; a trailing dot is optional)."""
        text = name.rstrip(".")
        return cls(tuple(text.split(".")) if text else (), qtype, qclass)


@dataclass(slots=True, frozen=True)
class ARecord:
    name: Labels
    ttl: int
    address: str


@dataclass(slots=True, frozen=True)
class SrvRecord:
    name: Labels
    ttl: int
    priority: int
    weight: int
    port: int
    target: Labels


@dataclass(slots=True, frozen=True)
class SoaRecord:
    name: Labels
    ttl: int
    mname: Labels
    rname: Labels
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


Record = ARecord | SrvRecord | SoaRecord


@dataclass(slots=True, frozen=True)
class Reply:
    rcode: int
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()


class Forward:
    """The decision to hand a question to the host's resolvers."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FORWARD"


FORWARD = Forward()


def addr_name(address: str, domain: Labels) -> Labels:
    """The name that resolves to ``address``: its four bytes in hex, under ``addr``."""
    return (ipaddress.IPv4Address(address).packed.hex(), "addr", *domain)


def soa(view: CatalogView, settings: DnsSettings) -> SoaRecord:
    """The zone's SOA; its serial is the catalog index the answers came from."""
    domain = settings.domain_labels
    return SoaRecord(domain, settings.ttl, ("ns", *domain), ("hostmaster", *domain), view.index & 0xFFFFFFFF,
                     SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, settings.ttl)


def answer(view: CatalogView, settings: DnsSettings, question: Question,
           rng: random.Random | None = None) -> Reply | Forward:
    """The reply to ``question`` from ``view``, or ``FORWARD`` for a name outside the domain."""
    domain = settings.domain_labels
    lower = tuple(label.lower() for label in question.labels)
    if len(lower) < len(domain) or lower[len(lower) - len(domain):] != domain:
        return FORWARD
    if question.qclass not in (CLASS_IN, CLASS_ANY):
        return Reply(REFUSED)
    zone_soa = soa(view, settings)
    nxdomain = Reply(NXDOMAIN, authority=(zone_soa,))
    nodata = Reply(NOERROR, authority=(zone_soa,))
    relative = lower[:len(lower) - len(domain)]
    if not relative:
        return Reply(NOERROR, answer=(zone_soa,)) if question.qtype in (SOA, ANY) else nodata
    if len(relative) == 2 and relative[1] == "addr":
        address = _hex_address(relative[0])
        if address is None:
            return nxdomain
        if question.qtype not in (A, ANY):
            return nodata
        return Reply(NOERROR, answer=(ARecord(question.labels, settings.ttl, address),))
    lookup = _service_lookup(relative, settings.default_namespace)
    if lookup is None:
        return nxdomain
    instances = list(view.instances(*lookup))
    if not instances:
        return nxdomain
    (rng or _RNG).shuffle(instances)
    if question.qtype == SRV:
        return _srv_reply(question.labels, instances, settings.ttl, domain)
    if question.qtype not in (A, ANY):
        return nodata
    addresses = dict.fromkeys(i.address for i in instances)  # one record per address, in the shuffled order
    return Reply(NOERROR, answer=tuple(ARecord(question.labels, settings.ttl, a) for a in addresses))


def _service_lookup(relative: Labels, default_namespace: str) -> tuple[str, str, str] | None:
    """(namespace, service, tag) named by the labels left of the domain, or None."""
    if relative[-1] == "service":
        namespace, prefix = default_namespace, relative[:-1]
    elif len(relative) >= 2 and relative[-2] == "service":
        namespace, prefix = relative[-1], relative[:-2]
    else:
        return None
    if len(prefix) == 1:
        return namespace, prefix[0], ""
    if len(prefix) != 2:
        return None
    first, second = prefix
    if first.startswith("_") and second.startswith("_"):  # RFC 2782: _service._proto
        return (namespace, first[1:], "") if second in ("_tcp", "_udp") and len(first) > 1 else None
    return namespace, second, first


def _hex_address(label: str) -> str | None:
    if len(label) != 8:
        return None
    try:
        return str(ipaddress.IPv4Address(bytes.fromhex(label)))
    except ValueError:
        return None


def _srv_reply(owner: Labels, instances: list[Instance], ttl: int, domain: Labels) -> Reply:
    records: list[SrvRecord] = []
    targets: dict[str, ARecord] = {}
    seen: set[tuple[str, int]] = set()
    for inst in instances:
        if (inst.address, inst.port) in seen:  # the same allocation registered twice at one port
            continue
        seen.add((inst.address, inst.port))
        target = addr_name(inst.address, domain)
        records.append(SrvRecord(owner, ttl, 1, 1, inst.port, target))
        targets.setdefault(inst.address, ARecord(target, ttl, inst.address))
    return Reply(NOERROR, answer=tuple(records), additional=tuple(targets.values()))
