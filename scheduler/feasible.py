"""Feasibility: may this task group run on this node at all, resources aside?

Each checker is a small object with a ``name`` (the key placement-failure metrics
count filtered nodes under, in Nomad's words) and ``feasible(node) -> bool``.

* Node-level checkers a job applies to every group (:class:`NodeStatusChecker`,
  :class:`DatacenterChecker`, :class:`NodePoolChecker`) are run once per
  scheduler run over the whole cluster, in :func:`base_nodes`.
* :class:`GroupFeasibility` (Nomad's FeasibilityWrapper) runs the rest for one
  task group: drivers, the job's, group's and tasks' constraints and the
  plan-dependent ``distinct_hosts``/``distinct_property`` checks. Constraint
  results are cached per *computed class*: the tuple of node values the group's
  constraints read. Nodes that agree on those values agree on the outcome, so
  a 5,000 node cluster costs one evaluation per distinct class, not per node.
  Constraints on ``unique.`` targets escape the cache (every node differs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from shoal.jobs.model import Constraint, Job, TaskGroup
from shoal.jobs.structs import NODE_READY, Node
from shoal.scheduler.versions import version_matches

DISTINCT_HOSTS = "distinct_hosts"
DISTINCT_PROPERTY = "distinct_property"
PLAN_OPERATORS = (DISTINCT_HOSTS, DISTINCT_PROPERTY)

FILTER_NOT_READY = "node not ready"
FILTER_INELIGIBLE = "node ineligible"
FILTER_DRAINING = "node draining"
FILTER_MISSING_DRIVERS = "missing drivers"

ALL_POOLS = "all"

_UNSEEN = object()

# A resolved target: the node's value, or None when the node does not have it.
Value = str | None
Resolver = Callable[[Node], Value]


class FeasibilityChecker(Protocol):
    name: str

    def feasible(self, node: Node) -> bool: ...


# -- targets ------------------------------------------------------------------


def _is_literal(target: str) -> bool:
    t = target.strip()
    return not (t.startswith("${") and t.endswith("}"))


def _literal(text: str) -> Resolver:
    return lambda node: text


def _dict_key(which: str, key: str) -> Resolver:
    if which == "attr":
        return lambda node: node.attributes.get(key)
    return lambda node: node.meta.get(key)


_NODE_FIELDS: dict[str, Callable[[Node], str]] = {
    "node.unique.id": lambda n: n.id,
    "node.unique.name": lambda n: n.name,
    "node.datacenter": lambda n: n.datacenter,
    "node.class": lambda n: n.node_class,
    "node.pool": lambda n: n.node_pool,
}


def _missing(node: Node) -> Value:
    return None


@lru_cache(maxsize=1024)
def resolver(target: str) -> Resolver:
    """Compile a constraint target: ``${attr.kernel.name}``, ``${node.datacenter}``,
    ``${meta.rack}``, ... or a literal. Unknown ``${...}`` targets resolve to None."""
    if _is_literal(target):
        return _literal(target)
    inner = target.strip()[2:-1].strip()
    if inner in _NODE_FIELDS:
        return _NODE_FIELDS[inner]
    for prefix, which in (("attr.", "attr"), ("meta.", "meta")):
        if inner.startswith(prefix) and len(inner) > len(prefix):
            return _dict_key(which, inner[len(prefix):])
    return _missing


def resolve_target(target: str, node: Node) -> Value:
    return resolver(target)(node)


def is_unique_target(target: str) -> bool:
    """Targets that differ on every node (``${node.unique.id}``, ``${attr.unique.hostname}``)."""
    t = target.strip()
    return t.startswith("${") and ("unique." in t)


# -- operators ----------------------------------------------------------------


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ordered(op: str, lval: str, rval: str) -> bool:
    ln, rn = _as_number(lval), _as_number(rval)
    if ln is not None and rn is not None:
        a: float | str = ln
        b: float | str = rn
    else:
        a, b = lval, rval
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


@lru_cache(maxsize=1024)
def _regexp(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _set(text: str) -> set[str]:
    return {p.strip() for p in text.split(",") if p.strip()}


def check_operator(operator: str, lval: Value, rval: Value) -> bool:
    """Nomad's checkConstraint. ``lval``/``rval`` are None when the target is not set.

    Unknown operators never match: an unsupported constraint must not be ignored.
    """
    if operator in ("=", "==", "is"):
        return lval is not None and rval is not None and lval == rval
    if operator in ("!=", "not"):
        return lval != rval
    if operator == "is_set":
        return lval is not None
    if operator == "is_not_set":
        return lval is None
    if lval is None or rval is None:
        return False
    if operator in ("<", "<=", ">", ">="):
        return _ordered(operator, lval, rval)
    if operator == "regexp":
        rx = _regexp(rval)
        return rx is not None and rx.search(lval) is not None
    if operator in ("set_contains", "set_contains_all"):
        return _set(rval) <= _set(lval)
    if operator == "set_contains_any":
        return not _set(rval).isdisjoint(_set(lval))
    if operator == "version":
        return version_matches(lval, rval)
    if operator == "semver":
        return version_matches(lval, rval, semver=True)
    return False


def constraint_name(c: Constraint) -> str:
    """Nomad's Constraint.String(): ``${attr.kernel.name} = linux``."""
    return f"{c.attribute} {c.operator} {c.value}".strip()


# -- node-level checkers --------------------------------------------------------


@dataclass(slots=True)
class NodeStatusChecker:
    """Ready, eligible for scheduling and not draining; names say which one failed."""

    name: str = "node status"

    def reason(self, node: Node) -> str | None:
        if node.status != NODE_READY:
            return FILTER_NOT_READY
        if not node.eligible:
            return FILTER_INELIGIBLE
        if node.drain:
            return FILTER_DRAINING
        return None

    def feasible(self, node: Node) -> bool:
        return self.reason(node) is None


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


@dataclass(slots=True)
class DatacenterChecker:
    """``job.datacenters``, where ``*`` matches any run of characters."""

    datacenters: Sequence[str]
    name: str = ""
    _exact: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _globs: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = f"datacenter not in [{', '.join(self.datacenters)}]"
        self._exact = frozenset(d for d in self.datacenters if "*" not in d)
        self._globs = tuple(_glob(d) for d in self.datacenters if "*" in d)

    def feasible(self, node: Node) -> bool:
        dc = node.datacenter
        return dc in self._exact or any(g.match(dc) for g in self._globs)


@dataclass(slots=True)
class NodePoolChecker:
    """``job.node_pool``; the pool ``all`` takes every node."""

    pool: str
    name: str = ""

    def __post_init__(self) -> None:
        self.name = f"node pool not {self.pool}"

    def feasible(self, node: Node) -> bool:
        return self.pool == ALL_POOLS or node.node_pool == self.pool


@dataclass(slots=True)
class DriverChecker:
    """Every task's driver is one the node's agent advertises (``docker``, ``exec``, ...)."""

    drivers: frozenset[str]
    name: str = FILTER_MISSING_DRIVERS

    def feasible(self, node: Node) -> bool:
        have = node.drivers
        return all(d in have for d in self.drivers)


@dataclass(slots=True)
class ConstraintChecker:
    """One attribute constraint: both sides are resolved against the node."""

    constraint: Constraint
    name: str = ""
    _left: Resolver = field(default=_missing, init=False, repr=False)
    _right: Resolver = field(default=_missing, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = constraint_name(self.constraint)
        self._left = resolver(self.constraint.attribute)
        self._right = resolver(self.constraint.value)

    def feasible(self, node: Node) -> bool:
        return check_operator(self.constraint.operator, self._left(node), self._right(node))


# -- plan-dependent checkers -----------------------------------------------------


class ProposedAllocs(Protocol):
    """The plan in progress: live allocations of the job per node, after this plan."""

    def job_count(self, node_id: str) -> int: ...

    def group_count(self, node_id: str, group: str) -> int: ...


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("false", "0", "no")


@dataclass(slots=True)
class DistinctHostsChecker:
    """No two allocations of the job (``group=None``) or of one group on a node."""

    proposed: ProposedAllocs
    group: str | None = None
    name: str = DISTINCT_HOSTS

    def feasible(self, node: Node) -> bool:
        if self.group is None:
            return self.proposed.job_count(node.id) == 0
        return self.proposed.group_count(node.id, self.group) == 0


@dataclass(slots=True)
class DistinctPropertyChecker:
    """At most ``limit`` allocations of the job (or group) per value of a node property.

    ``counts`` is kept by the scheduler as it places and stops allocations
    (:meth:`add`/:meth:`remove`); a node without the property is infeasible.
    """

    attribute: str
    limit: int = 1
    group: str | None = None  # None: counts the whole job
    counts: dict[str, int] = field(default_factory=dict)
    name: str = ""
    _value: Resolver = field(default=_missing, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = f"{DISTINCT_PROPERTY} {self.attribute}"
        self._value = resolver(self.attribute)

    @classmethod
    def from_constraint(cls, c: Constraint, group: str | None) -> DistinctPropertyChecker:
        try:
            limit = int(c.value) if c.value.strip() else 1
        except ValueError:
            limit = 1
        return cls(attribute=c.attribute, limit=max(limit, 1), group=group)

    def applies_to(self, group: str) -> bool:
        return self.group is None or self.group == group

    def value(self, node: Node) -> Value:
        return self._value(node)

    def add(self, node: Node | None, delta: int = 1) -> None:
        if node is None:
            return
        v = self._value(node)
        if v is not None:
            self.counts[v] = self.counts.get(v, 0) + delta

    def remove(self, node: Node | None) -> None:
        self.add(node, -1)

    def feasible(self, node: Node) -> bool:
        v = self._value(node)
        return v is not None and self.counts.get(v, 0) < self.limit


# -- whole-run node filter ---------------------------------------------------------


@dataclass(slots=True)
class BaseNodes:
    """The nodes a job may use at all, and why the others were left out."""

    nodes: list[Node]
    filtered: dict[str, int]  # checker name -> nodes
    evaluated: int  # all nodes looked at
    available: dict[str, int]  # nodes that passed, by datacenter (Nomad's NodesAvailable)


class JobNodeFilter:
    """The job-wide node checks in one call, for a node met during a walk: ready,
    eligible, not draining, in one of the job's datacenters and its node pool.
    ``reason(node)`` is None or the name of the check that failed."""

    __slots__ = ("_dcs", "_pool")

    def __init__(self, job: Job) -> None:
        dcs = DatacenterChecker(job.datacenters)
        self._dcs: DatacenterChecker | None = None if "*" in job.datacenters else dcs
        self._pool: NodePoolChecker | None = None if job.node_pool == ALL_POOLS else NodePoolChecker(job.node_pool)

    def reason(self, node: Node) -> str | None:
        if node.status != NODE_READY:
            return FILTER_NOT_READY
        if not node.eligible:
            return FILTER_INELIGIBLE
        if node.drain:
            return FILTER_DRAINING
        dcs = self._dcs
        if dcs is not None and not dcs.feasible(node):
            return dcs.name
        pool = self._pool
        if pool is not None and node.node_pool != pool.pool:
            return pool.name
        return None


def base_nodes(job: Job, nodes: Iterable[Node]) -> BaseNodes:
    """Run the job-wide node checkers once over the cluster (Nomad's readyNodesInDCs)."""
    check = JobNodeFilter(job)
    keep: list[Node] = []
    filtered: dict[str, int] = {}
    available: dict[str, int] = {}
    evaluated = 0
    for node in nodes:
        evaluated += 1
        why = check.reason(node)
        if why is not None:
            filtered[why] = filtered.get(why, 0) + 1
            continue
        keep.append(node)
        available[node.datacenter] = available.get(node.datacenter, 0) + 1
    return BaseNodes(keep, filtered, evaluated, available)


# -- one task group ------------------------------------------------------------------


def group_constraints(job: Job, group: TaskGroup) -> tuple[list[Constraint], list[Constraint]]:
    """(attribute constraints of job, group and tasks, deduplicated; group-level plan
    constraints). Job-level ``distinct_*`` constraints are the scheduler's, shared by groups."""
    seen: set[tuple[str, str, str]] = set()
    attrs: list[Constraint] = []
    plan: list[Constraint] = []
    sources = [*job.constraints, *group.constraints, *(c for t in group.tasks for c in t.constraints)]
    job_level = len(job.constraints)
    for i, c in enumerate(sources):
        if c.operator in PLAN_OPERATORS:
            if i >= job_level:
                plan.append(c)
            continue
        key = (c.attribute, c.operator, c.value)
        if key not in seen:
            seen.add(key)
            attrs.append(c)
    return attrs, plan


@dataclass(slots=True)
class _Compiled:
    name: str
    operator: str
    left: int  # index into the computed-class tuple, or -1 for a literal
    right: int
    left_literal: str = ""
    right_literal: str = ""


class GroupFeasibility:
    """All the checks one task group puts to a node, with a computed-class cache.

    ``reason(node)`` is None when the node is feasible, else the name of the first
    checker that filtered it. ``base`` (when given) runs the job-wide node checks
    first, for walks over the whole cluster. ``plan_checkers`` are evaluated per
    node every time (they depend on the plan in progress); job-level ones are
    passed in shared. The computed class is the tuple of the node's values for
    the ``${...}`` targets of the group's constraints; literals are folded in once.
    """

    __slots__ = ("base", "drivers", "plan_checkers", "_targets", "_compiled", "_cache", "_escaped", "_static")

    def __init__(
        self,
        job: Job,
        group: TaskGroup,
        proposed: ProposedAllocs,
        job_plan_checkers: Sequence[FeasibilityChecker] = (),
        base: JobNodeFilter | None = None,
    ) -> None:
        self.base = base
        attrs, plan = group_constraints(job, group)
        self.drivers: tuple[str, ...] = tuple(sorted({t.driver for t in group.tasks if t.driver}))
        group_plan: list[FeasibilityChecker] = []
        for c in plan:
            if c.operator == DISTINCT_HOSTS:
                if _truthy(c.value or "true"):
                    group_plan.append(DistinctHostsChecker(proposed, group.name))
            else:
                group_plan.append(DistinctPropertyChecker.from_constraint(c, group.name))
        self.plan_checkers: list[FeasibilityChecker] = [*job_plan_checkers, *group_plan]
        targets: list[str] = []
        index: dict[str, int] = {}

        def slot(t: str) -> int:
            if _is_literal(t):
                return -1
            if t not in index:
                index[t] = len(targets)
                targets.append(t)
            return index[t]

        self._compiled = [
            _Compiled(constraint_name(c), c.operator, slot(c.attribute), slot(c.value), c.attribute, c.value)
            for c in attrs
        ]
        self._targets: tuple[Resolver, ...] = tuple(resolver(t) for t in targets)
        self._cache: dict[tuple[Value, ...], str | None] = {}
        self._escaped = any(is_unique_target(t) for t in targets)
        self._static: dict[str, str | None] = {}  # node id -> outcome of the checks that do not depend on the plan

    def distinct_property_checkers(self) -> list[DistinctPropertyChecker]:
        return [c for c in self.plan_checkers if isinstance(c, DistinctPropertyChecker)]

    def _constraints_reason(self, node: Node) -> str | None:
        values = tuple([r(node) for r in self._targets])
        escaped = self._escaped
        if not escaped:
            hit = self._cache.get(values, False)
            if hit is not False:
                return hit  # type: ignore[return-value]
        why: str | None = None
        for c in self._compiled:
            left = values[c.left] if c.left >= 0 else c.left_literal
            right = values[c.right] if c.right >= 0 else c.right_literal
            if not check_operator(c.operator, left, right):
                why = c.name
                break
        if not escaped:
            self._cache[values] = why
        return why

    def reason(self, node: Node) -> str | None:
        why = self._static.get(node.id, _UNSEEN)
        if why is _UNSEEN:
            why = None
            if self.base is not None:
                why = self.base.reason(node)
            if why is None:
                why = self._node_reason(node)
            self._static[node.id] = why
        if why is not None:
            return why  # type: ignore[return-value]
        for c in self.plan_checkers:
            if not c.feasible(node):
                return c.name
        return None

    def group_reason(self, node: Node) -> str | None:
        """:meth:`reason` without the job-wide node checks (status, datacenter, pool)."""
        why = self._node_reason(node)
        if why is not None:
            return why
        for c in self.plan_checkers:
            if not c.feasible(node):
                return c.name
        return None

    def _node_reason(self, node: Node) -> str | None:
        """Drivers and attribute constraints: the same for a node all run long."""
        if self.drivers:
            have = node.drivers
            for d in self.drivers:
                if d not in have:
                    return FILTER_MISSING_DRIVERS
        if self._compiled:
            return self._constraints_reason(node)
        return None

    def feasible(self, node: Node) -> bool:
        return self.reason(node) is None


def job_plan_checkers(job: Job, proposed: ProposedAllocs) -> list[FeasibilityChecker]:
    """The job-level ``distinct_hosts``/``distinct_property`` checkers, shared by all groups."""
    out: list[FeasibilityChecker] = []
    for c in job.constraints:
        if c.operator == DISTINCT_HOSTS and _truthy(c.value or "true"):
            out.append(DistinctHostsChecker(proposed, None))
        elif c.operator == DISTINCT_PROPERTY:
            out.append(DistinctPropertyChecker.from_constraint(c, None))
    return out
