"""Finding a job, an allocation or an evaluation by id prefix within a namespace, as Nomad does.

Every lookup is scoped by the request's namespace; ``*`` searches them all. An exact id wins over
longer ids it is a prefix of, unless it names objects in several namespaces; anything else that
matches more than one object is ambiguous, and the error lists what matched (namespace/id).
Allocation and evaluation ids are unique across namespaces, but a lookup from another namespace
does not find them (Nomad's prefix lists are per namespace too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from shoal.errors import Ambiguous, NotFound
from shoal.ids import ALL_NAMESPACES, short
from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation
from shoal.raft.state import StateSnapshot

T = TypeVar("T", Job, Allocation, Evaluation)
SHOWN = 8  # matches listed in an ambiguity error


def in_namespace(namespace: str, item_namespace: str) -> bool:
    return namespace == ALL_NAMESPACES or namespace == item_namespace


def namespaced(namespace: str, items: Iterable[T]) -> list[T]:
    """The items of ``namespace`` (all of them for ``*``)."""
    return list(items) if namespace == ALL_NAMESPACES else [i for i in items if i.namespace == namespace]


def find_job(snap: StateSnapshot, namespace: str, prefix: str) -> Job:
    if namespace != ALL_NAMESPACES and (job := snap.job(namespace, prefix)) is not None:
        return job
    jobs = snap.jobs(None if namespace == ALL_NAMESPACES else namespace)
    return _one("job", namespace, prefix, jobs, str)


def find_alloc(snap: StateSnapshot, namespace: str, prefix: str) -> Allocation:
    a = snap.alloc(prefix)
    if a is not None and in_namespace(namespace, a.namespace):
        return a
    return _one("allocation", namespace, prefix, snap.allocs(), short)


def find_eval(snap: StateSnapshot, namespace: str, prefix: str) -> Evaluation:
    ev = snap.eval(prefix)
    if ev is not None and in_namespace(namespace, ev.namespace):
        return ev
    return _one("evaluation", namespace, prefix, snap.evals(), short)


def _one(kind: str, namespace: str, prefix: str, items: Iterable[T], shown: Callable[[str], str]) -> T:
    if not prefix:
        raise NotFound(f"no {kind} id given")
    matches = [i for i in items if i.id.startswith(prefix) and in_namespace(namespace, i.namespace)]
    exact = [i for i in matches if i.id == prefix]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        where = "in any namespace" if namespace == ALL_NAMESPACES else \
            f"in namespace {namespace!r} (-namespace '*' searches every namespace)"
        raise NotFound(f"no {kind} matches {prefix!r} {where}")
    listed = sorted(f"{i.namespace}/{shown(i.id)}" for i in (exact or matches))
    more = f", and {len(listed) - SHOWN} more" if len(listed) > SHOWN else ""
    found = f"({', '.join(listed[:SHOWN])}{more})"
    if exact:
        raise Ambiguous(f"{kind} {prefix!r} is in {len(exact)} namespaces {found}; name one with -namespace")
    raise Ambiguous(f"{kind} prefix {prefix!r} matches {len(matches)} {kind}s {found}; give more characters")
