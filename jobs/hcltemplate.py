"""HCL2 string templates: quoted strings and heredocs with ``${...}`` and ``%{...}``.

A template is a list of parts (literal text, interpolations, directives),
built from a quoted string's tree (:func:`string_parts`) or from heredoc text
(:func:`heredoc_parts`), then rendered against a scope (:func:`render`):
``~`` strip markers trim the literal text next to them, ``%{if}``/``%{for}``
nest, interpolations are evaluated. An interpolation that names a runtime
value (``${NOMAD_ALLOC_ID}``, ``${attr.kernel.name}`` ...) is kept verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lark import Token, Tree

from shoal.jobs.hclfuncs import MAX_COLLECTION, FuncError, to_bool, to_string
from shoal.jobs.hclsyntax import EvalError, Scanner, kids, parse_snippet, unescape
from shoal.jobs.hclvalues import RuntimeRef, Scope, for_scope, iterate, show

if TYPE_CHECKING:
    from shoal.jobs.hcleval import Evaluator


@dataclass(slots=True)
class Lit:
    text: str


@dataclass(slots=True)
class Interp:
    node: Any
    ev: Evaluator
    source: str  # "${...}" as written
    line: int | None


@dataclass(slots=True)
class Directive:
    kind: str  # if | else | endif | for | endfor
    ev: Evaluator
    line: int | None
    node: Any = None  # the condition or the collection
    names: tuple[str, ...] = ()  # for: (value,) or (key, value)
    strip_left: bool = False
    strip_right: bool = False


Part = Lit | Interp | Directive


@dataclass(slots=True)
class _If:
    cond: Directive
    then: list[Any]
    other: list[Any]


@dataclass(slots=True)
class _For:
    head: Directive
    body: list[Any]


_DIRECTIVE_RULES = {
    "template_if_start": "if",
    "template_else": "else",
    "template_endif": "endif",
    "template_for_start": "for",
    "template_endfor": "endfor",
}


def string_parts(ev: Evaluator, node: Tree) -> list[Part]:
    """The parts of a quoted string the parser has split (``string_part`` children)."""
    parts: list[Part] = []
    for p in node.children:
        if not (isinstance(p, Tree) and p.data == "string_part"):
            continue
        (x,) = p.children
        if isinstance(x, Token):
            if x.type == "STRING_CHARS":
                parts.append(Lit(unescape(str(x), ev.line(x))))
            else:  # $${ or %%{: an escaped interpolation or directive
                parts.append(Lit(str(x)[1:]))
        elif x.data == "interpolation":
            parts.append(Interp(kids(x)[0], ev, ev.source_of(x), ev.line(x)))
        else:
            parts.append(_directive_from_tree(ev, x))
    return parts


def _directive_from_tree(ev: Evaluator, x: Tree) -> Directive:
    kind = _DIRECTIVE_RULES[x.data]
    toks = x.children
    strip_left = len(toks) > 1 and isinstance(toks[1], Token) and toks[1].type == "STRIP_MARKER"
    strip_right = len(toks) > 2 and isinstance(toks[-2], Token) and toks[-2].type == "STRIP_MARKER"
    d = Directive(kind, ev, ev.line(x), strip_left=strip_left, strip_right=strip_right)
    exprs = [k for k in kids(x) if k.data != "identifier"]
    if kind in ("if", "for"):
        d.node = exprs[0]
    if kind == "for":
        d.names = tuple(str(k.children[0]) for k in kids(x) if k.data == "identifier")
    return d


def heredoc_parts(ev: Evaluator, body: str, first_line: int | None) -> list[Part]:
    """The parts of a heredoc's text (whose first line is ``first_line``): the grammar leaves
    its ``${...}`` and ``%{...}`` unparsed, so each is parsed here, counting its own lines."""
    scanner = Scanner(body, first_line)
    parts: list[Part] = []
    for kind, text, pos in scanner.pieces():
        line = scanner.line_at(pos)
        if kind == "lit":
            parts.append(Lit(text))
            continue
        offset = 0 if line is None else line - 1
        if kind == "interp":
            node = parse_snippet(text, line)
            parts.append(Interp(node, ev.derive("_ = " + text, offset), "${" + text + "}", line))
            continue
        parts.append(_directive_from_text(ev, text, line, offset))
    return parts


def _directive_from_text(ev: Evaluator, text: str, line: int | None, offset: int) -> Directive:
    inner = text
    strip_left = inner.startswith("~")
    strip_right = inner.endswith("~")
    inner = inner[1 if strip_left else 0 : len(inner) - (1 if strip_right else 0)].strip()
    word, _, rest = inner.partition(" ")
    d = Directive(word, ev.derive("_ = " + rest, offset), line, strip_left=strip_left, strip_right=strip_right)
    if word in ("else", "endif", "endfor") and not rest.strip():
        return d
    if word == "if" and rest.strip():
        d.node = parse_snippet(rest, line)
        return d
    m = re.fullmatch(r"([A-Za-z_][\w-]*)(?:\s*,\s*([A-Za-z_][\w-]*))?\s+in\s+(.+)", rest.strip(), re.S)
    if word == "for" and m:
        d.names = tuple(n for n in (m.group(1), m.group(2)) if n)
        d.node = parse_snippet(m.group(3), line)
        d.ev = ev.derive("_ = " + m.group(3), offset)
        return d
    raise EvalError(line, f"invalid template directive %{{{text}}}")


def render(parts: list[Part], scope: Scope, whole_value: bool = True) -> Any:
    """Evaluate a template. A quoted string that is one interpolation keeps its value's type."""
    if whole_value and len(parts) == 1 and isinstance(parts[0], Interp):
        p = parts[0]
        try:
            return p.ev.value(p.node, scope)
        except RuntimeRef:
            return p.source
        except RecursionError:
            raise EvalError(p.line, "expression nested too deeply") from None
    tree = _nest(_apply_strips(parts))
    out: list[str] = []
    _render_into(tree, scope, out)
    return "".join(out)


def _render_into(items: list[Any], scope: Scope, out: list[str]) -> None:
    for item in items:
        if isinstance(item, Lit):
            out.append(item.text)
        elif isinstance(item, Interp):
            try:
                value = item.ev.value(item.node, scope)
            except RuntimeRef:
                out.append(item.source)
                continue
            if isinstance(value, (list, dict)) or value is None:
                raise EvalError(item.line, f"cannot put {show(value)} into a string (in {item.source})")
            out.append(to_string(value))
        elif isinstance(item, _If):
            value = item.cond.ev.eval(item.cond.node, scope)
            try:
                flag = to_bool(value)
            except FuncError:
                raise EvalError(item.cond.line, f"%{{if}} condition must be a bool, got {show(value)}") from None
            _render_into(item.then if flag else item.other, scope, out)
        else:
            head = item.head
            coll = head.ev.eval(head.node, scope)
            for key, value in iterate(coll, head.line):
                _render_into(item.body, for_scope(scope, head.names, key, value), out)
        if sum(len(s) for s in out) > MAX_COLLECTION * 10:
            raise EvalError(None, "template result too large")


def _apply_strips(parts: list[Part]) -> list[Part]:
    out = list(parts)
    for i, p in enumerate(out):
        if not isinstance(p, Directive):
            continue
        before = out[i - 1] if i > 0 else None
        if p.strip_left and isinstance(before, Lit):
            out[i - 1] = Lit(before.text.rstrip())
        after = out[i + 1] if i + 1 < len(out) else None
        if p.strip_right and isinstance(after, Lit):
            out[i + 1] = Lit(after.text.lstrip())
    return out


def _nest(parts: list[Part]) -> list[Any]:
    """Turn the flat if/else/endif/for/endfor directives into nested _If/_For nodes."""
    root: list[Any] = []
    stack: list[tuple[_If | _For, list[Any]]] = []
    current = root
    for p in parts:
        if not isinstance(p, Directive):
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
            top = stack[-1][0] if stack else None
            if not isinstance(top, _If) or current is top.other:
                raise EvalError(p.line, "%{else} without a matching %{if}")
            current = top.other
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
