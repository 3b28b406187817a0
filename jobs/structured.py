"""Job files written as YAML or JSON: the HCL structure, as data.

Two shapes are accepted for labelled blocks (job, group, task, port, target):

* HCL's JSON form, the label as a key::

      {"job": {"web": {"group": {"cache": {"count": 3, "task": {"redis": {...}}}}}}}

* the natural list form, the label as a field (``name``; ``label`` for ports,
  ``value`` for spread targets; ``id`` or ``name`` for the job)::

      job:
        name: web
        group:
          - name: cache
            count: 3
            task:
              - name: redis
                driver: docker

Unlabelled blocks (resources, restart, constraint, service, check ...) are an
object, or a list of objects where a block may repeat. Maps (meta, env, config)
are objects. Values are taken as written: there are no variables or functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import Problem
from shoal.jobs import schema
from shoal.jobs.body import Attribute, Block
from shoal.jobs.docnodes import DocError, Node, parse_json, parse_yaml
from shoal.jobs.paths import ROOT, FieldPath, child, render

LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "job": ("id", "name"),
    "group": ("name",),
    "task": ("name",),
    "port": ("label", "name"),
    "target": ("value", "name"),
}


@dataclass(slots=True)
class StructuredDocument:
    job: Block | None = None
    problems: list[Problem] = field(default_factory=list)


def read_yaml(text: str, filename: str) -> StructuredDocument:
    return _read(text, filename, parse_yaml)


def read_json(text: str, filename: str) -> StructuredDocument:
    return _read(text, filename, parse_json)


def _read(text: str, filename: str, parse: Any) -> StructuredDocument:
    doc = StructuredDocument()
    try:
        root = parse(text)
    except DocError as e:
        col = f" (column {e.column})" if e.column else ""
        doc.problems.append(Problem(filename, e.line or 1, "", e.message + col))
        return doc
    conv = _Converter(filename)
    try:
        doc.job = conv.root(root)
    except DocError as e:
        conv.problems.append(Problem(filename, e.line or 1, "", e.message))
    except RecursionError:
        conv.problems.append(Problem(filename, 1, "", "the document is nested too deeply"))
    doc.problems.extend(conv.problems)
    return doc


class _Converter:
    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[Problem] = []

    def problem(self, line: int | None, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.filename, line, render(path), message))

    def root(self, node: Node | None) -> Block | None:
        if node is None:
            self.problems.append(Problem(self.filename, 1, "", "the file is empty: expected a job"))
            return None
        if node.kind != "map":
            self.problem(node.line, ROOT, "expected an object with a job key at the top level")
            return None
        job: Block | None = None
        for key, value, line in self.unique(node, ROOT):
            if key == "job":
                blocks = self.labelled("job", value, ROOT, line)
                if len(blocks) > 1:
                    self.problem(blocks[1].line, child(ROOT, "job"), "only one job is allowed per file")
                job = blocks[0] if blocks else None
            elif key in ("variable", "variables", "locals"):
                self.problem(line, child(ROOT, key), "variables and locals are only evaluated in HCL job files")
            else:
                self.problem(line, child(ROOT, key), 'unknown top-level key; a job file holds "job"')
        if job is None and not self.problems:
            self.problem(node.line, ROOT, 'no job found (expected a "job" key)')
        return job

    def unique(self, node: Node, path: FieldPath) -> list[tuple[str, Node, int]]:
        seen: dict[str, int] = {}
        out = []
        for key, value, line in node.pairs:
            if key in seen:
                self.problem(line, child(path, key), f"set more than once (first at line {seen[key]})")
                continue
            seen[key] = line
            out.append((key, value, line))
        return out

    def body(self, kind: str, labels: list[str], node: Node, path: FieldPath, line: int,
             skip: str | None = None) -> Block:
        blk = Block(kind, labels, line)
        if node.kind == "scalar" and node.value is None:  # "logs:" with nothing under it: an empty block
            return blk
        if node.kind != "map":
            self.problem(node.line, path, f"expected an object for this {kind} block, got {_kind(node)}")
            return blk
        children = schema.CHILDREN.get(kind, {})
        for key, value, key_line in self.unique(node, path):
            if key == skip:
                continue
            sub = children.get(key)
            if sub is None:
                self.strings_check(value, child(path, key), key_line)
                blk.attributes.append(Attribute(key, value.plain(), key_line))
            elif sub.labelled:
                blk.blocks.extend(self.labelled(key, value, path, key_line))
            else:
                blk.blocks.extend(self.unlabelled(key, value, path, key_line))
        return blk

    def labelled(self, kind: str, node: Node, parent: FieldPath, line: int) -> list[Block]:
        keys = LABEL_KEYS.get(kind, ("name",))
        if node.kind == "seq":
            out = []
            for item in node.items:
                out.extend(self.labelled(kind, item, parent, item.line))
            return out
        if node.kind != "map":
            self.problem(node.line, child(parent, kind), f"expected an object or a list of objects, got {_kind(node)}")
            return []
        for key in keys:
            label_node = next((v for k, v, _ in node.pairs if k == key), None)
            if label_node is not None and label_node.kind == "scalar" and isinstance(label_node.value, (str, int)):
                label = str(label_node.value)
                return [self.body(kind, [label], node, child(parent, kind, label), node.line, skip=key)]
        if node.pairs and all(v.kind in ("map", "seq") for _, v, _ in node.pairs):  # {label: {...}}
            out = []
            for label, body, key_line in self.unique(node, child(parent, kind)):
                if body.kind == "seq":
                    for item in body.items:
                        out.append(self.body(kind, [label], item, child(parent, kind, label), item.line))
                else:
                    out.append(self.body(kind, [label], body, child(parent, kind, label), key_line))
            return out
        self.problem(node.line, child(parent, kind),
                     f"a {kind} needs a name: give it a {json.dumps(keys[-1])} field, or write {kind}: {{NAME: {{...}}}}")
        return []

    def unlabelled(self, kind: str, node: Node, parent: FieldPath, line: int) -> list[Block]:
        if node.kind == "seq":
            return [self.body(kind, [], item, child(parent, kind, index=i), item.line) for i, item in enumerate(node.items)]
        return [self.body(kind, [], node, child(parent, kind), line)]

    def strings_check(self, node: Node, path: FieldPath, line: int) -> None:
        """HCL-only syntax in a YAML/JSON string would otherwise be kept silently as text."""
        if node.kind == "scalar":
            if isinstance(node.value, str) and ("${var." in node.value or "${local." in node.value):
                self.problem(node.line, path, "${var.*} and ${local.*} are only evaluated in HCL job files")
            return
        for item in node.items:
            self.strings_check(item, path, line)
        for _, value, _ in node.pairs:
            self.strings_check(value, path, line)


def _kind(node: Node) -> str:
    if node.kind == "seq":
        return "a list"
    if node.kind == "map":
        return "an object"
    v = node.value
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v) if v is None or isinstance(v, (bool, int, float)) else f"a {type(v).__name__}"
