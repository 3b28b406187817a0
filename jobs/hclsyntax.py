"""Reading python-hcl2's Lark tree and the text inside it, before anything is evaluated.

Lines of nodes, sub-trees without comments, string escapes, plain-string block
labels, heredoc bodies (``<<EOF`` and the indent-trimming ``<<-EOF``), and the
``${...}``/``%{...}`` pieces of heredoc text, which the grammar leaves as
text: each is parsed here on its own (:func:`parse_snippet`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import hcl2
from lark import Token, Tree
from lark.exceptions import LarkError


class EvalError(Exception):
    """An expression that cannot be evaluated. An empty message means: already reported."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def node_line(node: Any) -> int | None:
    if isinstance(node, Token):
        return node.line
    meta = getattr(node, "meta", None)  # a Lark Tree's, when the parser kept positions
    if meta is None or meta.empty:
        return None
    return meta.line


def kids(node: Tree) -> list[Tree]:
    """A node's sub-trees, without newlines and comments."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


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


def literal_string(node: Any) -> str | None:
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


def heredoc_body(value: str, line: int | None) -> str:
    """The text of a heredoc token, without its markers (and its indent, for ``<<-``)."""
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


class Scanner:
    """Finds ``${...}`` and ``%{...}`` in heredoc text (quoted strings and braces may nest)."""

    def __init__(self, text: str, line: int | None):
        self.text = text
        self.line = line

    def line_at(self, pos: int) -> int | None:
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
        raise EvalError(self.line_at(i), "unterminated ${ or %{ in heredoc")

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
        raise EvalError(self.line_at(i), "unterminated string inside a heredoc interpolation")

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
    attrs = [c for c in kids(body) if c.data == "attribute"]
    if len(attrs) != 1:
        raise EvalError(line, f"invalid expression {json.dumps(text.strip())} in heredoc")
    return kids(attrs[0])[-1]


def _lark_brief(e: LarkError) -> str:
    tok = getattr(e, "token", None)  # Lark's UnexpectedToken has one; other LarkErrors do not
    if tok is not None and tok.type != "$END":
        return f"unexpected {json.dumps(str(tok).strip()[:20])}"
    return "incomplete expression"
