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
    """The plain form of ``obj``: dataclasses become dicts, sequences lists, enums their values."""
    enc = _ENCODERS.get(type(obj))
    if enc is None:
        enc = _encoder_for(type(obj))
    return enc(obj)


def to_compact(obj: Any) -> Any:
    """Like ``to_plain``, but a dataclass field equal to its default is left out: ``from_plain`` fills
    it back in. For Raft entries, which only ``from_plain`` ever reads: a job register is a quarter
    of its plain size, and every replica decodes it (and PySyncObj pickles, encrypts and sends it)
    that much faster."""
    enc = _COMPACT_ENCODERS.get(type(obj))
    if enc is None:
        enc = _encoder_for(type(obj), compact=True)
    return enc(obj)


def _identity(v: Any) -> Any:
    return v


def _encoder_table(item: Callable[[Any], Any]) -> dict[type, Callable[[Any], Any]]:
    """Encoders of the built-in types; containers encode their items with ``item``."""
    def encode_dict(d: dict) -> dict:
        return {k: item(v) for k, v in d.items()}

    def encode_seq(seq: Any) -> list:
        return [item(v) for v in seq]

    return {**{t: _identity for t in (type(None), bool, int, float, str, bytes)},
            dict: encode_dict, list: encode_seq, tuple: encode_seq, set: encode_seq, frozenset: encode_seq}


_ENCODERS = _encoder_table(to_plain)
_COMPACT_ENCODERS = _encoder_table(to_compact)


def _encoder_for(tp: type, compact: bool = False) -> Callable[[Any], Any]:
    table = _COMPACT_ENCODERS if compact else _ENCODERS
    if dataclasses.is_dataclass(tp):
        enc = _dataclass_encoder(tp, compact)
    elif issubclass(tp, enum.Enum):
        enc = _enum_value
    elif issubclass(tp, (bool, int, float, str, bytes)):
        enc = _identity
    elif issubclass(tp, dict):
        enc = table[dict]
    elif issubclass(tp, (list, tuple, set, frozenset)):
        enc = table[list]
    else:
        raise TypeError(f"cannot encode {tp.__name__}")
    table[tp] = enc
    return enc


def _enum_value(e: enum.Enum) -> Any:
    return e.value


_SCALARS = (type(None), bool, int, float, str, bytes)


def _without_none(tp: Any) -> Any:
    """``X`` for ``X | None`` (``Optional[X]``); any other hint as it is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_scalar_hint(tp: Any) -> bool:
    """A hint whose values msgpack packs as they are (exactly what to_plain would return)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return all(_is_scalar_hint(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return all(isinstance(a, _SCALARS) for a in typing.get_args(tp))
    return isinstance(tp, type) and tp in _SCALARS


def _dataclass_encoder(cls: type, compact: bool) -> Callable[[Any], Any]:
    """A function ``obj -> dict`` generated for ``cls`` from its type hints: scalar fields are read as they
    are, nested dataclasses and containers go through their own encoders, anything else through
    ``to_plain`` (``to_compact``). Built lazily (a class may refer to itself) and once per class."""
    table = _COMPACT_ENCODERS if compact else _ENCODERS

    def encode_first(obj: Any) -> Any:
        enc = table[cls] = _compile_encoder(cls, compact)  # from now on, straight to the compiled one
        return enc(obj)

    table[cls] = encode_first
    return encode_first


def _field_encoder_expr(value: str, hint: Any, plain: str) -> str:
    """An expression for the plain form of ``value`` (a field of type ``hint``); ``plain`` names the
    function for values that need one (``to_plain`` or ``to_compact``)."""
    if _is_scalar_hint(hint):
        return value
    hint = _without_none(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, set, frozenset, tuple) and args and (origin is not tuple or len(args) == 1 or
                                                             (len(args) == 2 and args[1] is Ellipsis)):
        if _is_scalar_hint(args[0]):
            return f"(None if {value} is None else list({value}))"
        return f"(None if {value} is None else [{plain}(x) for x in {value}])"
    if origin is dict and len(args) == 2:
        if _is_scalar_hint(args[1]):
            return f"(None if {value} is None else dict({value}))"
        return f"(None if {value} is None else {{k: {plain}(x) for k, x in {value}.items()}})"
    return f"{plain}({value})"


def _compile_encoder(cls: type, compact: bool) -> Callable[[Any], Any]:
    hints = _hints(cls)
    env: dict[str, Any] = {"to_plain": to_plain, "to_compact": to_compact}
    plain = "to_compact" if compact else "to_plain"
    if not compact:
        items = ", ".join(f"{name!r}: {_field_encoder_expr(f'o.{name}', hints.get(name, Any), plain)}"
                          for name in _field_names(cls))
        src = f"def encode(o):\n    return {{{items}}}\n"
    else:
        lines = ["def encode(o):", "    d = {}"]
        for f in dataclasses.fields(cls):
            name = f.name
            expr = _field_encoder_expr("v", hints.get(name, Any), plain)
            lines.append(f"    v = o.{name}")
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                env[f"default_{name}"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                test = f"v is not default_{name}" if f.default is None else f"v != default_{name}"
                lines.append(f"    if {test}:")
                lines.append(f"        d[{name!r}] = {expr}")
            else:
                lines.append(f"    d[{name!r}] = {expr}")
        lines.append("    return d")
        src = "\n".join(lines) + "\n"
    exec(compile(src, f"<codec {'compact ' if compact else ''}encoder {cls.__qualname__}>", "exec"), env)
    return env["encode"]


def from_plain(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` from its plain form."""
    return _decoder(tp)(value)


@cache
def _decoder(tp: Any) -> Callable[[Any], Any]:
    """A decoding function for ``tp``, built once per type from its hints (the hot path of every RPC
    and every Raft apply)."""
    if _without_none(tp) is not tp:
        return _decoder(_without_none(tp))  # every decoder passes None through
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
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
    """A function ``dict -> cls`` generated once per class: unknown keys are ignored, missing ones take
    their defaults. Built lazily (a class may refer to itself)."""
    def decode_first(v: Any) -> Any:
        return _compiled_decoder(cls)(v)

    return decode_first


_COMPILED: dict[type, Callable[[Any], Any]] = {}
_COMPILING: set[type] = set()


def _compiled_decoder(cls: type) -> Callable[[Any], Any]:
    fn = _COMPILED.get(cls)
    if fn is None:
        _COMPILING.add(cls)
        try:
            fn = _COMPILED[cls] = _compile_decoder(cls)
        finally:
            _COMPILING.discard(cls)
    return fn


def _element_decoder(tp: Any) -> Callable[[Any], Any]:
    """The decoder of ``tp`` to call from generated code: a dataclass's compiled function itself (no
    wrapper), unless that class is being compiled right now (a class that contains itself)."""
    tp = _without_none(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp not in _COMPILING:
        return _compiled_decoder(tp)
    return _decoder(tp)


def _field_decoder_expr(name: str, hint: Any, env: dict[str, Any]) -> str:
    """An expression decoding the wire value ``x`` of field ``name``; containers of dataclasses are
    decoded inline, without a call per container."""
    hint = _without_none(hint)
    origin = typing.get_origin(hint)
    if origin is list or origin is dict:
        elem = (typing.get_args(hint) or (Any, Any))[0 if origin is list else 1]
        dec = _element_decoder(elem)
        if dec is _identity:
            return f"(None if x is None else {origin.__name__}(x))"
        env[f"e_{name}"] = dec
        if origin is list:
            return f"(None if x is None else [e_{name}(y) for y in x])"
        return f"(None if x is None else {{k: e_{name}(y) for k, y in x.items()}})"
    dec = _element_decoder(hint)
    if dec is _identity:
        return "x"
    env[f"d_{name}"] = dec
    return f"d_{name}(x)"


def _compile_decoder(cls: type) -> Callable[[Any], Any]:
    hints = _hints(cls)
    decoders = {k: _decoder(h) for k, h in hints.items()}
    fields = [f for f in dataclasses.fields(cls) if f.name in decoders]
    params = getattr(cls, "__dataclass_params__", None)
    if (params is not None and params.frozen) or hasattr(cls, "__post_init__") or any(not f.init for f in fields):
        def decode_kwargs(v: Any) -> Any:  # through __init__: frozen classes, __post_init__ checks
            if v is None:
                return None
            if not isinstance(v, dict):
                _not_a_map(cls, v)
            return cls(**{k: decoders[k](x) for k, x in v.items() if k in decoders})
        return decode_kwargs
    # The fast path: a bare instance whose fields are set one by one, without building keyword arguments.
    # A membership test per field, then a lookup only for the fields present: Raft entries leave out
    # every field equal to its default (``to_compact``), so most fields are absent.
    env: dict[str, Any] = {"cls": cls, "new": object.__new__, "not_a_map": _not_a_map}
    lines = ["def decode(v):", "    if v is None:", "        return None", "    if not isinstance(v, dict):",
             "        not_a_map(cls, v)", "    o = new(cls)"]
    for f in fields:
        name = f.name
        conv = _field_decoder_expr(name, hints[name], env)
        if f.default is not dataclasses.MISSING:
            env[f"default_{name}"] = f.default
            missing = f"default_{name}"
        elif f.default_factory is not dataclasses.MISSING:
            env[f"factory_{name}"] = f.default_factory
            missing = f"factory_{name}()"
        else:
            env["missing_field"] = _missing_field
            missing = f"missing_field(cls, {name!r})"
        if conv == "x":
            lines.append(f"    o.{name} = v[{name!r}] if {name!r} in v else {missing}")
        else:
            lines += [f"    if {name!r} in v:", f"        x = v[{name!r}]", f"        o.{name} = {conv}",
                      "    else:", f"        o.{name} = {missing}"]
    lines.append("    return o")
    exec(compile("\n".join(lines) + "\n", f"<codec decoder {cls.__qualname__}>", "exec"), env)
    return env["decode"]


def _missing_field(cls: type, name: str) -> Any:
    raise TypeError(f"{cls.__name__}: missing required field {name!r}")


def _not_a_map(cls: type, value: Any) -> Any:
    raise TypeError(f"{cls.__name__}: expected a map of fields, got {type(value).__name__}")


def encode(obj: Any) -> bytes:
    return msgpack.packb(to_plain(obj), use_bin_type=True)


def encode_compact(obj: Any) -> bytes:
    """The msgpack bytes of ``to_compact(obj)``: for what only ``decode(data, type)`` reads back."""
    return msgpack.packb(to_compact(obj), use_bin_type=True)


def decode(data: bytes, tp: type[T] | None = None) -> Any:
    plain = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return plain if tp is None else from_plain(tp, plain)


@cache
def _hints(cls: type) -> dict[str, Any]:
    names = set(_field_names(cls))
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))
