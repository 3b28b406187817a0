"""Field paths in job files, and the source map from field paths to lines.

A field path names a place in a job the way Nomad's job specification does:
labelled blocks are written ``type "label"`` and separated by spaces, other
nesting uses dots, and repeated unlabelled blocks carry their position from 0:

    job "web" group "cache" task "redis" resources.memory
    job "web" group "cache" network port "db" static
    job "web" group "cache" service[0].check[1].interval
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple


class Seg(NamedTuple):
    """One step of a field path: an attribute or block name, maybe a label or an index.

    A named tuple: validation builds one for every block of every job it checks."""

    name: str
    label: str | None = None
    index: int | None = None

    def render(self) -> str:
        if self.label is not None:
            return f"{self.name} {json.dumps(self.label, ensure_ascii=False)}"
        if self.index is not None:
            return f"{self.name}[{self.index}]"
        return self.name


FieldPath = tuple[Seg, ...]
ROOT: FieldPath = ()


def child(path: FieldPath, name: str, label: str | None = None, index: int | None = None) -> FieldPath:
    return (*path, Seg(name, label, index))


def render(path: FieldPath) -> str:
    out = ""
    prev: Seg | None = None
    for seg in path:
        if prev is None:
            out = seg.render()
        else:
            sep = " " if (prev.label is not None or seg.label is not None) else "."
            out += sep + seg.render()
        prev = seg
    return out


@dataclass(slots=True)
class SourceMap:
    """Where each field of a decoded job was written: path -> lines (one per occurrence)."""

    lines: dict[FieldPath, list[int]] = field(default_factory=dict)

    def add(self, path: FieldPath, line: int | None) -> None:
        if line is not None:
            self.lines.setdefault(path, []).append(line)

    def line(self, path: FieldPath, occurrence: int = 0) -> int | None:
        """The line of ``path`` (its ``occurrence``-th use), else of its nearest recorded parent."""
        p = path
        while True:
            found = self.lines.get(p)
            if found:
                return found[min(occurrence, len(found) - 1)]
            if not p:
                return None
            p = p[:-1]
            occurrence = 0
