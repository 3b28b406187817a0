"""The gossip wire format: typed round trips, compound packets, frames, bounds, and garbage in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.agent.gossip import wire
from shoal.agent.gossip.keyring import NO_KEY, OVERHEAD, Keyring, KeyringError, generate
from shoal.agent.gossip.wire import WireError


@dataclass(slots=True, frozen=True)
class Addr:
    host: str
    port: int


@dataclass(slots=True, frozen=True)
class Member:
    node: str
    addr: Addr
    incarnation: int
    state: str = "alive"
    meta: dict[str, str] = field(default_factory=dict)
    vtep: Addr | None = None


@dataclass(slots=True, frozen=True)
class Ping:
    seq: int
    source: str


@dataclass(slots=True, frozen=True)
class PushPull:
    members: tuple[Member, ...]
    join: bool
    health: float
    digest: bytes = b""
    subnets: list[tuple[str, int]] = field(default_factory=list)
    counts: dict[int, list[int]] = field(default_factory=dict)


for _kind, _cls in (("test-ping", Ping), ("test-member", Member), ("test-push-pull", PushPull)):
    wire.register(_kind, _cls)

RING = Keyring([], generate())
PING = Ping(seq=7, source="node-a")


def _member(i: int) -> Member:
    return Member(node=f"node-{i:04d}", addr=Addr("10.0.%d.%d" % divmod(i, 256), 7946), incarnation=i,
                  meta={"dc": "dc1", "subnet": f"10.244.{i % 256}.0/24"}, vtep=Addr("192.168.0.1", 4789))


def _raw(body: Any, version: int = wire.WIRE_VERSION) -> bytes:
    """A payload built by hand, bypassing every sender-side check."""
    return bytes((version,)) + msgpack.packb(body, use_bin_type=True)


# Round trips.


def test_a_message_round_trips_through_fields_and_bytes() -> None:
    msg = PushPull(members=(_member(1), _member(2)), join=True, health=0.5, digest=b"\x00\xff",
                   subnets=[("10.244.0.0", 16)], counts={3: [1, 2]})
    kind, fields = wire.to_fields(msg)
    assert kind == "test-push-pull"
    decoded = wire.decode(wire.encode(kind, fields))
    assert decoded == (kind, fields)
    assert wire.from_fields(*decoded) == msg


_members = st.builds(
    Member,
    node=st.text(max_size=40), addr=st.builds(Addr, st.text(max_size=20), st.integers(0, 65535)),
    incarnation=st.integers(-(2**63), 2**64 - 1), state=st.sampled_from(["alive", "suspect", "dead"]),
    meta=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    vtep=st.none() | st.builds(Addr, st.text(max_size=20), st.integers(0, 65535)),
)


@settings(max_examples=200, deadline=None)
@given(st.builds(PushPull, members=st.lists(_members, max_size=5).map(tuple), join=st.booleans(),
                 health=st.floats(allow_nan=False), digest=st.binary(max_size=64),
                 subnets=st.lists(st.tuples(st.text(max_size=15), st.integers(0, 32)), max_size=3),
                 counts=st.dictionaries(st.integers(-5, 5), st.lists(st.integers(0, 9), max_size=3), max_size=3)))
def test_any_message_round_trips(msg: PushPull) -> None:
    kind, fields = wire.to_fields(msg)
    assert wire.from_fields(*wire.decode(wire.encode(kind, fields))) == msg


def test_fields_left_out_take_their_defaults_and_unknown_fields_are_ignored() -> None:
    payload = _raw([["test-member", {"node": "n", "addr": {"host": "h", "port": 1, "zone": "z"},
                                     "incarnation": 2, "added_later": [1, 2]}]])
    kind, fields = wire.decode(payload)
    assert wire.from_fields(kind, fields) == Member("n", Addr("h", 1), 2)


def test_an_int_is_accepted_for_a_float() -> None:
    payload = _raw([["test-push-pull", {"members": [], "join": False, "health": 1}]])
    assert wire.decode(payload)[1]["health"] == 1.0


# Compound packets and sealing.


def test_pack_fills_packets_in_order_within_the_udp_budget() -> None:
    messages = [wire.to_fields(_member(i)) for i in range(100)]
    payloads = wire.pack(messages)
    assert len(payloads) > 1
    assert all(len(p) <= wire.UDP_PAYLOAD_BUDGET for p in payloads)
    assert all(len(p) > wire.UDP_PAYLOAD_BUDGET - 200 for p in payloads[:-1])  # filled, not one per packet
    assert [m for p in payloads for m in wire.unpack(p)] == messages
    packets = [wire.seal_packet(RING, p) for p in payloads]
    assert all(len(p) <= wire.UDP_PACKET_MAX for p in packets)
    assert [m for p in packets for m in wire.open_packet(RING, p)] == messages


def test_pack_respects_a_smaller_budget_and_the_message_count_limit() -> None:
    pings = [wire.to_fields(Ping(i, "s")) for i in range(600)]
    payloads = wire.pack(pings, budget=64 * 1024)
    assert [len(wire.unpack(p)) for p in payloads] == [wire.MAX_MESSAGES, wire.MAX_MESSAGES, 90]
    small = wire.pack(pings[:20], budget=100)
    assert all(len(p) <= 100 for p in small) and sum(len(wire.unpack(p)) for p in small) == 20
    assert wire.pack([]) == []


def test_a_message_too_big_for_a_packet_must_go_over_tcp() -> None:
    big = wire.to_fields(PushPull(members=tuple(_member(i) for i in range(30)), join=False, health=0.0))
    with pytest.raises(WireError, match="does not fit"):
        wire.pack([big])
    with pytest.raises(WireError, match="exceeds the UDP budget"):
        wire.seal_packet(RING, wire.encode(*big))
    frame = wire.seal_frame(RING, wire.encode(*big))
    header, body = frame[:wire.FRAME_HEADER], frame[wire.FRAME_HEADER:]
    assert wire.frame_length(header) == len(body)
    assert wire.open_frame(RING, body) == [big]


def test_a_push_pull_of_a_thousand_members_fits_a_frame() -> None:
    msg = PushPull(members=tuple(_member(i) for i in range(1000)), join=False, health=0.0)
    frame = wire.seal_frame(RING, wire.encode(*wire.to_fields(msg)))
    ((kind, fields),) = wire.open_frame(RING, frame[wire.FRAME_HEADER:])
    assert wire.from_fields(kind, fields) == msg


def test_a_packet_and_a_frame_cannot_stand_in_for_each_other() -> None:
    payload = wire.encode(*wire.to_fields(PING))
    with pytest.raises(KeyringError):
        wire.open_frame(RING, wire.seal_packet(RING, payload))
    with pytest.raises(KeyringError):
        wire.open_packet(RING, wire.seal_frame(RING, payload)[wire.FRAME_HEADER:])


def test_a_packet_sealed_with_another_key_is_rejected() -> None:
    packet = wire.seal_packet(Keyring([], generate()), wire.encode(*wire.to_fields(PING)))
    with pytest.raises(KeyringError) as err:
        wire.open_packet(RING, packet)
    assert err.value.reason == NO_KEY


def test_oversized_packets_and_frames_are_rejected_before_opening() -> None:
    with pytest.raises(WireError, match="oversized"):
        wire.open_packet(RING, b"\x01" * (wire.UDP_PACKET_MAX + 1))
    with pytest.raises(WireError, match="outside"):
        wire.frame_length((wire.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(WireError, match="outside"):
        wire.frame_length(OVERHEAD.to_bytes(4, "big"))
    with pytest.raises(WireError, match="truncated"):
        wire.frame_length(b"\x00\x01")
    with pytest.raises(WireError, match="oversized"):
        wire.open_frame(RING, bytes(wire.MAX_FRAME + 1))
    with pytest.raises(WireError, match="exceeds the frame limit"):
        wire.seal_frame(RING, bytes(wire.MAX_FRAME))


# What the decoder refuses.

_BAD_PAYLOADS: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty"),
    ("unknown version", _raw([["test-ping", {"seq": 1, "source": "s"}]], version=9), "unknown wire version 9"),
    ("not msgpack", b"\x01\xc1", "not a gossip payload"),
    ("truncated", _raw([["test-ping", {"seq": 1, "source": "s"}]])[:-1], "not a gossip payload"),
    ("trailing bytes", _raw([["test-ping", {"seq": 1, "source": "s"}]]) + b"\x00", "not a gossip payload"),
    ("not an array", _raw({"seq": 1}), "array of 1 to"),
    ("no messages", _raw([]), "array of 1 to"),
    ("not a pair", _raw([["test-ping"]]), "[0]: expected [kind, fields]"),
    ("unknown kind", _raw([["test-nope", {}]]), "[0]: unknown message kind 'test-nope'"),
    ("kind not a string", _raw([[7, {}]]), "[0]: expected a message kind (a string), got int"),
    ("fields not a map", _raw([["test-ping", [1, "s"]]]), "test-ping: expected a map, got list"),
    ("missing field", _raw([["test-ping", {"seq": 1}]]), "test-ping: missing field 'source'"),
    ("wrong type", _raw([["test-ping", {"seq": "1", "source": "s"}]]), "test-ping.seq: expected int, got str"),
    ("bool for int", _raw([["test-ping", {"seq": True, "source": "s"}]]), "test-ping.seq: expected int, got bool"),
    ("nested wrong type", _raw([["test-member", {"node": "n", "addr": {"host": "h", "port": "p"}, "incarnation": 1}]]),
     "test-member.addr.port: expected int"),
    ("wrong tuple length", _raw([["test-push-pull", {"members": [], "join": True, "health": 0.0,
                                                      "subnets": [["10.0.0.0", 8, 1]]}]]),
     "test-push-pull.subnets[0]: expected 2 items, got 3"),
    ("wrong map key", _raw([["test-push-pull", {"members": [], "join": True, "health": 0.0, "counts": {"1": []}}]]),
     "test-push-pull.counts['1']: expected int, got str"),
    ("ext type", _raw([["test-ping", {"seq": msgpack.ExtType(1, b"x"), "source": "s"}]]), "not a gossip payload"),
    ("timestamp", b"\x01" + msgpack.packb([["test-ping", {"seq": msgpack.Timestamp(1), "source": "s"}]]),
     "not a gossip payload"),
    ("empty ext type", _raw([["test-ping", {"seq": msgpack.ExtType(1, b""), "source": "s"}]]),
     "test-ping.seq: expected int, got ExtType"),
    ("unhashable key", b"\x01\x91\x92\xa9test-ping\x81\x90\x01", "not a gossip payload"),
    ("bad utf-8", b"\x01\x91\x92\xa9test-ping\x82\xa3seq\x01\xa6source\xa2\xff\xfe", "not a gossip payload"),
    ("string over the limit", _raw([["test-ping", {"seq": 1, "source": "s" * (wire.MAX_STR_LEN + 1)}]]),
     "not a gossip payload"),
    ("bytes over the limit", _raw([["test-push-pull", {"members": [], "join": True, "health": 0.0,
                                                        "digest": bytes(wire.MAX_BIN_LEN + 1)}]]), "not a gossip payload"),
    ("array over the limit", _raw([["test-push-pull", {"members": [], "join": True, "health": 0.0,
                                                        "subnets": [0] * (wire.MAX_ARRAY_LEN + 1)}]]),
     "not a gossip payload"),
    ("map over the limit", _raw([["test-push-pull", {"members": [], "join": True, "health": 0.0,
                                                      "counts": {i: [] for i in range(wire.MAX_MAP_LEN + 1)}}]]),
     "not a gossip payload"),
    ("too many messages", _raw([["test-ping", {"seq": 1, "source": "s"}]] * (wire.MAX_MESSAGES + 1)), "array of 1 to"),
    ("nested deeper than msgpack's stack", b"\x01\x91\x92\xa9test-ping" + b"\x91" * 5000 + b"\xc0",
     "not a gossip payload"),
    ("nested deeper than the schema", _raw([["test-ping", {"seq": [[[[[[[[1]]]]]]]], "source": "s"}]]),
     "test-ping.seq: expected int, got list"),
]


@pytest.mark.parametrize(("payload", "problem"), [(p, e) for _, p, e in _BAD_PAYLOADS],
                         ids=[name for name, _, _ in _BAD_PAYLOADS])
def test_bad_payloads_are_a_wire_error_that_says_why(payload: bytes, problem: str) -> None:
    with pytest.raises(WireError) as err:
        wire.unpack(payload)
    assert problem in str(err.value)


def test_decode_wants_exactly_one_message() -> None:
    (payload,) = wire.pack([wire.to_fields(PING)] * 2)
    with pytest.raises(WireError, match="expected one message, got 2"):
        wire.decode(payload)


def test_a_udp_payload_is_held_to_the_udp_budget() -> None:
    payload = wire.encode(*wire.to_fields(PushPull(members=tuple(_member(i) for i in range(30)),
                                                   join=False, health=0.0)))
    packet = RING.seal(payload, wire.UDP_AAD)  # a peer that ignored the budget
    with pytest.raises(WireError, match="oversized"):
        wire.open_packet(RING, packet)


# What the encoder refuses: nothing leaves that every receiver would drop.


@pytest.mark.parametrize(("kind", "fields", "problem"), [
    ("test-nope", {}, "unknown message kind"),
    ("test-ping", {"seq": 1}, "missing field 'source'"),
    ("test-ping", {"seq": 1, "source": "s", "extra": 1}, "unknown field(s) ['extra']"),
    ("test-ping", {"seq": 1.5, "source": "s"}, "test-ping.seq: expected int, got float"),
    ("test-ping", {"seq": 2**64, "source": "s"}, "cannot be packed"),
    ("test-ping", {"seq": 1, "source": "é" * wire.MAX_STR_LEN}, "a string over"),
    ("test-member", {"node": "n", "addr": ("h", 1), "incarnation": 1}, "test-member.addr: expected Addr, got tuple"),
    ("test-push-pull", {"members": [], "join": True, "health": 0.0}, "test-push-pull.members: expected a tuple"),
    ("test-push-pull", {"members": (), "join": True, "health": 0.0, "digest": bytes(wire.MAX_BIN_LEN + 1)},
     "a byte string over"),
    ("test-push-pull", {"members": (), "join": True, "health": 0.0, "subnets": [("x", 1)] * (wire.MAX_ARRAY_LEN + 1)},
     "over 65536 items"),
    ("test-push-pull", {"members": (), "join": True, "health": 0.0,
                        "counts": {i: [] for i in range(wire.MAX_MAP_LEN + 1)}}, "over 65536 entries"),
])
def test_encoding_checks_the_schema_and_the_receivers_limits(kind: str, fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(WireError) as err:
        wire.encode(kind, fields)
    assert problem in str(err.value)


def test_only_registered_messages_are_carried() -> None:
    with pytest.raises(WireError, match="not a registered message"):
        wire.to_fields(Addr("h", 1))
    with pytest.raises(WireError, match="not a valid Ping"):
        wire.from_fields("test-ping", {"seq": 1})


# Registration.


def test_registering_the_same_pair_again_is_a_no_op_and_a_clash_is_an_error() -> None:
    wire.register("test-ping", Ping)
    with pytest.raises(ValueError, match="already registered"):
        wire.register("test-ping", Member)
    with pytest.raises(ValueError, match="already registered"):
        wire.register("test-ping-again", Ping)
    with pytest.raises(ValueError, match="kind"):
        wire.register("", Addr)


@dataclass(slots=True)
class _Recursive:
    child: _Recursive | None


@dataclass
class _NoSlots:
    x: int


def _unsupported(annotation: Any) -> type:
    return dataclasses.make_dataclass("Unsupported", [("x", annotation)], slots=True)


@pytest.mark.parametrize(("cls", "problem"), [
    (_unsupported(Any), "cannot carry"),
    (_unsupported(set[int]), "cannot carry"),
    (_unsupported(list), "cannot carry"),
    (_unsupported(dict[float, int]), "cannot carry"),
    (_unsupported(int | str), "cannot carry"),
    (_unsupported(tuple[()]), "cannot carry"),
    (_unsupported(list[_NoSlots]), "must be a dataclass with slots"),
    (_Recursive, "nested deeper than"),
    (_NoSlots, "must be a dataclass with slots"),
])
def test_types_the_wire_cannot_carry_are_refused_at_registration(cls: type, problem: str) -> None:
    with pytest.raises(TypeError, match=problem):
        wire.register(f"test-bad-{cls.__name__}", cls)


def test_only_dataclasses_are_registered() -> None:
    with pytest.raises(TypeError, match="not a dataclass"):
        wire.register("test-dict", dict)


# Garbage in: only WireError or KeyringError, never another exception.

_PAYLOAD = wire.pack([wire.to_fields(PING), wire.to_fields(_member(3))])[0]
_PACKET = wire.seal_packet(RING, _PAYLOAD)
_DROPPED = (WireError, KeyringError)

_msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**64 - 1), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=2 * wire.UDP_PACKET_MAX))
def test_random_bytes_are_dropped(data: bytes) -> None:
    with pytest.raises(_DROPPED):
        wire.open_packet(RING, data)
    with pytest.raises(_DROPPED):
        wire.open_frame(RING, data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
def test_random_plaintext_after_the_version_byte_is_a_wire_error_or_valid(data: bytes) -> None:
    try:
        wire.unpack(b"\x01" + data)
    except WireError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["test-ping", "test-member", "test-push-pull"]), _msgpack_values)
def test_random_fields_are_a_wire_error_or_valid(kind: str, fields: Any) -> None:
    try:
        ((got_kind, got),) = wire.unpack(_raw([[kind, fields]]))
    except WireError:
        return
    assert got_kind == kind
    wire.from_fields(kind, got)  # what passed the checks builds the message


@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(_PAYLOAD) * 8 - 1))
def test_a_bit_flip_in_a_payload_is_a_wire_error_or_valid(bit: int) -> None:
    flipped = bytearray(_PAYLOAD)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        wire.unpack(bytes(flipped))
    except WireError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(_PACKET) * 8 - 1))
def test_a_bit_flip_in_a_sealed_packet_is_dropped(bit: int) -> None:
    flipped = bytearray(_PACKET)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(KeyringError):
        wire.open_packet(RING, bytes(flipped))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_PAYLOAD) - 1))
def test_every_truncation_is_dropped(cut: int) -> None:
    with pytest.raises(WireError):
        wire.unpack(_PAYLOAD[:cut])
    with pytest.raises(KeyringError):
        wire.open_packet(RING, _PACKET[:cut])
