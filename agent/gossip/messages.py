"""The gossip protocol's messages: what one member tells another, as plain frozen dataclasses.

Every field is a ``str``, ``int``, ``bool``, an address ``(host, port)``, a ``dict[str, str]`` or a
tuple of ``MemberState``, so ``wire.py`` carries them as they are (``KINDS`` names each message for
``wire.register``). Addresses are the advertised gossip address of a member: UDP for probes and
gossip, TCP on the same port for push-pull.

Two families, as in hashicorp/memberlist:

- **Failure detection** (``Ping``, ``IndirectPing``, ``Ack``, ``Nack``): answered to the address the
  packet came from, so they carry no return address. ``seq`` is chosen by the member that waits for
  the answer and only means something to it.
- **Membership updates** (``Alive``, ``Suspect``, ``Dead``, the ``Broadcast`` union): what members
  believe about one member, ordered by its ``incarnation``. Only the member itself raises its
  incarnation (to refute a suspicion or to change its metadata), so a higher incarnation always
  wins; at one incarnation ``Dead`` overrides ``Suspect``, which overrides ``Alive``.

One UDP packet (``swim.SendUdp``) carries a tuple of messages: first what the packet is for (a
``Ping``, and with Lifeguard's buddy system a ``Suspect`` telling a suspected target so), then as
many pending broadcasts as fit in ``SwimConfig.packet_bytes`` by ``size_hint`` (memberlist's
compound messages); ``wire.pack`` packs that tuple into one payload within the UDP budget.
``PushPull`` travels alone over TCP: it lists every member the sender knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Addr = tuple[str, int]  # (host, port)

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
LEFT = "left"  # declared dead by the member itself: a graceful leave


@dataclass(slots=True, frozen=True)
class Ping:
    """Are you alive? The receiver answers ``Ack(seq)`` if it is ``target``.

    ``target`` is the name the prober believes lives at this address: a member that restarted
    under another name must not answer for the old one."""

    seq: int
    target: str


@dataclass(slots=True, frozen=True)
class IndirectPing:
    """Probe ``target`` at ``target_addr`` for me (the prober got no ack in time).

    The receiver pings the target with a sequence number of its own and forwards the target's
    ack as ``Ack(seq)``. ``nack`` (Lifeguard): when the target has not answered within the
    receiver's probe timeout, answer ``Nack(seq)``, so the prober can tell "the target is down"
    from "I am not hearing anyone" (a missing nack counts against the prober's own health)."""

    seq: int
    target: str
    target_addr: Addr
    nack: bool


@dataclass(slots=True, frozen=True)
class Ack:
    """The answer to a ``Ping`` (direct, or forwarded by an indirect prober) with its ``seq``."""

    seq: int


@dataclass(slots=True, frozen=True)
class Nack:
    """An indirect prober's "I asked, the target has not answered" for ``IndirectPing.seq``."""

    seq: int


@dataclass(slots=True, frozen=True)
class Alive:
    """Member ``name`` is alive at ``addr`` with ``meta``, as of its ``incarnation``.

    Sent by a member about itself (on start, on a metadata change, to refute a suspicion) and
    re-gossiped by everyone who learns something new from it. ``meta`` is the member's small
    string map (node id, overlay VTEP address and subnet, health)."""

    incarnation: int
    name: str
    addr: Addr
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Suspect:
    """``from_`` suspects member ``name`` (at ``incarnation``) has failed.

    The suspect has a suspicion timeout to refute it with a higher incarnation. With Lifeguard,
    each distinct ``from_`` is an independent confirmation that shortens the timeout."""

    incarnation: int
    name: str
    from_: str


@dataclass(slots=True, frozen=True)
class Dead:
    """``from_`` declares member ``name`` (at ``incarnation``) dead.

    ``from_ == name``: the member left gracefully (state "left", not "dead")."""

    incarnation: int
    name: str
    from_: str


@dataclass(slots=True, frozen=True)
class MemberState:
    """One member as the sender of a ``PushPull`` sees it; ``state``: ALIVE, SUSPECT, DEAD or LEFT
    (a receiver ignores any other)."""

    name: str
    addr: Addr
    meta: dict[str, str]
    incarnation: int
    state: str


@dataclass(slots=True, frozen=True)
class PushPull:
    """A full state exchange over TCP: every member the sender knows, itself included.

    The initiator (joining through a seed, or the periodic sync) sends ``reply=False``; the
    receiver answers with its own states and ``reply=True`` on the same connection, then both
    merge what they received."""

    states: tuple[MemberState, ...]
    reply: bool


Broadcast = Alive | Suspect | Dead  # the membership updates gossip disseminates
Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead  # what UDP packets carry

# The message kinds for wire.register (MemberState travels inside PushPull only).
KINDS: dict[str, type] = {
    "ping": Ping,
    "indirect-ping": IndirectPing,
    "ack": Ack,
    "nack": Nack,
    "alive": Alive,
    "suspect": Suspect,
    "dead": Dead,
    "push-pull": PushPull,
}


def meta_size(meta: dict[str, str]) -> int:
    """``size_hint``'s bytes for a metadata map."""
    return 3 + sum(6 + len(k) + len(v) for k, v in meta.items())


def size_hint(msg: Message) -> int:
    """At least the bytes ``msg`` takes in a wire payload (msgpack ``[kind, {field: value}]``:
    each integer counted at its widest, 9 bytes, each string at its longest header, 3 bytes,
    with one byte a character: names, hosts and metadata are ASCII), so packets are filled
    without encoding anything. tests/agent/test_swim.py checks it against ``wire``."""
    kind = type(msg)
    if kind is Alive:
        return 54 + len(msg.name) + len(msg.addr[0]) + meta_size(msg.meta)
    if kind is Suspect:
        return 48 + len(msg.name) + len(msg.from_)
    if kind is Dead:
        return 45 + len(msg.name) + len(msg.from_)
    if kind is Ping:
        return 30 + len(msg.target)
    if kind is IndirectPing:
        return 64 + len(msg.target) + len(msg.target_addr[0])
    if kind is Ack:
        return 19
    if kind is Nack:
        return 20
    raise TypeError(f"not a UDP message: {kind.__name__}")
