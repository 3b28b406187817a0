"""Selection: which ranked node gets the allocation.

Nomad does not rank every node for every placement. The candidate nodes are
shuffled once per run (seeded from the evaluation id, so a run is
reproducible) and walked as a ring whose position carries over from one
placement to the next (Nomad's StaticIterator), so successive placements look
at different nodes. A placement stops walking once it has ``limit`` feasible,
fitting candidates (the "power of k choices": 2 for batch jobs, ``ceil(log2 n)``
for services, every node when affinities must be weighed) and takes the best
scored of them. Candidates scoring at or below a threshold (0: e.g. a node that
already runs this group) are passed over up to ``max_skip`` times in favour of
later ones, and only used when the ring runs dry (Nomad's LimitIterator).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shoal.jobs.structs import Node
from shoal.scheduler.rank import RankedNode

DEFAULT_MAX_SKIP = 3
DEFAULT_SCORE_THRESHOLD = 0.0
BATCH_LIMIT = 2


def shuffle_nodes(nodes: Iterable[Node], seed: str) -> list[Node]:
    """The nodes in an order that depends only on their ids and ``seed``."""
    out = sorted(nodes, key=lambda n: n.id)
    random.Random(seed).shuffle(out)
    return out


def placement_limit(node_count: int, *, batch: bool, score_all: bool = False) -> int:
    """How many fitting candidates one placement compares."""
    if score_all:
        return max(node_count, 1)
    if batch:
        return BATCH_LIMIT
    if node_count <= 0:
        return BATCH_LIMIT
    return max(BATCH_LIMIT, math.ceil(math.log2(node_count)))


class NodeRing:
    """The shuffled nodes as a ring; each :meth:`walk` visits every node once,
    starting where the previous walk stopped."""

    __slots__ = ("nodes", "offset")

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.offset = 0

    def __len__(self) -> int:
        return len(self.nodes)

    def walk(self) -> Iterator[Node]:
        nodes = self.nodes
        n = len(nodes)
        for _ in range(n):
            i = self.offset
            self.offset = i + 1 if i + 1 < n else 0
            yield nodes[i]


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
