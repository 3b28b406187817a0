"""Field-level differences between two versions of a job (for ``shoal job plan``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal import codec
from shoal.jobs.model import Job

# Fields the servers set; they are never part of a user's change.
SERVER_FIELDS = frozenset({"version", "status", "stop", "submit_time", "create_index", "modify_index", "job_modify_index"})
# Lists of named blocks, compared by name rather than position.
NAMED_LISTS = {"groups": "group", "tasks": "task", "services": "service", "ports": "port"}


@dataclass(slots=True, frozen=True)
class FieldChange:
    path: str  # e.g. 'group "web" count' or 'group "web" task "server" config.image'
    kind: str  # added | deleted | edited
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path}: {self.new!r}"
        if self.kind == "deleted":
            return f"- {self.path}: {self.old!r}"
        return f"~ {self.path}: {self.old!r} => {self.new!r}"


def diff_jobs(old: Job | None, new: Job) -> list[FieldChange]:
    """What changes if ``new`` replaces ``old`` (everything is added when there is no ``old``)."""
    a = _spec(old) if old is not None else {}
    b = _spec(new)
    out: list[FieldChange] = []
    _diff(a, b, "", out)
    return out


def _spec(job: Job) -> dict[str, Any]:
    plain = codec.to_plain(job)
    for k in SERVER_FIELDS:
        plain.pop(k, None)
    return plain


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix} {key}" if prefix.endswith('"') or key.startswith(tuple(f'{v} "' for v in NAMED_LISTS.values())) else f"{prefix}.{key}"


def _diff(a: Any, b: Any, path: str, out: list[FieldChange]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = _join(path, str(key))
            if key in NAMED_LISTS and isinstance(a.get(key, []), list) and isinstance(b.get(key, []), list):
                _diff_named(a.get(key) or [], b.get(key) or [], path, NAMED_LISTS[key], out)
            elif key not in a:
                out.append(FieldChange(sub, "added", new=b[key]))
            elif key not in b:
                out.append(FieldChange(sub, "deleted", old=a[key]))
            else:
                _diff(a[key], b[key], sub, out)
    elif a != b:
        out.append(FieldChange(path, "edited", a, b))


def _diff_named(a: list[Any], b: list[Any], path: str, label: str, out: list[FieldChange]) -> None:
    def keyed(items: list[Any]) -> dict[str, Any]:
        return {str(i.get("name") or i.get("label") or n): i for n, i in enumerate(items) if isinstance(i, dict)}

    ka, kb = keyed(a), keyed(b)
    for name in sorted(set(ka) | set(kb)):
        sub = _join(path, f'{label} "{name}"')
        if name not in ka:
            out.append(FieldChange(sub, "added", new=kb[name]))
        elif name not in kb:
            out.append(FieldChange(sub, "deleted", old=ka[name]))
        else:
            _diff(ka[name], kb[name], sub, out)
