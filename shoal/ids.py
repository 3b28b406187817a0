"""Identifiers: random UUIDs, shown shortened, looked up by unique prefix (as Nomad does)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from shoal.errors import Ambiguous, NotFound

SHORT = 8
DEFAULT_NAMESPACE = "default"
ALL_NAMESPACES = "*"  # as a namespace argument: every namespace (lists and prefix lookups), as in Nomad


def new_id() -> str:
    """A random (version 4) UUID in its usual text form; built directly from 16 random bytes, which
    is several times cheaper than ``str(uuid.uuid4())`` (every write makes one)."""
    h = (int.from_bytes(os.urandom(16)) & ~(0xF000 << 64 | 0xC000 << 48) | (0x4000 << 64 | 0x8000 << 48)).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def short(ident: str) -> str:
    return ident[:SHORT]


def resolve_prefix(prefix: str, candidates: Iterable[str], kind: str) -> str:
    """Return the one candidate that starts with ``prefix``; raise a clear error otherwise."""
    if not prefix:
        raise NotFound(f"no {kind} id given")
    matches = [c for c in candidates if c.startswith(prefix)]
    if not matches:
        raise NotFound(f"no {kind} matches {prefix!r}")
    if len(matches) > 1:
        exact = [m for m in matches if m == prefix]
        if exact:
            return exact[0]
        shown = ", ".join(sorted(short(m) for m in matches)[:8])
        raise Ambiguous(f"{kind} prefix {prefix!r} matches {len(matches)} ids ({shown}); give more characters")
    return matches[0]
