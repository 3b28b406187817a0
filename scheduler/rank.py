"""Ranking: does the group fit on a feasible node, and how good a choice is the node?

* :func:`exhausted_dimension`: the first of cpu, memory, disk the node lacks.
* :func:`score_fit_binpack` / :func:`score_fit_spread`: Nomad's ScoreFitBinPack
  and ScoreFitSpread on the node's usage *with* the allocation, 0..18, which the
  ranker normalizes to 0..1. Bin packing prefers fuller nodes; spread the emptier.
* :func:`job_anti_affinity`: Nomad's penalty for stacking one job's group on one
  node, ``-(collisions + 1) / desired count``.
* :class:`AffinityScorer`: Nomad's node affinity, the matched weights over the
  sum of absolute weights, -1..1 (weights are -100..100, not 0).
* :class:`SpreadScorer`: Nomad's SpreadIterator for ``spread`` stanzas (job and
  group): with targets, a node whose value is under its target share is boosted
  by ``(desired - used) / desired`` times the spread's share of the weights;
  without, values with fewer allocations than the others are boosted.
* Host ports (:mod:`shoal.scheduler.ports`) are checked with the resources.

A node's final score is the mean of the scores that apply to it (Nomad's
ScoreNormalizationIterator): binpack always, the others when non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from shoal.jobs.model import Affinity, Job, Resources, Spread, TaskGroup
from shoal.jobs.structs import Node
from shoal.scheduler.feasible import GroupFeasibility, Resolver, Value, check_operator, is_unique_target, resolver
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.ports import PortAsk, port_exhausted
from shoal.scheduler.usage import CPU, DISK, MEMORY, NodeTally, PlanUsage

BINPACK = "binpack"
SPREAD = "spread"
ALGORITHMS = (BINPACK, SPREAD)
MAX_FIT_SCORE = 18.0
IMPLICIT_TARGET = "*"  # a spread's share of the values its targets do not name


@dataclass(slots=True)
class RankedNode:
    node: Node
    score: float  # final, normalized score; higher is better
    tally: NodeTally


def exhausted_dimension(tally: NodeTally, ask: Resources) -> str | None:
    """None when ``ask`` fits next to what the node already runs; else the first
    exhausted dimension, in Nomad's order: cpu, memory, disk."""
    if tally.cpu + ask.cpu > tally.cpu_cap:
        return CPU
    if tally.memory + ask.memory > tally.memory_cap:
        return MEMORY
    if tally.disk + ask.disk > tally.disk_cap:
        return DISK
    return None


def _free_fractions(tally: NodeTally, ask: Resources) -> tuple[float, float]:
    cpu_cap, mem_cap = tally.cpu_cap, tally.memory_cap
    free_cpu = 1.0 - (tally.cpu + ask.cpu) / cpu_cap if cpu_cap > 0 else 0.0
    free_mem = 1.0 - (tally.memory + ask.memory) / mem_cap if mem_cap > 0 else 0.0
    return free_cpu, free_mem


def score_fit_binpack(tally: NodeTally, ask: Resources) -> float:
    """``20 - (10^freeCpu + 10^freeMem)`` bounded to 0..18: 18 for a node the
    allocation fills exactly, 0 for an empty one."""
    free_cpu, free_mem = _free_fractions(tally, ask)
    score: float = 20.0 - (10.0**free_cpu + 10.0**free_mem)
    return min(max(score, 0.0), MAX_FIT_SCORE)


def score_fit_spread(tally: NodeTally, ask: Resources) -> float:
    """``(10^freeCpu + 10^freeMem) - 2`` bounded to 0..18: the reverse of binpack."""
    free_cpu, free_mem = _free_fractions(tally, ask)
    score: float = (10.0**free_cpu + 10.0**free_mem) - 2.0
    return min(max(score, 0.0), MAX_FIT_SCORE)


def job_anti_affinity(collisions: int, desired_count: int) -> float:
    """0 without collisions, else ``-(collisions + 1) / desired_count``."""
    if collisions <= 0:
        return 0.0
    return -float(collisions + 1) / float(max(desired_count, 1))


class AffinityScorer:
    """Nomad's NodeAffinityIterator for the job's, group's and tasks' affinities."""

    __slots__ = ("_affinities", "_total", "_cache", "_escaped")

    def __init__(self, affinities: Sequence[Affinity]) -> None:
        self._affinities = [(resolver(a.attribute), resolver(a.value), a.operator, a.weight) for a in affinities]
        self._total = float(sum(abs(a.weight) for a in affinities))
        self._cache: dict[tuple[Value, ...], float] = {}
        self._escaped = any(is_unique_target(a.attribute) or is_unique_target(a.value) for a in affinities)

    @classmethod
    def for_group(cls, job: Job, group: TaskGroup) -> AffinityScorer | None:
        found = [*job.affinities, *group.affinities, *(a for t in group.tasks for a in t.affinities)]
        return cls(found) if found else None

    def score(self, node: Node) -> float:
        values = tuple(v for lr, rr, _, _ in self._affinities for v in (lr(node), rr(node)))
        if not self._escaped:
            hit = self._cache.get(values)
            if hit is not None:
                return hit
        matched = 0.0
        for i, (_, _, op, weight) in enumerate(self._affinities):
            if check_operator(op, values[2 * i], values[2 * i + 1]):
                matched += weight
        result = matched / self._total if self._total else 0.0
        if not self._escaped:
            self._cache[values] = result
        return result


class SpreadScorer:
    """Nomad's SpreadIterator for one task group: its spreads and the job's.

    ``counts`` holds, per spread, the group's live allocations per attribute value,
    this plan included: seeded with :meth:`add` for the existing allocations and
    kept current by the scheduler as it places and stops them.
    """

    __slots__ = ("_spreads", "_sum_weights", "counts", "_lowest")

    def __init__(self, spreads: Sequence[Spread], count: int) -> None:
        self._spreads: list[tuple[Resolver, int, dict[str, float]]] = []
        for sp in spreads:
            desired: dict[str, float] = {}
            total = 0.0
            for t in sp.targets:
                d = t.percent / 100.0 * count
                desired[t.value] = d
                total += d
            if 0 < total < count:
                desired[IMPLICIT_TARGET] = count - total
            self._spreads.append((resolver(sp.attribute), sp.weight, desired))
        self._sum_weights = float(sum(sp.weight for sp in spreads)) or 1.0
        self.counts: list[dict[str, int]] = [{} for _ in spreads]
        self._lowest = -1.0

    @classmethod
    def for_group(cls, job: Job, group: TaskGroup) -> SpreadScorer | None:
        spreads = [*group.spreads, *job.spreads]
        return cls(spreads, group.count) if spreads else None

    def add(self, node: Node | None, delta: int = 1) -> None:
        if node is None:
            return
        for (value_of, _, _), counts in zip(self._spreads, self.counts):
            v = value_of(node)
            if v is not None:
                counts[v] = counts.get(v, 0) + delta

    def remove(self, node: Node | None) -> None:
        self.add(node, -1)

    def score(self, node: Node) -> float:
        total = 0.0
        for (value_of, weight, desired), counts in zip(self._spreads, self.counts):
            v = value_of(node)
            if v is None:
                total -= 1.0  # the node lacks the attribute: the maximum penalty
                continue
            if not desired:
                total += _even_spread_boost(counts, v)
                continue
            want = desired.get(v)
            if want is None:
                want = desired.get(IMPLICIT_TARGET)
                if want is None:
                    total -= 1.0
                    continue
            if want == 0:
                total += self._lowest
                continue
            boost = (want - (counts.get(v, 0) + 1)) / want * (weight / self._sum_weights)
            total += boost
            if boost < self._lowest:
                self._lowest = boost
        return total


def _even_spread_boost(counts: dict[str, int], value: str) -> float:
    """Nomad's evenSpreadScoreBoost: favour the values with the fewest allocations."""
    if not counts:
        return 0.0
    current = counts.get(value, 0)
    low = high = 0
    for n in counts.values():
        if low == 0 or n < low:
            low = n
        if high == 0 or n > high:
            high = n
    delta_boost = -1.0 if low == 0 else (low - current) / low
    if current != low:
        return delta_boost
    if low == high:
        return -1.0
    if low == 0:
        return 1.0
    return (high - low) / low


@dataclass(slots=True)
class GroupRanker:
    """Feasibility, fit and score for one task group: Nomad's rank iterator chain."""

    group: str
    ask: Resources
    desired_count: int
    feasibility: GroupFeasibility
    usage: PlanUsage
    algorithm: str = BINPACK
    affinity: AffinityScorer | None = None
    penalty_nodes: frozenset[str] = frozenset()  # e.g. the node a failed alloc ran on
    ports: PortAsk | None = None
    spread: SpreadScorer | None = None

    def rank(
        self, nodes: Iterable[Node], metrics: PlacementMetrics, passed: set[str] | None = None
    ) -> Iterator[RankedNode]:
        """Yield each feasible node the group fits on, with its score, recording
        in ``metrics`` why the others were passed over (and their ids in
        ``passed``, when given).

        The hot loop of the scheduler: :func:`exhausted_dimension` and
        :func:`score_fit_binpack`/:func:`score_fit_spread` are inlined here.
        """
        reason, usage, group = self.feasibility.reason, self.usage, self.group
        tallies, group_counts = usage.tallies, usage.group_counts
        ask = self.ask
        ask_cpu, ask_mem, ask_disk = ask.cpu, ask.memory, ask.disk
        spread = self.algorithm == SPREAD
        affinity, penalty_nodes, count = self.affinity, self.penalty_nodes, self.desired_count
        ports, spreads = self.ports, self.spread
        for node in nodes:
            metrics.nodes_evaluated += 1
            why = reason(node)
            if why is not None:
                metrics.filter(why)
                if passed is not None:
                    passed.add(node.id)
                continue
            tally = tallies.get(node.id) or usage.tally(node)
            cpu = tally.cpu + ask_cpu
            mem = tally.memory + ask_mem
            if cpu > tally.cpu_cap:
                why = CPU
            elif mem > tally.memory_cap:
                why = MEMORY
            elif tally.disk + ask_disk > tally.disk_cap:
                why = DISK
            elif ports is not None:
                why = port_exhausted(tally, ports)
            if why is not None:
                metrics.exhaust(why)
                if passed is not None:
                    passed.add(node.id)
                continue
            free_cpu = 1.0 - cpu / tally.cpu_cap if tally.cpu_cap > 0 else 0.0
            free_mem = 1.0 - mem / tally.memory_cap if tally.memory_cap > 0 else 0.0
            fit: float = 10.0**free_cpu + 10.0**free_mem
            fit = fit - 2.0 if spread else 20.0 - fit
            total = (0.0 if fit < 0.0 else MAX_FIT_SCORE if fit > MAX_FIT_SCORE else fit) / MAX_FIT_SCORE
            n = 1
            collisions = group_counts.get((node.id, group))
            if collisions:  # job_anti_affinity, inlined
                total -= (collisions + 1) / (count if count > 0 else 1)
                n += 1
            if penalty_nodes and node.id in penalty_nodes:
                total -= 1.0
                n += 1
            if affinity is not None:
                a = affinity.score(node)
                if a:
                    total += a
                    n += 1
            if spreads is not None:
                a = spreads.score(node)
                if a:
                    total += a
                    n += 1
            yield RankedNode(node, total / n, tally)
