"""Ranking: does the group fit on a feasible node, and how good a choice is the node?

* :func:`exhausted_dimension`: the first of cpu, memory, disk the node lacks.
* :func:`score_fit_binpack` / :func:`score_fit_spread`: Nomad's ScoreFitBinPack
  and ScoreFitSpread on the node's usage *with* the allocation, 0..18, which the
  ranker normalizes to 0..1. Bin packing prefers fuller nodes; spread the emptier.
* :func:`job_anti_affinity`: Nomad's penalty for stacking one job's group on one
  node, ``-(collisions + 1) / desired count``.
* :class:`AffinityScorer`: Nomad's node affinity, the matched weights over the
  sum of absolute weights, -1..1.

A node's final score is the mean of the scores that apply to it (Nomad's
ScoreNormalizationIterator): binpack always, the others when non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from shoal.jobs.model import Affinity, Job, Resources, TaskGroup
from shoal.jobs.structs import Node
from shoal.scheduler.feasible import GroupFeasibility, Value, check_operator, is_unique_target, resolver
from shoal.scheduler.metrics import PlacementMetrics
from shoal.scheduler.usage import NodeTally, PlanUsage

BINPACK = "binpack"
SPREAD = "spread"
ALGORITHMS = (BINPACK, SPREAD)
MAX_FIT_SCORE = 18.0

CPU, MEMORY, DISK = "cpu", "memory", "disk"


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

    def rank(self, nodes: Iterable[Node], metrics: PlacementMetrics) -> Iterator[RankedNode]:
        """Yield each feasible node the group fits on, with its score, recording
        in ``metrics`` why the others were passed over.

        The hot loop of the scheduler: :func:`exhausted_dimension` and
        :func:`score_fit_binpack`/:func:`score_fit_spread` are inlined here.
        """
        reason, usage, group = self.feasibility.reason, self.usage, self.group
        tallies = usage.tallies
        ask = self.ask
        ask_cpu, ask_mem, ask_disk = ask.cpu, ask.memory, ask.disk
        spread = self.algorithm == SPREAD
        affinity, penalty_nodes, count = self.affinity, self.penalty_nodes, self.desired_count
        for node in nodes:
            metrics.nodes_evaluated += 1
            why = reason(node)
            if why is not None:
                metrics.filter(why)
                continue
            tally = tallies.get(node.id) or usage.tally(node)
            cpu = tally.cpu + ask_cpu
            mem = tally.memory + ask_mem
            if cpu > tally.cpu_cap:
                metrics.exhaust(CPU)
                continue
            if mem > tally.memory_cap:
                metrics.exhaust(MEMORY)
                continue
            if tally.disk + ask_disk > tally.disk_cap:
                metrics.exhaust(DISK)
                continue
            free_cpu = 1.0 - cpu / tally.cpu_cap if tally.cpu_cap > 0 else 0.0
            free_mem = 1.0 - mem / tally.memory_cap if tally.memory_cap > 0 else 0.0
            fit: float = 10.0**free_cpu + 10.0**free_mem
            fit = fit - 2.0 if spread else 20.0 - fit
            total = (0.0 if fit < 0.0 else MAX_FIT_SCORE if fit > MAX_FIT_SCORE else fit) / MAX_FIT_SCORE
            n = 1
            collisions = usage.group_count(node.id, group)
            if collisions:
                total += job_anti_affinity(collisions, count)
                n += 1
            if penalty_nodes and node.id in penalty_nodes:
                total -= 1.0
                n += 1
            if affinity is not None:
                a = affinity.score(node)
                if a:
                    total += a
                    n += 1
            yield RankedNode(node, total / n, tally)
