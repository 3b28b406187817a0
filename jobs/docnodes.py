"""YAML and JSON documents as trees of nodes that remember their lines.

``yaml.safe_load`` and ``json.loads`` return plain values with no positions;
job-file errors must name lines, so YAML is read through PyYAML's compose API
(whose nodes carry marks) and JSON through the small parser below.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_DEPTH = 200
MAX_NODES = 200_000


class DocError(Exception):
    """A document that cannot be read; ``line``/``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(slots=True)
class Node:
    kind: str  # "scalar" | "map" | "seq"
    line: int
    value: Any = None  # scalar: the value
    items: list[Node] = field(default_factory=list)  # seq
    pairs: list[tuple[str, Node, int]] = field(default_factory=list)  # map: (key, value, key line)

    def plain(self, budget: list[int] | None = None) -> Any:
        """The node as plain Python values."""
        budget = budget if budget is not None else [MAX_NODES]
        budget[0] -= 1
        if budget[0] < 0:
            raise DocError("the document is too large")
        if self.kind == "scalar":
            return self.value
        if self.kind == "seq":
            return [n.plain(budget) for n in self.items]
        return {k: v.plain(budget) for k, v, _ in self.pairs}


# ---- YAML ----------------------------------------------------------------------------


def parse_yaml(text: str) -> Node | None:
    """The single document in ``text`` (None if empty)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, max(e.position, 0)) + 1
        raise DocError(f"YAML error: character U+{int(e.character):04X} is not allowed in YAML", line) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        return _from_yaml(loader, root, 0, [MAX_NODES])
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        if mark is None:
            raise DocError(f"YAML error: {what}") from None
        raise DocError(f"YAML error: {what}", mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as e:
        raise DocError(f"YAML error: {e}") from None
    except RecursionError:
        raise DocError("the document is nested too deeply") from None
    finally:
        loader.dispose()


def _from_yaml(loader: yaml.SafeLoader, node: yaml.Node, depth: int, budget: list[int]) -> Node:
    budget[0] -= 1
    if budget[0] < 0:
        raise DocError("the document is too large (too many aliases?)")
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise DocError("the document is nested too deeply", line)
    if isinstance(node, yaml.ScalarNode):
        try:
            value = loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise DocError(f"YAML error: {getattr(e, 'problem', None) or e}", line) from None
        except ValueError as e:  # e.g. an out-of-range date
            raise DocError(f"YAML error: {e}", line) from None
        return Node("scalar", line, value)
    if isinstance(node, yaml.SequenceNode):
        return Node("seq", line, items=[_from_yaml(loader, n, depth + 1, budget) for n in node.value])
    assert isinstance(node, yaml.MappingNode)
    loader.flatten_mapping(node)  # resolve "<<" merge keys
    pairs = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise DocError("mapping keys must be plain names, not lists or mappings", key.start_mark.line + 1)
        pairs.append((str(key.value), _from_yaml(loader, value, depth + 1, budget), key.start_mark.line + 1))
    return Node("map", line, pairs=pairs)


# ---- JSON ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
_WS = re.compile(r"[ \t\n\r]*")


class _Json:
    def __init__(self, text: str):
        self.text = text
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.count = 0

    def where(self, pos: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.newlines, pos - 1) + 1
        start = self.newlines[line - 2] + 1 if line > 1 else 0
        return line, pos - start + 1

    def fail(self, pos: int, message: str) -> DocError:
        line, col = self.where(pos)
        return DocError(f"JSON error: {message}", line, col)

    def ws(self, pos: int) -> int:
        m = _WS.match(self.text, pos)
        return m.end() if m else pos

    def value(self, pos: int, depth: int) -> tuple[Node, int]:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(pos, "the document is too large")
        if depth > MAX_DEPTH:
            raise self.fail(pos, "the document is nested too deeply")
        t = self.text
        line = self.where(pos)[0]
        if pos >= len(t):
            raise self.fail(pos, "unexpected end of the document")
        c = t[pos]
        if c == "{":
            return self.obj(pos + 1, depth, line)
        if c == "[":
            return self.arr(pos + 1, depth, line)
        if c == '"':
            s, end = self.string(pos)
            return Node("scalar", line, s), end
        for word, val in (("true", True), ("false", False), ("null", None)):
            if t.startswith(word, pos):
                return Node("scalar", line, val), pos + len(word)
        m = _NUMBER.match(t, pos)
        if m and m.end() > pos:
            text = m.group(0)
            try:
                num: Any = float(text) if (m.group(1) or m.group(2)) else int(text)
            except ValueError:
                raise self.fail(pos, "number too long") from None
            return Node("scalar", line, num), m.end()
        raise self.fail(pos, f"unexpected {json.dumps(c)}")

    def string(self, pos: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(self.text, pos + 1, True)
        except json.JSONDecodeError as e:
            raise self.fail(e.pos, e.msg) from None

    def obj(self, pos: int, depth: int, line: int) -> tuple[Node, int]:
        node = Node("map", line)
        pos = self.ws(pos)
        if self.text.startswith("}", pos):
            return node, pos + 1
        while True:
            pos = self.ws(pos)
            if not self.text.startswith('"', pos):
                raise self.fail(pos, "expected a quoted key")
            key_line = self.where(pos)[0]
            key, pos = self.string(pos)
            pos = self.ws(pos)
            if not self.text.startswith(":", pos):
                raise self.fail(pos, 'expected ":" after the key')
            value, pos = self.value(self.ws(pos + 1), depth + 1)
            node.pairs.append((key, value, key_line))
            pos = self.ws(pos)
            if self.text.startswith(",", pos):
                pos += 1
                continue
            if self.text.startswith("}", pos):
                return node, pos + 1
            raise self.fail(pos, 'expected "," or "}"')

    def arr(self, pos: int, depth: int, line: int) -> tuple[Node, int]:
        node = Node("seq", line)
        pos = self.ws(pos)
        if self.text.startswith("]", pos):
            return node, pos + 1
        while True:
            item, pos = self.value(self.ws(pos), depth + 1)
            node.items.append(item)
            pos = self.ws(pos)
            if self.text.startswith(",", pos):
                pos += 1
                continue
            if self.text.startswith("]", pos):
                return node, pos + 1
            raise self.fail(pos, 'expected "," or "]"')


def parse_json(text: str) -> Node | None:
    """The JSON document in ``text`` (None if it is empty)."""
    p = _Json(text)
    pos = p.ws(0)
    if pos >= len(text):
        return None
    node, pos = p.value(pos, 0)
    pos = p.ws(pos)
    if pos < len(text):
        raise p.fail(pos, "extra text after the document")
    return node
