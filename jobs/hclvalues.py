"""The values HCL expressions read and compute with.

The scope an expression is evaluated in: ``var`` (:class:`Variables`),
``local`` (:class:`LazyLocals`, each evaluated on first use), dynamic-block
iterators and ``for`` variables. A name the scope does not hold is a runtime
value (:class:`RuntimeRef`). Then what operators and ``for`` do to values:
equality, arithmetic, comparison, iteration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shoal.jobs.hclfuncs import FuncError, normalize_number, to_bool, to_number, to_string, type_name
from shoal.jobs.hclsyntax import EvalError

if TYPE_CHECKING:
    from shoal.jobs.hcleval import Evaluator

Scope = Mapping[str, Any]

_COMPARE = {"<", ">", "<=", ">="}


class RuntimeRef(Exception):
    """A reference to a value only the client knows (kept verbatim inside templates)."""

    def __init__(self, name: str, line: int | None):
        super().__init__(name)
        self.name = name
        self.line = line


def unknown_name(name: str) -> str:
    return (
        f"unknown variable {json.dumps(name)}; use var.NAME or local.NAME, "
        f'and quote runtime values such as "${{{name}...}}"'
    )


def show(v: Any) -> str:
    """A value as an error message quotes it."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v is None:
        return "null"
    if isinstance(v, (bool, int, float)):
        return to_string(v)
    return f"a {type_name(v)}"


class Variables(dict[str, Any]):
    """``var.*``: the declared variables' values; ``unset`` ones failed (already reported)."""

    unset: frozenset[str] = frozenset()


def variables_object(values: Mapping[str, Any], unset: set[str] | frozenset[str] = frozenset()) -> Variables:
    out = Variables(values)
    out.unset = frozenset(unset)
    return out


class LazyLocals(Mapping[str, Any]):
    """``local.*``: each local is evaluated on first use; cycles are errors."""

    def __init__(self) -> None:
        self._defs: dict[str, tuple[Any, Evaluator, int | None]] = {}
        self._values: dict[str, Any] = {}
        self._failed: set[str] = set()
        self._busy: list[str] = []
        self.scope: Scope = {}

    def define(self, name: str, node: Any, ev: Evaluator, line: int | None) -> None:
        self._defs[name] = (node, ev, line)

    def defined_at(self, name: str) -> int | None:
        return self._defs[name][2] if name in self._defs else None

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        if name in self._failed:
            raise EvalError(None, "")  # its own error was reported where it is defined
        node, ev, line = self._defs[name]
        if name in self._busy:
            chain = " -> ".join(f"local.{n}" for n in [*self._busy[self._busy.index(name):], name])
            raise EvalError(line, f"local values refer to each other in a cycle: {chain}")
        self._busy.append(name)
        try:
            value = ev.eval(node, self.scope)
        except EvalError:
            self._failed.add(name)
            raise
        finally:
            self._busy.pop()
        self._values[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._defs

    def __iter__(self) -> Iterator[str]:
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)


def iterate(coll: Any, line: int | None) -> Iterator[tuple[Any, Any]]:
    """(key, value) pairs of a list (index, element) or a map (key, value)."""
    if isinstance(coll, list):
        yield from enumerate(coll)
    elif isinstance(coll, Mapping):
        for k in sorted(coll):
            yield k, coll[k]
    else:
        raise EvalError(line, f"cannot iterate over {show(coll)}: expected a list or a map")


def for_scope(scope: Scope, names: tuple[str, ...] | list[str], key: Any, value: Any) -> dict[str, Any]:
    """``scope`` with a ``for``'s names bound: (value,) or (key, value)."""
    inner = dict(scope)
    if len(names) == 2:
        inner[names[0]] = key
    inner[names[-1]] = value
    return inner


def bool_operand(v: Any, op: str, line: int | None) -> bool:
    try:
        return to_bool(v)
    except FuncError:
        raise EvalError(line, f"operator {op} needs bools, got {show(v)}") from None


def _equal(a: Any, b: Any) -> bool:
    if type_name(a) != type_name(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def binary(op: str, left: Any, right: Any, line: int | None) -> Any:
    """``left op right``, both evaluated (``&&`` and ``||`` short-circuit before this)."""
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("&&", "||"):
        return bool_operand(right, op, line)
    try:
        a, b = to_number(left), to_number(right)
    except FuncError:
        raise EvalError(line, f"operator {op} needs numbers, got {show(left)} and {show(right)}") from None
    if op in _COMPARE:
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    try:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            r = a / b
        else:
            r = math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else int(math.fmod(a, b))
    except ZeroDivisionError:
        raise EvalError(line, f"division by zero ({show(left)} {op} {show(right)})") from None
    except (OverflowError, ValueError):
        raise EvalError(line, f"arithmetic overflow ({op})") from None
    if isinstance(r, float) and not math.isfinite(r):
        raise EvalError(line, f"arithmetic overflow ({op})")
    if isinstance(r, int) and abs(r) > 2**256:
        raise EvalError(line, f"arithmetic overflow ({op})")
    return normalize_number(r)
