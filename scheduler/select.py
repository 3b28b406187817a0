"""Selection: which ranked node gets the allocation.

Nomad does not rank every node for every placement. The candidate nodes are
shuffled once per run (seeded from the evaluation id, so a run is
reproducible) and walked as a ring whose position carries over from one
placement to the next (Nomad's StaticIterator), so successive placements look
at different nodes. The shuffle is lazy (Fisher-Yates, one swap per node as
the walk first reaches it): a run that looks at a few hundred nodes of a
5,000 node cluster does not pay for shuffling all of them. A placement stops
walking once it has ``limit`` feasible, fitting candidates (the "power of k
choices": 2 for batch jobs, ``ceil(log2 n)`` for services, and, as Nomad,
``max(count, 100)`` when affinities or spreads must be weighed) and takes the
best scored of them. Candidates scoring at or below a threshold (0: e.g. a node that
already runs this group) are passed over up to ``max_skip`` times in favour of
later ones, and only used when the ring runs dry (Nomad's LimitIterator).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shoal.jobs.structs import Node
from shoal.scheduler.rank import RankedNode

DEFAULT_MAX_SKIP = 3
DEFAULT_SCORE_THRESHOLD = 0.0
BATCH_LIMIT = 2


SCORED_LIMIT = 100  # Nomad's floor for the limit when affinities or spreads are scored
# Candidates compared per placement when they come in best-fit order from a usage index:
# the order already did the ranking's work, so a few suffice (and job anti-affinity still
# has alternatives to the node a group already runs on).
BEST_FIT_LIMIT = 3


def placement_limit(node_count: int, *, batch: bool, scored_count: int | None = None) -> int:
    """How many fitting candidates one placement compares. ``scored_count`` is the
    group's count when affinities or spreads are scored: then ``max(count, 100)``."""
    if scored_count is not None:
        return max(scored_count, SCORED_LIMIT, BATCH_LIMIT)
    if batch:
        return BATCH_LIMIT
    if node_count <= 0:
        return BATCH_LIMIT
    return max(BATCH_LIMIT, math.ceil(math.log2(node_count)))


class NodeRing:
    """The nodes as a ring; each :meth:`walk` visits every node once, starting where
    the previous walk stopped. With a ``seed`` the order is a shuffle of ``nodes``
    that depends only on their order and the seed, drawn as the walk goes."""

    __slots__ = ("nodes", "offset", "_rng", "_shuffled")

    def __init__(self, nodes: list[Node], seed: str | None = None) -> None:
        self.nodes = list(nodes)
        self.offset = 0
        self._rng = random.Random(seed) if seed is not None else None
        self._shuffled = 0 if seed is not None else len(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def walk(self) -> Iterator[Node]:
        nodes = self.nodes
        n = len(nodes)
        for _ in range(n):
            i = self.offset
            if i >= self._shuffled:
                j = i + int(self._rng.random() * (n - i))  # type: ignore[union-attr]
                nodes[i], nodes[j] = nodes[j], nodes[i]
                self._shuffled = i + 1
            self.offset = i + 1 if i + 1 < n else 0
            yield nodes[i]


class CandidateWalk:
    """Candidates for one task group's ask in best-fit order, for one run: node ids
    from a capacity-ordered source (:meth:`UsageIndex.candidates`), resolved to
    nodes as the walks reach them.

    Each :meth:`walk` starts from the first candidate not yet known to be out of
    the question for the group in this run: the ranker adds to :attr:`passed`
    the nodes it filters or finds exhausted, which within a run stay so (the
    plan only adds to a node's usage; a released allocation calls
    :meth:`reopen`). So successive placements of a group cost O(limit), not a
    rescan of the nodes the group has already filled.
    """

    __slots__ = ("_ids", "_node", "_order", "start", "passed")

    def __init__(self, ids: Iterator[str], node: Callable[[str], Node | None]) -> None:
        self._ids = ids
        self._node = node
        self._order: list[Node] = []
        self.start = 0
        self.passed: set[str] = set()

    def walk(self) -> Iterator[Node]:
        order, passed = self._order, self.passed
        i = self.start
        while True:
            if i < len(order):
                node = order[i]
            else:
                node_id = next(self._ids, None)
                if node_id is None:
                    return
                found = self._node(node_id)
                if found is None:
                    continue
                node = found
                order.append(node)
            if node.id in passed:
                if i == self.start:
                    self.start = i + 1
                i += 1
                continue
            i += 1
            yield node

    def reopen(self, node_id: str) -> None:
        """``node_id`` has room again (an allocation on it was released)."""
        self.passed.discard(node_id)
        self.start = 0


@dataclass(slots=True)
class LimitSelector:
    """Nomad's LimitIterator followed by its MaxScoreIterator."""

    limit: int
    max_skip: int = DEFAULT_MAX_SKIP
    threshold: float = DEFAULT_SCORE_THRESHOLD

    def select(self, options: Iterator[RankedNode]) -> RankedNode | None:
        """The best of the first ``limit`` options (ties: the first seen); stops
        consuming ``options`` as soon as it has them."""
        best: RankedNode | None = None
        seen = 0
        skipped: list[RankedNode] = []
        limit, max_skip, threshold = self.limit, self.max_skip, self.threshold
        for option in options:
            if option.score <= threshold and len(skipped) < max_skip:
                skipped.append(option)
                continue
            if best is None or option.score > best.score:
                best = option
            seen += 1
            if seen >= limit:
                return best
        for option in skipped:
            if seen >= limit:
                break
            if best is None or option.score > best.score:
                best = option
            seen += 1
        return best
