"""The gossip wire format: typed messages as bounded msgpack, sealed for UDP packets and TCP frames.

A payload is ``WIRE_VERSION || msgpack array of messages``, a message ``[kind, fields]``: one
message (``encode``) or several small ones packed into one UDP packet up to its budget (``pack``,
memberlist's compound messages: a probe carries the gossip piggybacked on it). Every payload is
then sealed with the keyring (``seal_packet`` for UDP, ``seal_frame`` for TCP, length-prefixed),
and whatever arrives is opened and decoded by ``open_packet``/``open_frame``: a ``WireError`` or a
``KeyringError`` means drop the packet and count it, nothing else escapes.

Kinds are registered (``register``) with a slotted dataclass; its field annotations are the
schema both ways. Supported: ``int``, ``str``, ``float``, ``bool``, ``bytes``, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str | int, X]`` and nested slotted
dataclasses, at most ``MAX_DEPTH`` levels (so no recursive types). Decoding checks every value
against them: a wrong type, a missing required field or an unknown kind is a ``WireError``; a
field the receiver does not know is ignored, so a newer member may add optional fields.

Bounds: the packet or frame size first, then msgpack's own limits on each string, byte string,
array and map, and its fixed parser stack (1,024 levels, ``StackError``) while parsing; checking
then descends only as deep as the registered type, and a value nested deeper is a mismatch.
Nothing is unpickled or evaluated: msgpack ext types (timestamps included) are refused by the
parser (``max_ext_len=0``), and an empty one matches no type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from shoal.agent.gossip.keyring import OVERHEAD, Keyring

WIRE_VERSION = 1
UDP_PACKET_MAX = 1400  # a sealed UDP packet, as memberlist's UDPBufferSize: fits a 1500-byte MTU
UDP_PAYLOAD_BUDGET = UDP_PACKET_MAX - OVERHEAD
MAX_FRAME = 4 * 1024 * 1024  # a sealed TCP frame (push-pull carries the whole membership)
FRAME_HEADER = 4  # the frame's length, big-endian, before the sealed frame
MAX_MESSAGES = 255  # in one payload
MAX_KIND_LEN = 64
MAX_STR_LEN = 4096
MAX_BIN_LEN = 64 * 1024
MAX_ARRAY_LEN = 65536  # a push-pull lists every member
MAX_MAP_LEN = 65536
MAX_DEPTH = 8  # levels of a registered type: a message, a list in it, a dataclass in that, ...
UDP_AAD = b"shoal-gossip/udp"  # authenticated with each packet: a UDP packet is no TCP frame
TCP_AAD = b"shoal-gossip/tcp"

Message = tuple[str, dict[str, Any]]  # (kind, fields): the fields as the dataclass takes them


class WireError(ValueError):
    """A payload that does not decode (or a message that cannot be encoded), and why.

    ``path`` locates the bad value inside the message, e.g. ``members[3].addr``."""

    def __init__(self, problem: str, path: str = ""):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem, self.path = problem, path

    def within(self, step: str) -> WireError:
        """The same error one level up: ``step`` is the field name or ``[index]`` it was found in."""
        if not self.path or self.path.startswith("["):
            return WireError(self.problem, step + self.path)
        return WireError(self.problem, f"{step}.{self.path}")


def _mismatch(expected: str, value: Any) -> WireError:
    return WireError(f"expected {expected}, got {type(value).__name__}")


# The schema: one converter per annotated type. ``load`` checks a decoded msgpack value and
# returns it typed (tuples, floats, dataclasses); ``dump`` checks a typed value, returns it plain.


@dataclass(slots=True, frozen=True)
class _Scalar:
    tp: type

    def load(self, v: Any) -> Any:
        if type(v) is not self.tp:  # exact: a bool is no int here
            raise _mismatch(self.tp.__name__, v)
        return v

    def dump(self, v: Any) -> Any:
        """Also within the receivers' limits, so nothing is sent that every peer would drop."""
        self.load(v)
        if self.tp is str and len(v) > MAX_STR_LEN // 4 and len(v.encode("utf-8", "surrogatepass")) > MAX_STR_LEN:
            raise WireError(f"a string over {MAX_STR_LEN} bytes")
        if self.tp is bytes and len(v) > MAX_BIN_LEN:
            raise WireError(f"a byte string over {MAX_BIN_LEN} bytes")
        return v


@dataclass(slots=True, frozen=True)
class _Float:
    def load(self, v: Any) -> float:
        if type(v) is float:
            return v
        if type(v) is int:
            return float(v)
        raise _mismatch("float", v)

    dump = load


@dataclass(slots=True, frozen=True)
class _Optional:
    inner: _Type

    def load(self, v: Any) -> Any:
        return None if v is None else self.inner.load(v)

    def dump(self, v: Any) -> Any:
        return None if v is None else self.inner.dump(v)


def _items(conv: Callable[[Any], Any], seq: Any) -> list[Any]:
    out = []
    for i, item in enumerate(seq):
        try:
            out.append(conv(item))
        except WireError as exc:
            raise exc.within(f"[{i}]") from None
    return out


@dataclass(slots=True, frozen=True)
class _Seq:
    """``list[X]`` or ``tuple[X, ...]``."""

    item: _Type
    as_tuple: bool

    def load(self, v: Any) -> Any:
        if type(v) is not list:
            raise _mismatch("an array", v)
        items = _items(self.item.load, v)
        return tuple(items) if self.as_tuple else items

    def dump(self, v: Any) -> list[Any]:
        if type(v) is not (tuple if self.as_tuple else list):
            raise _mismatch("a tuple" if self.as_tuple else "a list", v)
        if len(v) > MAX_ARRAY_LEN:
            raise WireError(f"over {MAX_ARRAY_LEN} items")
        return _items(self.item.dump, v)


@dataclass(slots=True, frozen=True)
class _Tuple:
    """``tuple[X, Y, ...]``: a fixed length, a type per position."""

    items: tuple[_Type, ...]

    def _convert(self, v: Any, load: bool) -> list[Any]:
        if len(v) != len(self.items):
            raise WireError(f"expected {len(self.items)} items, got {len(v)}")
        out = []
        for i, (conv, item) in enumerate(zip(self.items, v, strict=True)):
            try:
                out.append(conv.load(item) if load else conv.dump(item))
            except WireError as exc:
                raise exc.within(f"[{i}]") from None
        return out

    def load(self, v: Any) -> tuple[Any, ...]:
        if type(v) is not list:
            raise _mismatch("an array", v)
        return tuple(self._convert(v, load=True))

    def dump(self, v: Any) -> list[Any]:
        if type(v) is not tuple:
            raise _mismatch("a tuple", v)
        return self._convert(v, load=False)


@dataclass(slots=True, frozen=True)
class _Dict:
    key: _Scalar
    value: _Type

    def _convert(self, v: Any, load: bool) -> dict[Any, Any]:
        if type(v) is not dict:
            raise _mismatch("a map", v)
        if len(v) > MAX_MAP_LEN:  # only a sender's: the unpacker stops longer maps
            raise WireError(f"over {MAX_MAP_LEN} entries")
        out = {}
        for k, item in v.items():
            try:
                if load:
                    out[self.key.load(k)] = self.value.load(item)
                else:
                    out[self.key.dump(k)] = self.value.dump(item)
            except WireError as exc:
                raise exc.within(f"[{k!r:.40}]") from None
        return out

    def load(self, v: Any) -> dict[Any, Any]:
        return self._convert(v, load=True)

    def dump(self, v: Any) -> dict[Any, Any]:
        return self._convert(v, load=False)


@dataclass(slots=True, frozen=True)
class _Field:
    name: str
    conv: _Type
    default: Callable[[], Any] | None  # None: the field is required


@dataclass(slots=True, frozen=True)
class _Struct:
    """A slotted dataclass, carried as a map of its (init) fields."""

    cls: type
    fields: tuple[_Field, ...]

    def load_fields(self, v: Any) -> dict[str, Any]:
        """The constructor's arguments from a decoded map: checked, defaults filled in."""
        if type(v) is not dict:
            raise _mismatch("a map", v)
        out = {}
        for f in self.fields:
            if f.name in v:
                try:
                    out[f.name] = f.conv.load(v[f.name])
                except WireError as exc:
                    raise exc.within(f.name) from None
            elif f.default is not None:
                out[f.name] = f.default()
            else:
                raise WireError(f"missing field {f.name!r}")
        return out

    def dump_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The plain map of a message's fields; a field left out must have a default."""
        if type(fields) is not dict:
            raise _mismatch("a dict of fields", fields)
        unknown = fields.keys() - {f.name for f in self.fields}
        if unknown:
            raise WireError(f"unknown field(s) {sorted(map(str, unknown))} for {self.cls.__name__}")
        out = {}
        for f in self.fields:
            if f.name in fields:
                try:
                    out[f.name] = f.conv.dump(fields[f.name])
                except WireError as exc:
                    raise exc.within(f.name) from None
            elif f.default is None:
                raise WireError(f"missing field {f.name!r}")
        return out

    def build(self, fields: dict[str, Any]) -> Any:
        try:
            return self.cls(**fields)
        except (TypeError, ValueError) as exc:
            raise WireError(f"not a valid {self.cls.__name__}: {exc}") from None

    def load(self, v: Any) -> Any:
        return self.build(self.load_fields(v))

    def dump(self, v: Any) -> dict[str, Any]:
        if type(v) is not self.cls:
            raise _mismatch(self.cls.__name__, v)
        return self.dump_fields({f.name: getattr(v, f.name) for f in self.fields})


_Type = _Scalar | _Float | _Optional | _Seq | _Tuple | _Dict | _Struct


def _compile(tp: Any, depth: int) -> _Type:
    """The converter of annotation ``tp``; ``TypeError`` when it is not one the wire carries."""
    if depth > MAX_DEPTH:
        raise TypeError(f"nested deeper than {MAX_DEPTH} levels (a recursive type?)")
    if tp in (int, str, bool, bytes):
        return _Scalar(tp)
    if tp is float:
        return _Float()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _Optional(_compile(inner, depth))
    if origin is list and len(args) == 1:
        return _Seq(_compile(args[0], depth + 1), as_tuple=False)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _Seq(_compile(args[0], depth + 1), as_tuple=True)
    if origin is tuple and args and Ellipsis not in args:
        return _Tuple(tuple(_compile(a, depth + 1) for a in args))
    if origin is dict and len(args) == 2 and args[0] in (str, int):
        return _Dict(_Scalar(args[0]), _compile(args[1], depth + 1))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _struct(tp, depth + 1)
    raise TypeError(f"the gossip wire cannot carry {tp!r}")


def _default(f: dataclasses.Field[Any]) -> Callable[[], Any] | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


def _struct(cls: type, depth: int) -> _Struct:
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a dataclass with slots")
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue  # computed by the class itself, never carried
        try:
            fields.append(_Field(f.name, _compile(hints[f.name], depth), _default(f)))
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.{f.name}: {exc}") from None
    return _Struct(cls, tuple(fields))


# The registry of message kinds.

_KINDS: dict[str, _Struct] = {}
_CLASS_KINDS: dict[type, str] = {}


def register(kind: str, cls: type) -> None:
    """Carry ``cls`` (a dataclass with slots) as messages of ``kind``.

    Raises ``TypeError`` when a field's type is not one the wire carries, ``ValueError`` when the
    kind or the class is already registered otherwise. Registering the same pair again is a no-op."""
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND_LEN:
        raise ValueError(f"a message kind is a string of 1 to {MAX_KIND_LEN} characters")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    existing = _KINDS.get(kind)
    if existing is not None and existing.cls is cls:
        return
    if existing is not None or cls in _CLASS_KINDS:
        raise ValueError(f"kind {kind!r} or class {cls.__name__} is already registered")
    _KINDS[kind] = _struct(cls, depth=1)
    _CLASS_KINDS[cls] = kind


def _schema(kind: Any) -> _Struct:
    if type(kind) is not str:
        raise _mismatch("a message kind (a string)", kind)
    struct = _KINDS.get(kind)
    if struct is None:
        raise WireError(f"unknown message kind {kind[:MAX_KIND_LEN]!r}")
    return struct


def to_fields(obj: Any) -> Message:
    """A registered message as ``(kind, fields)``."""
    kind = _CLASS_KINDS.get(type(obj))
    if kind is None:
        raise WireError(f"{type(obj).__name__} is not a registered message")
    return kind, {f.name: getattr(obj, f.name) for f in _KINDS[kind].fields}


def from_fields(kind: str, fields: dict[str, Any]) -> Any:
    """The message of ``kind`` built from ``fields`` (as ``decode`` returns them)."""
    return _schema(kind).build(fields)


# Payloads.


def _pack_message(kind: str, fields: dict[str, Any]) -> bytes:
    try:
        plain = _schema(kind).dump_fields(fields)
    except WireError as exc:
        raise exc.within(kind) from None
    try:
        return msgpack.packb([kind, plain], use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:  # an int beyond 64 bits, a string too long
        raise WireError(f"{kind}: cannot be packed: {exc}") from None


def _payload_size(count: int, size: int) -> int:
    """The bytes of a payload of ``count`` packed messages of ``size`` bytes in all."""
    return 1 + (1 if count <= 15 else 3) + size


def _payload(packed: list[bytes]) -> bytes:
    n = len(packed)
    header = bytes((0x90 | n,)) if n <= 15 else b"\xdc" + n.to_bytes(2, "big")
    return bytes((WIRE_VERSION,)) + header + b"".join(packed)


def encode(kind: str, fields: dict[str, Any]) -> bytes:
    """One message as a payload. ``WireError`` when the fields do not fit the kind's schema."""
    return _payload([_pack_message(kind, fields)])


def pack(messages: Iterable[Message], budget: int = UDP_PAYLOAD_BUDGET) -> list[bytes]:
    """Messages packed, in order, into as few payloads of at most ``budget`` bytes as that allows.

    ``WireError`` when one message alone does not fit: it must go over TCP."""
    payloads: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for kind, fields in messages:
        item = _pack_message(kind, fields)
        if _payload_size(1, len(item)) > budget:
            raise WireError(f"a {kind} message of {len(item)} bytes does not fit in {budget} bytes")
        n = len(batch) + 1
        if n > MAX_MESSAGES or _payload_size(n, size + len(item)) > budget:
            payloads.append(_payload(batch))
            batch, size = [], 0
        batch.append(item)
        size += len(item)
    if batch:
        payloads.append(_payload(batch))
    return payloads


def unpack(data: bytes, *, max_size: int = MAX_FRAME) -> list[Message]:
    """Every message in a payload, checked against its kind's schema."""
    if len(data) > max_size:
        raise WireError(f"oversized: {len(data)} bytes, at most {max_size}")
    if not data:
        raise WireError("empty")
    if data[0] != WIRE_VERSION:
        raise WireError(f"unknown wire version {data[0]}")
    try:
        body = msgpack.unpackb(
            data[1:], raw=False, use_list=True, strict_map_key=False,
            max_str_len=MAX_STR_LEN, max_bin_len=MAX_BIN_LEN, max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN, max_ext_len=0,
        )
    except (msgpack.UnpackException, ValueError, TypeError, RecursionError) as exc:
        # Truncated, trailing bytes, too deep, over a limit, bad UTF-8, an unhashable map key;
        # RecursionError only from msgpack's pure-Python fallback.
        raise WireError(f"not a gossip payload: {type(exc).__name__} {str(exc)[:80]}".rstrip()) from None
    if type(body) is not list or not 0 < len(body) <= MAX_MESSAGES:
        raise WireError(f"expected an array of 1 to {MAX_MESSAGES} messages")
    out = []
    for i, message in enumerate(body):
        if type(message) is not list or len(message) != 2:
            raise WireError("expected [kind, fields]", f"[{i}]")
        kind, fields = message
        try:
            schema = _schema(kind)
        except WireError as exc:
            raise exc.within(f"[{i}]") from None
        try:
            out.append((kind, schema.load_fields(fields)))
        except WireError as exc:
            raise exc.within(kind) from None
    return out


def decode(data: bytes, *, max_size: int = MAX_FRAME) -> Message:
    """The one message in a payload (``encode``'s inverse)."""
    messages = unpack(data, max_size=max_size)
    if len(messages) != 1:
        raise WireError(f"expected one message, got {len(messages)}")
    return messages[0]


# Sealed for the network.


def seal_packet(keyring: Keyring, payload: bytes) -> bytes:
    """A UDP packet: ``payload`` (from ``pack``) sealed with the primary key."""
    if len(payload) > UDP_PAYLOAD_BUDGET:
        raise WireError(f"a payload of {len(payload)} bytes exceeds the UDP budget of {UDP_PAYLOAD_BUDGET}")
    return keyring.seal(payload, UDP_AAD)


def open_packet(keyring: Keyring, data: bytes) -> list[Message]:
    """The messages of a received UDP packet. ``WireError`` or ``KeyringError``: drop and count it."""
    if len(data) > UDP_PACKET_MAX:
        raise WireError(f"oversized: {len(data)} bytes, at most {UDP_PACKET_MAX}")
    return unpack(keyring.open(data, UDP_AAD), max_size=UDP_PAYLOAD_BUDGET)


def seal_frame(keyring: Keyring, payload: bytes) -> bytes:
    """A TCP frame: the sealed payload's length (``FRAME_HEADER`` bytes, big-endian), then it."""
    if len(payload) + OVERHEAD > MAX_FRAME:
        raise WireError(f"a payload of {len(payload)} bytes exceeds the frame limit of {MAX_FRAME}")
    sealed = keyring.seal(payload, TCP_AAD)
    return len(sealed).to_bytes(FRAME_HEADER, "big") + sealed


def frame_length(header: bytes) -> int:
    """How many bytes to read after a frame's header; checked before anything is read."""
    if len(header) != FRAME_HEADER:
        raise WireError("truncated frame header")
    n = int.from_bytes(header, "big")
    if not OVERHEAD < n <= MAX_FRAME:
        raise WireError(f"a frame of {n} bytes is outside {OVERHEAD + 1} to {MAX_FRAME}")
    return n


def open_frame(keyring: Keyring, body: bytes) -> list[Message]:
    """The messages of a received TCP frame's body (after its header). Errors as ``open_packet``."""
    if len(body) > MAX_FRAME:
        raise WireError(f"oversized: {len(body)} bytes, at most {MAX_FRAME}")
    return unpack(keyring.open(body, TCP_AAD), max_size=MAX_FRAME - OVERHEAD)
