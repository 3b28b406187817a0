"""Version numbers and version constraints, for the ``version`` and ``semver`` operators.

Modelled on hashicorp/go-version as Nomad uses it:

* ``version``: any number of numeric segments (``1``, ``1.2``, ``1.2.3.4``), an
  optional ``v`` prefix, a pre-release (``-beta1``) and build metadata (``+abc``).
  Constraints are comma-separated terms with ``=``, ``!=``, ``>``, ``>=``, ``<``,
  ``<=`` and the pessimistic ``~>``. A pre-release version only satisfies a term
  whose own version is a pre-release of the same segments; ``1.3.0-beta1`` does
  not satisfy ``>= 1.0``.
* ``semver``: at most three segments, no ``~>``, and Semantic Versioning 2.0
  ordering throughout: ``1.3.0-beta1`` is below ``1.3.0`` and so satisfies ``>= 1.0``.

Parsing is cached: the same strings recur on every node and every placement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_VERSION_RE = re.compile(
    r"^v?(?P<segments>\d+(?:\.\d+)*)"
    r"(?:-(?P<pre>[0-9A-Za-z\-~]+(?:\.[0-9A-Za-z\-~]+)*)|(?P<pre2>[A-Za-z~][0-9A-Za-z\-~]*(?:\.[0-9A-Za-z\-~]+)*))?"
    r"(?:\+(?P<meta>[0-9A-Za-z\-~]+(?:\.[0-9A-Za-z\-~]+)*))?$"
)
_TERM_RE = re.compile(r"^\s*(?P<op>~>|>=|<=|!=|=|>|<)?\s*(?P<version>\S+)\s*$")

OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "~>")
SEMVER_OPERATORS = ("=", "!=", ">", ">=", "<", "<=")


@dataclass(slots=True, frozen=True)
class Version:
    segments: tuple[int, ...]  # padded to at least three
    specified: int  # how many segments the text gave (the pessimistic operator needs it)
    prerelease: str = ""
    metadata: str = ""

    def compare(self, other: Version) -> int:
        """-1, 0 or 1; build metadata is ignored, as in Semantic Versioning."""
        a, b = self.segments, other.segments
        width = max(len(a), len(b))
        a = a + (0,) * (width - len(a))
        b = b + (0,) * (width - len(b))
        if a != b:
            return -1 if a < b else 1
        return _compare_prerelease(self.prerelease, other.prerelease)


def _compare_prerelease(a: str, b: str) -> int:
    if a == b:
        return 0
    if not a:  # a release is above any of its pre-releases
        return 1
    if not b:
        return -1
    pa, pb = a.split("."), b.split(".")
    for x, y in zip(pa, pb):
        if x == y:
            continue
        xd, yd = x.isdigit(), y.isdigit()
        if xd and yd:
            return -1 if int(x) < int(y) else 1
        if xd != yd:  # numeric identifiers sort below alphanumeric ones
            return -1 if xd else 1
        return -1 if x < y else 1
    if len(pa) == len(pb):
        return 0
    return -1 if len(pa) < len(pb) else 1


@lru_cache(maxsize=4096)
def parse_version(text: str, *, semver: bool = False) -> Version | None:
    """The parsed version, or None when ``text`` is not one."""
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    parts = tuple(int(p) for p in m.group("segments").split("."))
    if semver and len(parts) > 3:
        return None
    specified = len(parts)
    if len(parts) < 3:
        parts = parts + (0,) * (3 - len(parts))
    pre = m.group("pre") or m.group("pre2") or ""
    return Version(parts, specified, pre, m.group("meta") or "")


@dataclass(slots=True, frozen=True)
class Term:
    operator: str
    version: Version

    def check(self, v: Version, *, semver: bool) -> bool:
        c = self.version
        if not semver and not _prerelease_ok(v, c, self.operator):
            return False
        cmp = v.compare(c)
        op = self.operator
        if op == "=":
            return cmp == 0
        if op == "!=":
            return cmp != 0
        if op == ">":
            return cmp > 0
        if op == ">=":
            return cmp >= 0
        if op == "<":
            return cmp < 0
        if op == "<=":
            return cmp <= 0
        return _pessimistic(v, c)


def _prerelease_ok(v: Version, c: Version, operator: str) -> bool:
    """go-version's rule: pre-releases only meet terms about the same pre-released version."""
    if v.prerelease and c.prerelease:
        return _strip(v.segments) == _strip(c.segments)
    if v.prerelease and not c.prerelease:
        return False
    if c.prerelease and not v.prerelease:
        return operator != "~>"
    return True


def _strip(segments: tuple[int, ...]) -> tuple[int, ...]:
    end = len(segments)
    while end > 3 and segments[end - 1] == 0:
        end -= 1
    return segments[:end]


def _pessimistic(v: Version, c: Version) -> bool:
    """``~> 1.2`` is ``>= 1.2, < 2.0``; ``~> 1.2.3`` is ``>= 1.2.3, < 1.3.0``."""
    if v.compare(c) < 0:
        return False
    n = c.specified
    if n > v.specified:  # "2" is too vague to meet "~> 1.2"
        return False
    if v.segments[: n - 1] != c.segments[: n - 1]:
        return False
    return v.segments[n - 1] >= c.segments[n - 1]


@dataclass(slots=True, frozen=True)
class VersionConstraint:
    terms: tuple[Term, ...]
    semver: bool = False

    def check(self, v: Version) -> bool:
        return all(t.check(v, semver=self.semver) for t in self.terms)


@lru_cache(maxsize=1024)
def parse_constraint(text: str, *, semver: bool = False) -> VersionConstraint | None:
    """Parse ``">= 1.2, < 2.0"``; None when any term is malformed (the constraint then fails)."""
    allowed = SEMVER_OPERATORS if semver else OPERATORS
    terms: list[Term] = []
    for raw in text.split(","):
        m = _TERM_RE.match(raw)
        if m is None:
            return None
        op = m.group("op") or "="
        if op not in allowed:
            return None
        v = parse_version(m.group("version"), semver=semver)
        if v is None:
            return None
        terms.append(Term(op, v))
    if not terms:
        return None
    return VersionConstraint(tuple(terms), semver)


def version_matches(version: str, constraint: str, *, semver: bool = False) -> bool:
    """Whether ``version`` meets ``constraint``; malformed input never matches."""
    c = parse_constraint(constraint, semver=semver)
    if c is None:
        return False
    v = parse_version(version, semver=semver)
    if v is None:
        return False
    return c.check(v)
