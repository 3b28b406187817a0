"""The evaluated, format-neutral form of a job file: blocks of attributes, each with its line.

The HCL reader produces it after evaluating expressions and expanding dynamic
blocks; the YAML/JSON reader produces it from the document. The decoder maps it
onto the job model, so every format gets the same checks and messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Invalid:
    """The value of an attribute whose expression could not be evaluated (already reported)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()


@dataclass(slots=True)
class Attribute:
    name: str
    value: Any  # str | int | float | bool | None | list | dict, or INVALID
    line: int | None = None
    error: str = ""  # why the value is INVALID, reported where the attribute is decoded


@dataclass(slots=True)
class Block:
    type: str
    labels: list[str] = field(default_factory=list)
    line: int | None = None
    attributes: list[Attribute] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.name == name), None)
