"""Evaluating HCL2 expressions and templates from python-hcl2's Lark tree.

Pure: values in, values out. Variables are looked up in a scope (``var``,
``local``, dynamic-block iterators, ``for`` variables). An interpolation that
names anything else (``${NOMAD_ALLOC_ID}``, ``${attr.kernel.name}``,
``${meta.rack}``, ``${env["HOME"]}`` ...) is a runtime value Nomad resolves on
the client: it is kept verbatim, ``${...}`` and all.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import hcl2
from lark import Token, Tree
from lark.exceptions import LarkError

from shoal.jobs.hclfuncs import (
    MAX_COLLECTION,
    FuncError,
    is_number,
    normalize_number,
    to_bool,
    to_number,
    to_string,
    type_name,
)

Scope = Mapping[str, Any]


class EvalError(Exception):
    """An expression that cannot be evaluated. An empty message means: already reported."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _RuntimeRef(Exception):
    """A reference to a value only the client knows (kept verbatim inside templates)."""

    def __init__(self, name: str, line: int | None):
        super().__init__(name)
        self.name = name
        self.line = line


def node_line(node: Any) -> int | None:
    if isinstance(node, Token):
        return node.line
    meta = getattr(node, "meta", None)
    if meta is None or meta.empty:
        return None
    return meta.line


def _kids(node: Tree) -> list[Tree]:
    """A node's sub-trees, without newlines and comments."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v is None:
        return "null"
    if isinstance(v, (bool, int, float)):
        return to_string(v)
    return f"a {type_name(v)}"


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


# ---- templates ------------------------------------------------------------------


@dataclass(slots=True)
class _Lit:
    text: str


@dataclass(slots=True)
class _Interp:
    node: Any
    ev: Evaluator
    source: str  # "${...}" as written
    line: int | None


@dataclass(slots=True)
class _Directive:
    kind: str  # if | else | endif | for | endfor
    ev: Evaluator
    line: int | None
    node: Any = None  # the condition or the collection
    names: tuple[str, ...] = ()  # for: (value,) or (key, value)
    strip_left: bool = False
    strip_right: bool = False


@dataclass(slots=True)
class _If:
    cond: _Directive
    then: list[Any]
    other: list[Any]


@dataclass(slots=True)
class _For:
    head: _Directive
    body: list[Any]


_ESCAPES = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.S)
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def unescape(raw: str, line: int | None) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2):
            code = int(m.group(1) or m.group(2), 16)
            if code > 0x10FFFF:
                raise EvalError(line, f"invalid unicode escape \\U{m.group(2)}")
            return chr(code)
        c = m.group(3)
        if c in _SIMPLE:
            return _SIMPLE[c]
        raise EvalError(line, f"invalid escape sequence \\{c} in a quoted string")

    return _ESCAPES.sub(one, raw)


def _heredoc_body(value: str, line: int | None) -> str:
    m = re.match(r"<<(-?)([A-Za-z][\w.-]*)\r?\n", value)
    if m is None:  # the grammar guarantees the shape; be safe anyway
        raise EvalError(line, "malformed heredoc")
    trim, mark = m.group(1) == "-", m.group(2)
    rest = value[m.end() :].rstrip("\r\n")
    rest = rest.removesuffix(mark).rstrip(" \t")
    if not trim:
        return rest
    lines = rest.split("\n")
    indents = [len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()]
    cut = min(indents, default=0)
    return "\n".join(ln[cut:] if ln.strip() else ln.lstrip(" \t") for ln in lines)


class _Scanner:
    """Finds ``${...}`` and ``%{...}`` in heredoc text (quoted strings and braces may nest)."""

    def __init__(self, text: str, line: int | None):
        self.text = text
        self.line = line

    def _line_at(self, pos: int) -> int | None:
        return None if self.line is None else self.line + self.text.count("\n", 0, pos)

    def end_of_expr(self, i: int) -> int:
        """The index of the ``}`` closing an interpolation whose body starts at ``i``."""
        t, depth = self.text, 0
        while i < len(t):
            c = t[i]
            if c == '"':
                i = self._end_of_string(i + 1)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    return i
                depth -= 1
            i += 1
        raise EvalError(self._line_at(i), "unterminated ${ or %{ in heredoc")

    def _end_of_string(self, i: int) -> int:
        t = self.text
        while i < len(t):
            c = t[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                return i + 1
            if c == "\n":
                break
            if t.startswith("${", i) or t.startswith("%{", i):
                i = self.end_of_expr(i + 2) + 1
                continue
            i += 1
        raise EvalError(self._line_at(i), "unterminated string inside a heredoc interpolation")

    def pieces(self) -> Iterator[tuple[str, str, int]]:
        """("lit", text, pos) | ("interp", inner, pos) | ("directive", inner, pos)."""
        t, i, lit, lit_start = self.text, 0, [], 0
        while i < len(t):
            if t.startswith("$${", i) or t.startswith("%%{", i):
                lit.append(t[i + 1 : i + 3])
                i += 3
                continue
            if t.startswith("${", i) or t.startswith("%{", i):
                if lit:
                    yield "lit", "".join(lit), lit_start
                    lit = []
                end = self.end_of_expr(i + 2)
                yield ("interp" if t[i] == "$" else "directive"), t[i + 2 : end], i
                i = end + 1
                lit_start = i
                continue
            lit.append(t[i])
            i += 1
        if lit:
            yield "lit", "".join(lit), lit_start


def parse_snippet(text: str, line: int | None) -> Any:
    """Parse one expression written inside a heredoc; its lines count from ``line``."""
    try:
        tree = hcl2.parses_to_tree("_ = " + text.replace("\n", " "))
    except LarkError as e:
        raise EvalError(line, f"invalid expression {json.dumps(text.strip())} in heredoc: {_lark_brief(e)}") from None
    body = tree.children[0]
    attrs = [c for c in _kids(body) if c.data == "attribute"]
    if len(attrs) != 1:
        raise EvalError(line, f"invalid expression {json.dumps(text.strip())} in heredoc")
    return _kids(attrs[0])[-1]


def _lark_brief(e: LarkError) -> str:
    tok = getattr(e, "token", None)
    if tok is not None and tok.type != "$END":
        return f"unexpected {json.dumps(str(tok).strip()[:20])}"
    return "incomplete expression"


# ---- the evaluator -----------------------------------------------------------------


_ARITH = {"+", "-", "*", "/", "%"}
_COMPARE = {"<", ">", "<=", ">="}


class Evaluator:
    """Evaluates nodes of one parsed text (``src``), whose line 1 is file line ``1 + line_offset``."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]], src: str, line_offset: int = 0):
        self.functions = functions
        self.src = src
        self.line_offset = line_offset

    def line(self, node: Any) -> int | None:
        n = node_line(node)
        return None if n is None else n + self.line_offset

    def source_of(self, node: Any) -> str:
        meta = getattr(node, "meta", None)
        if meta is None or meta.empty:
            return ""
        return self.src[meta.start_pos : meta.end_pos]

    # -- entry points --

    def eval(self, node: Any, scope: Scope) -> Any:
        """The value of an expression; references to unknown names are errors here."""
        try:
            return self._eval(node, scope)
        except _RuntimeRef as r:
            raise EvalError(r.line, _unknown_name(r.name)) from None
        except RecursionError:
            raise EvalError(self.line(node), "expression nested too deeply") from None

    def literal_string(self, node: Any) -> str | None:
        """The text of a plain quoted string with no interpolation, else None (block labels)."""
        if isinstance(node, Tree) and node.data == "string":
            parts = [c for c in node.children if isinstance(c, Tree) and c.data == "string_part"]
            out = []
            for p in parts:
                (x,) = p.children
                if not isinstance(x, Token):
                    return None
                if x.type == "STRING_CHARS":
                    out.append(unescape(str(x), x.line))
                elif x.type in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
                    out.append(str(x)[1:])
                else:
                    return None
            return "".join(out)
        if isinstance(node, Tree) and node.data == "identifier":
            return str(node.children[0])
        return None

    # -- expressions --

    def _eval(self, node: Any, scope: Scope) -> Any:
        if isinstance(node, Token):
            raise EvalError(self.line(node), f"unexpected {json.dumps(str(node))}")
        method = getattr(self, "_x_" + str(node.data), None)
        if method is None:
            raise EvalError(self.line(node), f"unsupported expression: {node.data.replace('_', ' ')}")
        return method(node, scope)

    def _x_expr_term(self, node: Tree, scope: Scope) -> Any:
        kids = _kids(node)
        if len(kids) != 1:
            raise EvalError(self.line(node), "malformed expression")
        return self._eval(kids[0], scope)

    def _x_int_lit(self, node: Tree, scope: Scope) -> Any:
        text = str(node.children[0])
        try:
            return int(text)
        except ValueError:
            raise EvalError(self.line(node), f"number {text[:20]}... is too long") from None

    def _x_float_lit(self, node: Tree, scope: Scope) -> Any:
        value = float(str(node.children[0]))
        if not math.isfinite(value):
            raise EvalError(self.line(node), f"number {str(node.children[0])[:20]} is out of range")
        return normalize_number(value)

    def _x_literal_value(self, node: Tree, scope: Scope) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _x_identifier(self, node: Tree, scope: Scope) -> Any:
        name = str(node.children[0])
        if name in scope:
            return scope[name]
        raise _RuntimeRef(name, self.line(node))

    def _x_keyword(self, node: Tree, scope: Scope) -> Any:
        raise EvalError(self.line(node), f"{json.dumps(str(node.children[0]))} is a keyword, not a value")

    def _x_string(self, node: Tree, scope: Scope) -> Any:
        return self.render(self._string_parts(node), scope)

    def _x_template_string(self, node: Tree, scope: Scope) -> Any:
        raw = str(node.children[0])
        inner = raw[2:-2] if raw.startswith('\\"') else raw.strip('"')
        return unescape(inner, self.line(node))

    def _x_heredoc_template(self, node: Tree, scope: Scope) -> Any:
        return self._heredoc(node, scope)

    def _x_heredoc_template_trim(self, node: Tree, scope: Scope) -> Any:
        return self._heredoc(node, scope)

    def _heredoc(self, node: Tree, scope: Scope) -> Any:
        tok = node.children[0]
        line = self.line(tok)
        body = _heredoc_body(str(tok), line)
        parts = self.heredoc_parts(body, None if line is None else line + 1)
        return self.render(parts, scope, whole_value=False)

    def _x_tuple(self, node: Tree, scope: Scope) -> Any:
        return [self._eval(k, scope) for k in _kids(node)]

    def _x_object(self, node: Tree, scope: Scope) -> Any:
        out: dict[str, Any] = {}
        for elem in _kids(node):
            key_node, value_node = _kids(elem)[0], _kids(elem)[-1]
            key = self._object_key(key_node, scope)
            if key in out:
                raise EvalError(self.line(elem), f"duplicate key {json.dumps(key)} in object")
            out[key] = self._eval(value_node, scope)
        return out

    def _object_key(self, key_node: Tree, scope: Scope) -> str:
        (inner,) = _kids(key_node) or [key_node.children[0]]
        if isinstance(inner, Tree) and inner.data == "keyword":
            return str(inner.children[0])
        if isinstance(inner, Tree) and inner.data == "expr_term":
            sub = _kids(inner)
            if len(sub) == 1 and sub[0].data == "identifier" and len(inner.children) == 1:
                return str(sub[0].children[0])  # a bare name is the key itself
            if len(sub) == 1 and sub[0].data == "literal_value":
                return str(sub[0].children[0])
        key = self._eval(inner, scope)
        if isinstance(key, (list, dict)) or key is None:
            raise EvalError(self.line(key_node), f"object key must be a string, got {_show(key)}")
        return to_string(key)

    def _x_conditional(self, node: Tree, scope: Scope) -> Any:
        cond, yes, no = _kids(node)
        c = self._eval(cond, scope)
        try:
            flag = to_bool(c)
        except FuncError:
            raise EvalError(self.line(cond), f"condition must be a bool, got {_show(c)}") from None
        return self._eval(yes if flag else no, scope)

    def _x_unary_op(self, node: Tree, scope: Scope) -> Any:
        op = str(node.children[0])
        value = self._eval(_kids(node)[0], scope)
        try:
            if op == "-":
                return normalize_number(-to_number(value))
            return not to_bool(value)
        except FuncError as e:
            raise EvalError(self.line(node), f"operator {op}: {e}") from None

    def _x_binary_op(self, node: Tree, scope: Scope) -> Any:
        left_node, term = _kids(node)[:2]
        op_node, right_node = _kids(term)[:2]
        op = str(op_node.children[0]).strip()
        left = self._eval(left_node, scope)
        if op == "&&" and _bool_operand(left, op, self.line(node)) is False:
            return False
        if op == "||" and _bool_operand(left, op, self.line(node)) is True:
            return True
        right = self._eval(right_node, scope)
        return _binary(op, left, right, self.line(node))

    def _x_function_call(self, node: Tree, scope: Scope) -> Any:
        names = [str(k.children[0]) for k in _kids(node) if k.data == "identifier"]
        line = self.line(node)
        if len(names) != 1:
            raise EvalError(line, f"provider functions ({'::'.join(names)}) are not supported")
        name = names[0]
        fn = self.functions.get(name)
        if fn is None:
            raise EvalError(line, f"unknown function {name}()")
        args: list[Any] = []
        arg_tree = next((k for k in _kids(node) if k.data == "arguments"), None)
        if arg_tree is not None:
            args = [self._eval(a, scope) for a in _kids(arg_tree)]
            if any(isinstance(t, Token) and t.type == "ELLIPSIS" for t in arg_tree.children):
                if not args or not isinstance(args[-1], list):
                    raise EvalError(line, f"{name}(): the argument before ... must be a list")
                args = args[:-1] + list(args[-1])
        try:
            inspect.signature(fn).bind(*args)
        except TypeError:
            raise EvalError(line, f"{name}(): wrong number of arguments ({len(args)})") from None
        try:
            result = fn(*args)
        except FuncError as e:
            raise EvalError(line, f"{name}(): {e}") from None
        except (ValueError, OverflowError, ArithmeticError) as e:
            raise EvalError(line, f"{name}(): {e}") from None
        return normalize_number(result) if is_number(result) else result

    def _x_index_expr_term(self, node: Tree, scope: Scope) -> Any:
        base_node, index = _kids(node)
        return self._index(self._eval(base_node, scope), index, scope)

    def _x_get_attr_expr_term(self, node: Tree, scope: Scope) -> Any:
        base_node, attr = _kids(node)
        return self._get_attr(self._eval(base_node, scope), attr)

    def _x_full_splat_expr_term(self, node: Tree, scope: Scope) -> Any:
        return self._splat(node, scope)

    def _x_attr_splat_expr_term(self, node: Tree, scope: Scope) -> Any:
        return self._splat(node, scope)

    def _splat(self, node: Tree, scope: Scope) -> Any:
        base_node, splat = _kids(node)
        base = self._eval(base_node, scope)
        items = [] if base is None else base if isinstance(base, list) else [base]
        out = []
        for item in items:
            for op in _kids(splat):
                item = self._get_attr(item, op) if op.data == "get_attr" else self._index(item, op, scope)
            out.append(item)
        return out

    def _get_attr(self, base: Any, attr: Tree) -> Any:
        name = str(_kids(attr)[0].children[0])
        line = self.line(attr)
        if isinstance(base, LazyLocals):
            if name not in base:
                raise EvalError(line, f"no local value named {json.dumps(name)} is defined")
            return base[name]
        if isinstance(base, _Variables):
            if name in base.unset:
                raise EvalError(line, "")  # the variable's own problem was reported where it is declared
            if name not in base:
                known = ", ".join(sorted(base)) or "none"
                raise EvalError(line, f"no variable named {json.dumps(name)} is declared (declared: {known})")
            return base[name]
        if isinstance(base, dict):
            if name not in base:
                raise EvalError(line, f"object has no attribute {json.dumps(name)}")
            return base[name]
        raise EvalError(line, f"cannot read attribute {json.dumps(name)} of {_show(base)}")

    def _index(self, base: Any, index: Tree, scope: Scope) -> Any:
        line = self.line(index)
        if index.data == "short_index":
            key: Any = int(str(index.children[-1]))
        else:
            key = self._eval(_kids(index)[0], scope)
        if isinstance(base, list):
            try:
                n = to_number(key)
            except FuncError:
                raise EvalError(line, f"list index must be a number, got {_show(key)}") from None
            if not float(n).is_integer() or not 0 <= n < len(base):
                raise EvalError(line, f"index {_show(key)} is out of range for a list of {len(base)}")
            return base[int(n)]
        if isinstance(base, Mapping):
            if isinstance(key, (list, dict)) or key is None:
                raise EvalError(line, f"map key must be a string, got {_show(key)}")
            k = to_string(key)
            if k not in base:
                raise EvalError(line, f"no key {json.dumps(k)} in the map")
            return base[k]
        raise EvalError(line, f"cannot index {_show(base)}")

    def _x_for_tuple_expr(self, node: Tree, scope: Scope) -> Any:
        intro, *rest = _kids(node)
        value_node = rest[0]
        cond = rest[1] if len(rest) > 1 else None
        out = []
        for inner in self._for_scopes(intro, scope):
            if cond is not None and not self._for_cond(cond, inner):
                continue
            out.append(self._eval(value_node, inner))
        return out

    def _x_for_object_expr(self, node: Tree, scope: Scope) -> Any:
        intro, key_node, value_node, *rest = _kids(node)
        cond = rest[0] if rest else None
        group = any(isinstance(t, Token) and t.type == "ELLIPSIS" for t in node.children)
        out: dict[str, Any] = {}
        for inner in self._for_scopes(intro, scope):
            if cond is not None and not self._for_cond(cond, inner):
                continue
            k = self._eval(key_node, inner)
            if isinstance(k, (list, dict)) or k is None:
                raise EvalError(self.line(key_node), f"object key must be a string, got {_show(k)}")
            key = to_string(k)
            value = self._eval(value_node, inner)
            if group:
                out.setdefault(key, []).append(value)
            elif key in out:
                raise EvalError(self.line(key_node), f"duplicate key {json.dumps(key)} (use ... to group values)")
            else:
                out[key] = value
        return out

    def _for_scopes(self, intro: Tree, scope: Scope) -> Iterator[Scope]:
        names = [str(k.children[0]) for k in _kids(intro) if k.data == "identifier"]
        coll_node = [k for k in _kids(intro) if k.data != "identifier"][0]
        coll = self._eval(coll_node, scope)
        for key, value in iterate(coll, self.line(coll_node)):
            inner = dict(scope)
            if len(names) == 2:
                inner[names[0]] = key
                inner[names[1]] = value
            else:
                inner[names[0]] = value
            yield inner

    def _for_cond(self, cond: Tree, scope: Scope) -> bool:
        value = self._eval(_kids(cond)[0], scope)
        try:
            return to_bool(value)
        except FuncError:
            raise EvalError(self.line(cond), f"for condition must be a bool, got {_show(value)}") from None

    # -- templates --

    def _string_parts(self, node: Tree) -> list[Any]:
        parts: list[Any] = []
        for p in node.children:
            if not (isinstance(p, Tree) and p.data == "string_part"):
                continue
            (x,) = p.children
            if isinstance(x, Token):
                if x.type == "STRING_CHARS":
                    parts.append(_Lit(unescape(str(x), self.line(x))))
                else:  # $${ or %%{: an escaped interpolation or directive
                    parts.append(_Lit(str(x)[1:]))
            elif x.data == "interpolation":
                parts.append(_Interp(_kids(x)[0], self, self.source_of(x), self.line(x)))
            else:
                parts.append(self._directive_from_tree(x))
        return parts

    def _directive_from_tree(self, x: Tree) -> _Directive:
        kind = {
            "template_if_start": "if",
            "template_else": "else",
            "template_endif": "endif",
            "template_for_start": "for",
            "template_endfor": "endfor",
        }[x.data]
        toks = x.children
        strip_left = len(toks) > 1 and isinstance(toks[1], Token) and toks[1].type == "STRIP_MARKER"
        strip_right = len(toks) > 2 and isinstance(toks[-2], Token) and toks[-2].type == "STRIP_MARKER"
        d = _Directive(kind, self, self.line(x), strip_left=strip_left, strip_right=strip_right)
        exprs = [k for k in _kids(x) if k.data != "identifier"]
        if kind in ("if", "for"):
            d.node = exprs[0]
        if kind == "for":
            d.names = tuple(str(k.children[0]) for k in _kids(x) if k.data == "identifier")
        return d

    def heredoc_parts(self, body: str, first_line: int | None) -> list[Any]:
        scanner = _Scanner(body, first_line)
        parts: list[Any] = []
        for kind, text, pos in scanner.pieces():
            line = scanner._line_at(pos)
            if kind == "lit":
                parts.append(_Lit(text))
                continue
            offset = 0 if line is None else line - 1
            if kind == "interp":
                node = parse_snippet(text, line)
                parts.append(_Interp(node, Evaluator(self.functions, "_ = " + text, offset), "${" + text + "}", line))
                continue
            parts.append(self._directive_from_text(text, line, offset))
        return parts

    def _directive_from_text(self, text: str, line: int | None, offset: int) -> _Directive:
        inner = text
        strip_left = inner.startswith("~")
        strip_right = inner.endswith("~")
        inner = inner[1 if strip_left else 0 : len(inner) - (1 if strip_right else 0)].strip()
        word, _, rest = inner.partition(" ")
        ev = Evaluator(self.functions, "_ = " + rest, offset)
        d = _Directive(word, ev, line, strip_left=strip_left, strip_right=strip_right)
        if word in ("else", "endif", "endfor") and not rest.strip():
            return d
        if word == "if" and rest.strip():
            d.node = parse_snippet(rest, line)
            return d
        m = re.fullmatch(r"([A-Za-z_][\w-]*)(?:\s*,\s*([A-Za-z_][\w-]*))?\s+in\s+(.+)", rest.strip(), re.S)
        if word == "for" and m:
            d.names = tuple(n for n in (m.group(1), m.group(2)) if n)
            d.node = parse_snippet(m.group(3), line)
            d.ev = Evaluator(self.functions, "_ = " + m.group(3), offset)
            return d
        raise EvalError(line, f"invalid template directive %{{{text}}}")

    def render(self, parts: list[Any], scope: Scope, whole_value: bool = True) -> Any:
        """Evaluate a template. A quoted string that is one interpolation keeps its value's type."""
        if whole_value and len(parts) == 1 and isinstance(parts[0], _Interp):
            p = parts[0]
            try:
                return p.ev._eval(p.node, scope)
            except _RuntimeRef:
                return p.source
            except RecursionError:
                raise EvalError(p.line, "expression nested too deeply") from None
        tree = _nest(_apply_strips(parts))
        out: list[str] = []
        self._render_into(tree, scope, out)
        return "".join(out)

    def _render_into(self, items: list[Any], scope: Scope, out: list[str]) -> None:
        for item in items:
            if isinstance(item, _Lit):
                out.append(item.text)
            elif isinstance(item, _Interp):
                try:
                    value = item.ev._eval(item.node, scope)
                except _RuntimeRef:
                    out.append(item.source)
                    continue
                if isinstance(value, (list, dict)) or value is None:
                    raise EvalError(item.line, f"cannot put {_show(value)} into a string (in {item.source})")
                out.append(to_string(value))
            elif isinstance(item, _If):
                value = item.cond.ev.eval(item.cond.node, scope)
                try:
                    flag = to_bool(value)
                except FuncError:
                    raise EvalError(item.cond.line, f"%{{if}} condition must be a bool, got {_show(value)}") from None
                self._render_into(item.then if flag else item.other, scope, out)
            else:
                head = item.head
                coll = head.ev.eval(head.node, scope)
                for key, value in iterate(coll, head.line):
                    inner = dict(scope)
                    if len(head.names) == 2:
                        inner[head.names[0]] = key
                    inner[head.names[-1]] = value
                    self._render_into(item.body, inner, out)
            if sum(len(s) for s in out) > MAX_COLLECTION * 10:
                raise EvalError(None, "template result too large")


def _apply_strips(parts: list[Any]) -> list[Any]:
    out = list(parts)
    for i, p in enumerate(out):
        if not isinstance(p, _Directive):
            continue
        if p.strip_left and i > 0 and isinstance(out[i - 1], _Lit):
            out[i - 1] = _Lit(out[i - 1].text.rstrip())
        if p.strip_right and i + 1 < len(out) and isinstance(out[i + 1], _Lit):
            out[i + 1] = _Lit(out[i + 1].text.lstrip())
    return out


def _nest(parts: list[Any]) -> list[Any]:
    """Turn the flat if/else/endif/for/endfor directives into nested _If/_For nodes."""
    root: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = []
    current = root
    for p in parts:
        if not isinstance(p, _Directive):
            current.append(p)
        elif p.kind == "if":
            node = _If(p, [], [])
            current.append(node)
            stack.append((node, current))
            current = node.then
        elif p.kind == "for":
            node_f = _For(p, [])
            current.append(node_f)
            stack.append((node_f, current))
            current = node_f.body
        elif p.kind == "else":
            if not stack or not isinstance(stack[-1][0], _If) or current is stack[-1][0].other:
                raise EvalError(p.line, "%{else} without a matching %{if}")
            current = stack[-1][0].other
        elif p.kind in ("endif", "endfor"):
            want = _If if p.kind == "endif" else _For
            if not stack or not isinstance(stack[-1][0], want):
                raise EvalError(p.line, f"%{{{p.kind}}} without a matching %{{{'if' if want is _If else 'for'}}}")
            _, current = stack.pop()
        else:
            raise EvalError(p.line, f"unknown template directive %{{{p.kind}}}")
    if stack:
        head = stack[-1][0]
        d = head.cond if isinstance(head, _If) else head.head
        raise EvalError(d.line, f"%{{{d.kind}}} is never closed")
    return root


def iterate(coll: Any, line: int | None) -> Iterator[tuple[Any, Any]]:
    """(key, value) pairs of a list (index, element) or a map (key, value)."""
    if isinstance(coll, list):
        yield from enumerate(coll)
    elif isinstance(coll, Mapping):
        for k in sorted(coll):
            yield k, coll[k]
    else:
        raise EvalError(line, f"cannot iterate over {_show(coll)}: expected a list or a map")


class _Variables(dict[str, Any]):
    """``var.*``: the declared variables' values; ``unset`` ones failed (already reported)."""

    unset: frozenset[str] = frozenset()


def variables_object(values: Mapping[str, Any], unset: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    out = _Variables(values)
    out.unset = frozenset(unset)
    return out


def _bool_operand(v: Any, op: str, line: int | None) -> bool:
    try:
        return to_bool(v)
    except FuncError:
        raise EvalError(line, f"operator {op} needs bools, got {_show(v)}") from None


def _equal(a: Any, b: Any) -> bool:
    if type_name(a) != type_name(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _binary(op: str, left: Any, right: Any, line: int | None) -> Any:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("&&", "||"):
        return _bool_operand(right, op, line)
    try:
        a, b = to_number(left), to_number(right)
    except FuncError:
        raise EvalError(line, f"operator {op} needs numbers, got {_show(left)} and {_show(right)}") from None
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
        raise EvalError(line, f"division by zero ({_show(left)} {op} {_show(right)})") from None
    except (OverflowError, ValueError):
        raise EvalError(line, f"arithmetic overflow ({op})") from None
    if isinstance(r, float) and not math.isfinite(r):
        raise EvalError(line, f"arithmetic overflow ({op})")
    if isinstance(r, int) and abs(r) > 2**256:
        raise EvalError(line, f"arithmetic overflow ({op})")
    return normalize_number(r)


def _unknown_name(name: str) -> str:
    return (
        f"unknown variable {json.dumps(name)}; use var.NAME or local.NAME, "
        f'and quote runtime values such as "${{{name}...}}"'
    )
