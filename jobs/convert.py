"""Converting decoded values to the types the model wants, the way HCL's cty converts them.

Numbers written as strings ("101") are numbers, "true"/"false" are bools, and
primitives become strings where a string is wanted; anything else is an error
whose message shows what was found.
"""

from __future__ import annotations

import json
import math
from typing import Any

from shoal.jobs.durations import parse_duration
from shoal.jobs.hclfuncs import type_name


class ConvertError(Exception):
    """A value of the wrong type or shape; the message is shown after the field path."""


def show(v: Any) -> str:
    """A value as a message shows it: strings quoted, collections by kind."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False) if len(v) <= 60 else json.dumps(v[:57] + "...", ensure_ascii=False)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return f"a {type_name(v)}"


def to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ConvertError(f"expected a number, got {show(v)}")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return int(v)
        raise ConvertError(f"expected a whole number, got {show(v)}")
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            raise ConvertError(f"expected a number, got {show(v)}") from None
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise ConvertError(f"expected a whole number, got {show(v)}")
    raise ConvertError(f"expected a number, got {show(v)}")


def to_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return str(int(v)) if v.is_integer() else repr(v)
    raise ConvertError(f"expected a string, got {show(v)}")


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip() in ("true", "false"):
        return v.strip() == "true"
    raise ConvertError(f"expected true or false, got {show(v)}")


def to_duration(v: Any) -> float:
    if isinstance(v, str):
        try:
            return parse_duration(v)
        except ValueError:
            raise ConvertError(f'expected a duration such as "30s", "1m30s" or "500ms", got {show(v)}') from None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0:
        return 0.0
    raise ConvertError(f'expected a duration such as "30s", "1m30s" or "500ms", got {show(v)}')


def to_str_list(v: Any) -> list[str]:
    if not isinstance(v, list):
        raise ConvertError(f"expected a list of strings, got {show(v)}")
    out = []
    for i, item in enumerate(v):
        try:
            out.append(to_str(item))
        except ConvertError:
            raise ConvertError(f"expected a list of strings, but item {i} is {show(item)}") from None
    return out


def to_str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise ConvertError(f"expected a map of strings, got {show(v)}")
    out = {}
    for k, item in v.items():
        try:
            out[str(k)] = to_str(item)
        except ConvertError:
            raise ConvertError(f"expected a map of strings, but {json.dumps(str(k))} is {show(item)}") from None
    return out
