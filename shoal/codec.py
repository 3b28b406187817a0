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
from collections.abc import Callable
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
    return _decoder(tp)(value)


def _identity(v: Any) -> Any:
    return v


@cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A decoding function for ``tp``, built once per type from its hints (the hot path of every RPC
    and every Raft apply)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _decoder(args[0])  # every decoder passes None through
        return _identity  # a union of scalars: the wire value is already right
    if origin in (list, set, frozenset, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        inner = _decoder(arg)
        if origin is list:
            if inner is _identity:
                return lambda v: None if v is None else list(v)
            return lambda v: None if v is None else [inner(x) for x in v]
        return lambda v: None if v is None else origin(inner(x) for x in v)
    if origin is dict:
        _, varg = typing.get_args(tp) or (Any, Any)
        inner = _decoder(varg)
        if inner is _identity:
            return lambda v: None if v is None else dict(v)
        return lambda v: None if v is None else {k: inner(x) for k, x in v.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return _dataclass_decoder(tp)
        if issubclass(tp, enum.Enum):
            return lambda v: None if v is None else tp(v)
        if tp is float:
            return lambda v: float(v) if type(v) is int else v
    return _identity


def _dataclass_decoder(cls: type) -> Callable[[Any], Any]:
    decoders: dict[str, Callable[[Any], Any]] = {}

    def decode_dc(v: Any) -> Any:
        if v is None:
            return None
        if not decoders:  # filled lazily: a class may refer to itself
            decoders.update({k: _decoder(h) for k, h in _hints(cls).items()})
        return cls(**{k: decoders[k](x) for k, x in v.items() if k in decoders})

    return decode_dc


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
