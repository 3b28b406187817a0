"""The one codec: dataclasses <-> plain values <-> msgpack bytes.

Every RPC message and every Raft command goes through here. ``to_plain`` turns
a dataclass tree into dicts/lists/scalars; ``from_plain(cls, value)`` rebuilds
it from the class's type hints, so the wire carries no type tags and old
records with missing fields still decode (fields take their defaults).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

MAX_MESSAGE = 64 * 1024 * 1024


def to_plain(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        if isinstance(obj, enum.Enum):
            return obj.value
        return obj
    if dataclasses.is_dataclass(obj):
        return {name: to_plain(getattr(obj, name)) for name in _field_names(type(obj))}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(f"cannot encode {type(obj).__name__}")


def from_plain(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` from its plain form."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return from_plain(args[0], value)
        for a in args:  # first matching scalar type wins
            if isinstance(a, type) and isinstance(value, a):
                return value
        return value
    if origin in (list, set, frozenset, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        items = [from_plain(arg, v) for v in value]
        return items if origin is list else origin(items)
    if origin is dict:
        _, varg = typing.get_args(tp) or (Any, Any)
        return {k: from_plain(varg, v) for k, v in value.items()}
    if tp is Any or tp is object:
        return value
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            kwargs = {k: from_plain(hints[k], v) for k, v in value.items() if k in hints}
            return tp(**kwargs)
        if issubclass(tp, enum.Enum):
            return tp(value)
        if tp is float and isinstance(value, int):
            return float(value)
    return value


def encode(obj: Any) -> bytes:
    return msgpack.packb(to_plain(obj), use_bin_type=True)


def decode(data: bytes, tp: type[T] | None = None) -> Any:
    plain = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return plain if tp is None else from_plain(tp, plain)


def clone(obj: T) -> T:
    """A deep copy through the codec (what a replica would see)."""
    return from_plain(type(obj), to_plain(obj))


@cache
def _hints(cls: type) -> dict[str, Any]:
    names = set(_field_names(cls))
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))
