"""Printing for the CLI: rich tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped into another program, a table keeps one line per row (as Nomad's): it is not folded to 80 columns.
UNWRAPPED = 10_000
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else UNWRAPPED)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:  # cells are data, never markup: a "[v1]" tag or a name in brackets prints as it is
        t.add_row(*(Text("" if v is None else str(v)) for v in r))
    out.print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        out.print(f"{k:<{width}} = {'<none>' if v in (None, '') else v}")


def when(ts: float) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def ago(ts: float) -> str:
    if not ts:
        return ""
    d = max(0, int(time.time() - ts))
    if d < 60:
        return f"{d}s ago"
    if d < 3600:
        return f"{d // 60}m{d % 60}s ago"
    return f"{d // 3600}h{(d % 3600) // 60}m ago"


def short(ident: str | None) -> str:
    return (ident or "")[:8]
