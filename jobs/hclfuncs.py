"""The HCL2 functions a job file may call, as in Nomad's jobspec2 (a subset of Terraform's).

Values are plain Python: str, int/float (numbers), bool, None (null), list, dict.
Functions whose result changes from run to run (timestamp, uuid) are left out
on purpose: a job file must mean the same thing every time it is read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

MAX_COLLECTION = 100_000  # no function builds a list or string longer than this
MAX_WIDTH = 10_000  # widest field format() pads to


class FuncError(Exception):
    """A function was called wrongly; the message says how."""


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def normalize_number(v: float | int) -> float | int:
    """HCL has one number type: show integral values as ints."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    return v


def to_string(v: Any) -> str:
    """The string form HCL gives a primitive value (in templates and tostring())."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if is_number(v):
        n = normalize_number(v)
        return str(n) if isinstance(n, int) else repr(n)
    if v is None:
        raise FuncError("a null value cannot be turned into a string")
    raise FuncError(f"a {type_name(v)} cannot be turned into a string")


def to_number(v: Any) -> int | float:
    if is_number(v):
        return v
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            raise FuncError(f"{json.dumps(v)} is not a number") from None
        if not math.isfinite(f):
            raise FuncError(f"{json.dumps(v)} is not a finite number")
        return normalize_number(f)
    raise FuncError(f"a {type_name(v)} is not a number")


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in ("true", "false"):
        return v == "true"
    raise FuncError(f"{_show(v)} is not a bool")


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v is None or isinstance(v, (bool, int, float)):
        return to_string(v) if v is not None else "null"
    return f"a {type_name(v)}"


def _int(v: Any, what: str = "argument") -> int:
    n = to_number(v)
    if isinstance(n, float):
        if not n.is_integer():
            raise FuncError(f"{what} must be a whole number, got {n}")
        n = int(n)
    return n


def _str(v: Any) -> str:
    if isinstance(v, (list, dict)):
        raise FuncError(f"expected a string, got a {type_name(v)}")
    return to_string(v)


def _list(v: Any, what: str = "argument") -> list[Any]:
    if isinstance(v, list):
        return v
    raise FuncError(f"{what} must be a list, got {_show(v)}")


def _map(v: Any, what: str = "argument") -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    raise FuncError(f"{what} must be a map, got {_show(v)}")


def _cap(n: int) -> None:
    if n > MAX_COLLECTION:
        raise FuncError(f"result too large ({n} elements; at most {MAX_COLLECTION})")


# ---- format -------------------------------------------------------------

_VERB = re.compile(r"%(?:\[(\d+)\])?([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])?")


def _format_one(verb: str, flags: str, width: str | None, prec: str | None, v: Any) -> str:
    if width and int(width) > MAX_WIDTH:
        raise FuncError(f"format width {width} is too large")
    if prec and int(prec) > MAX_WIDTH:
        raise FuncError(f"format precision {prec} is too large")
    align = "<" if "-" in flags else ""
    zero = "0" if "0" in flags and not align else ""
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    w = width or ""
    if verb in ("s", "v", "q"):
        if verb == "q":
            text = json.dumps(_str(v), ensure_ascii=False)
        elif verb == "v" and isinstance(v, (list, dict)):
            text = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        else:
            text = _str(v)
        if prec:
            text = text[: int(prec)]
        return format(text, f"{align or '>'}{w}")
    if verb == "t":
        return format(to_string(to_bool(v)), f"{align or '>'}{w}")
    if verb in ("d", "x", "X", "o", "b"):
        n = _int(v, "%" + verb + " value")
        alt = "#" if "#" in flags and verb != "d" else ""
        return format(n, f"{align}{sign}{alt}{zero}{w}{verb}")
    if verb in ("f", "F", "e", "E", "g", "G"):
        n = float(to_number(v))
        p = f".{prec}" if prec else (".6" if verb in "fFeE" else "")
        return format(n, f"{align}{sign}{zero}{w}{p}{verb}")
    raise FuncError(f"unsupported format verb %{verb}")


def _format(fmt: Any, *args: Any) -> str:
    f = _str(fmt)
    out: list[str] = []
    pos, argi = 0, 0
    for m in _VERB.finditer(f):
        out.append(f[pos : m.start()])
        pos = m.end()
        idx, flags, width, prec, verb = m.groups()
        if verb is None:
            raise FuncError(f"incomplete format verb at the end of {json.dumps(f)}")
        if verb == "%":
            out.append("%")
            continue
        if idx is not None:
            argi = int(idx) - 1
        if argi < 0 or argi >= len(args):
            raise FuncError(f"not enough arguments for format {json.dumps(f)}")
        out.append(_format_one(verb, flags, width, prec, args[argi]))
        argi += 1
        if sum(len(s) for s in out) > MAX_COLLECTION:
            raise FuncError("format result too large")
    out.append(f[pos:])
    return "".join(out)


def _formatlist(fmt: Any, *args: Any) -> list[str]:
    n = None
    for a in args:
        if isinstance(a, list):
            if n is not None and len(a) != n:
                raise FuncError("all list arguments of formatlist must have the same length")
            n = len(a)
    if n is None:
        return [_format(fmt, *args)]
    return [_format(fmt, *[a[i] if isinstance(a, list) else a for a in args]) for i in range(n)]


# ---- strings ------------------------------------------------------------


def _split(sep: Any, s: Any) -> list[str]:
    sep, s = _str(sep), _str(s)
    if sep == "":
        raise FuncError("split separator must not be empty")
    return s.split(sep)


def _join(sep: Any, *lists: Any) -> str:
    items: list[str] = []
    for lst in lists:
        items.extend(_str(x) for x in _list(lst))
    text = _str(sep).join(items)
    _cap(len(text))
    return text


def _substr(s: Any, offset: Any, length: Any) -> str:
    text, off, ln = _str(s), _int(offset), _int(length)
    if off < 0:
        off = max(len(text) + off, 0)
    if ln < 0:
        return text[off:]
    return text[off : off + ln]


def _indent(n: Any, s: Any) -> str:
    pad = " " * min(_int(n), MAX_WIDTH)
    lines = _str(s).split("\n")
    return "\n".join([lines[0]] + [pad + ln if ln else ln for ln in lines[1:]])


def _title(s: Any) -> str:
    return re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).upper(), _str(s))


def _replace(s: Any, old: Any, new: Any) -> str:
    text, o = _str(s), _str(old)
    if len(o) >= 2 and o.startswith("/") and o.endswith("/"):
        try:
            pattern = re.compile(o[1:-1])
        except re.error as e:
            raise FuncError(f"invalid regular expression {json.dumps(o)}: {e}") from None
        return pattern.sub(_str(new).replace("$", "\\"), text)
    if o == "":
        return text
    out = text.replace(o, _str(new))
    _cap(len(out))
    return out


def _trim(s: Any, chars: Any) -> str:
    return _str(s).strip(_str(chars))


def _file(read: Callable[[str], str]) -> Callable[[Any], str]:
    def file(path: Any) -> str:
        return read(_str(path))

    return file


# ---- collections and numbers ----------------------------------------------


def _length(v: Any) -> int:
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise FuncError(f"length needs a string, list or map, got {_show(v)}")


def _concat(*lists: Any) -> list[Any]:
    out: list[Any] = []
    for lst in lists:
        out.extend(_list(lst))
    _cap(len(out))
    return out


def _numbers(args: tuple[Any, ...], name: str) -> list[int | float]:
    if not args:
        raise FuncError(f"{name} needs at least one number")
    return [to_number(a) for a in args]


def _min(*args: Any) -> int | float:
    return min(_numbers(args, "min"))


def _max(*args: Any) -> int | float:
    return max(_numbers(args, "max"))


def _range(*args: Any) -> list[int | float]:
    nums = [to_number(a) for a in args]
    if len(nums) == 1:
        start, limit, step = 0, nums[0], 1
    elif len(nums) == 2:
        start, limit, step = nums[0], nums[1], 1 if nums[1] >= nums[0] else -1
    elif len(nums) == 3:
        start, limit, step = nums
    else:
        raise FuncError("range takes 1 to 3 numbers")
    if step == 0:
        raise FuncError("range step must not be zero")
    count = max(0, math.ceil((limit - start) / step))
    _cap(count)
    return [normalize_number(start + i * step) for i in range(count)]


def _flatten(v: Any) -> list[Any]:
    out: list[Any] = []

    def walk(x: Any) -> None:
        for item in x:
            if isinstance(item, list):
                walk(item)
            else:
                out.append(item)

    walk(_list(v))
    return out


def _distinct(v: Any) -> list[Any]:
    out: list[Any] = []
    for x in _list(v):
        if x not in out:
            out.append(x)
    return out


def _element(v: Any, i: Any) -> Any:
    lst = _list(v)
    if not lst:
        raise FuncError("element of an empty list")
    n = _int(i)
    if n < 0:
        raise FuncError("element index must not be negative")
    return lst[n % len(lst)]


def _index(v: Any, x: Any) -> int:
    lst = _list(v)
    if x not in lst:
        raise FuncError(f"{_show(x)} is not in the list")
    return lst.index(x)


def _lookup(m: Any, key: Any, *default: Any) -> Any:
    d, k = _map(m), _str(key)
    if k in d:
        return d[k]
    if default:
        return default[0]
    raise FuncError(f"no key {json.dumps(k)} in the map (give lookup a default)")


def _merge(*maps: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in maps:
        if m is not None:
            out.update(_map(m))
    return out


def _sort(v: Any) -> list[str]:
    return sorted(_str(x) for x in _list(v))


def _slice(v: Any, start: Any, end: Any) -> list[Any]:
    lst, s, e = _list(v), _int(start), _int(end)
    if not (0 <= s <= e <= len(lst)):
        raise FuncError(f"slice indices {s}..{e} are out of range for a list of {len(lst)}")
    return lst[s:e]


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None and a != "":
            return a
    raise FuncError("coalesce: every argument is null or empty")


def _coalescelist(*args: Any) -> Any:
    for a in args:
        if _list(a):
            return a
    raise FuncError("coalescelist: every list is empty")


def _zipmap(keys: Any, values: Any) -> dict[str, Any]:
    k, v = _list(keys), _list(values)
    if len(k) != len(v):
        raise FuncError("zipmap needs lists of the same length")
    return {_str(a): b for a, b in zip(k, v)}


def _keys(m: Any) -> list[str]:
    return sorted(_map(m))


def _values(m: Any) -> list[Any]:
    d = _map(m)
    return [d[k] for k in sorted(d)]


def _tostring(v: Any) -> str | None:
    return None if v is None else to_string(v)


def _tonumber(v: Any) -> int | float | None:
    return None if v is None else to_number(v)


def _tobool(v: Any) -> bool | None:
    return None if v is None else to_bool(v)


def _tolist(v: Any) -> list[Any]:
    return list(_list(v))


def _tomap(v: Any) -> dict[str, Any]:
    return dict(_map(v))


def _jsondecode(s: Any) -> Any:
    try:
        return json.loads(_str(s))
    except (ValueError, RecursionError) as e:
        raise FuncError(f"invalid JSON: {e}") from None


def _jsonencode(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _base64decode(s: Any) -> str:
    try:
        return base64.b64decode(_str(s), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise FuncError(f"invalid base64 text: {e}") from None


def _parseint(s: Any, base: Any) -> int:
    b = _int(base)
    if not 2 <= b <= 62:
        raise FuncError("parseint base must be between 2 and 62")
    try:
        return int(_str(s), b)
    except ValueError:
        raise FuncError(f"{_show(s)} is not a base-{b} integer") from None


def _digest(algo: str) -> Callable[[Any], str]:
    def digest(s: Any) -> str:
        return hashlib.new(algo, _str(s).encode()).hexdigest()

    return digest


def functions(read_file: Callable[[str], str]) -> dict[str, Callable[..., Any]]:
    """Every function a job file may call; ``read_file`` backs ``file()`` (paths relative to the job file)."""

    def fileexists(path: Any) -> bool:
        try:
            read_file(_str(path))
        except FuncError:
            return False
        return True

    return {
        # strings
        "format": _format,
        "formatlist": _formatlist,
        "lower": lambda s: _str(s).lower(),
        "upper": lambda s: _str(s).upper(),
        "title": _title,
        "trimspace": lambda s: _str(s).strip(),
        "trim": _trim,
        "trimprefix": lambda s, p: _str(s).removeprefix(_str(p)),
        "trimsuffix": lambda s, p: _str(s).removesuffix(_str(p)),
        "chomp": lambda s: _str(s).rstrip("\r\n"),
        "replace": _replace,
        "substr": _substr,
        "strrev": lambda s: _str(s)[::-1],
        "indent": _indent,
        "join": _join,
        "split": _split,
        "startswith": lambda s, p: _str(s).startswith(_str(p)),
        "endswith": lambda s, p: _str(s).endswith(_str(p)),
        # collections
        "length": _length,
        "concat": _concat,
        "contains": lambda lst, x: x in _list(lst),
        "distinct": _distinct,
        "flatten": _flatten,
        "element": _element,
        "index": _index,
        "keys": _keys,
        "values": _values,
        "lookup": _lookup,
        "merge": _merge,
        "range": _range,
        "reverse": lambda lst: list(reversed(_list(lst))),
        "sort": _sort,
        "slice": _slice,
        "coalesce": _coalesce,
        "coalescelist": _coalescelist,
        "compact": lambda lst: [_str(x) for x in _list(lst) if x is not None and x != ""],
        "zipmap": _zipmap,
        # numbers
        "min": _min,
        "max": _max,
        "abs": lambda n: abs(to_number(n)),
        "ceil": lambda n: math.ceil(to_number(n)),
        "floor": lambda n: math.floor(to_number(n)),
        "signum": lambda n: (to_number(n) > 0) - (to_number(n) < 0),
        "parseint": _parseint,
        # conversions
        "tostring": _tostring,
        "tonumber": _tonumber,
        "tobool": _tobool,
        "tolist": _tolist,
        "toset": lambda lst: _distinct(lst),
        "tomap": _tomap,
        # encodings
        "jsonencode": _jsonencode,
        "jsondecode": _jsondecode,
        "base64encode": lambda s: base64.b64encode(_str(s).encode()).decode("ascii"),
        "base64decode": _base64decode,
        "urlencode": lambda s: urllib.parse.quote(_str(s), safe=""),
        "md5": _digest("md5"),
        "sha1": _digest("sha1"),
        "sha256": _digest("sha256"),
        "sha512": _digest("sha512"),
        # files (relative to the job file)
        "file": _file(read_file),
        "fileexists": fileexists,
    }
