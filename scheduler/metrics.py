"""Placement metrics: what one placement attempt saw, Nomad's AllocMetric.

Counted during an attempt and turned into a :class:`PlacementFailure` when the
attempt found no node, together with what the run-wide node filter left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.jobs.structs import PlacementFailure


@dataclass(slots=True)
class PlacementMetrics:
    nodes_evaluated: int = 0
    nodes_filtered: int = 0
    constraint_filtered: dict[str, int] = field(default_factory=dict)
    nodes_exhausted: int = 0
    dimension_exhausted: dict[str, int] = field(default_factory=dict)

    def filter(self, why: str) -> None:
        self.nodes_filtered += 1
        self.constraint_filtered[why] = self.constraint_filtered.get(why, 0) + 1

    def exhaust(self, dimension: str) -> None:
        self.nodes_exhausted += 1
        self.dimension_exhausted[dimension] = self.dimension_exhausted.get(dimension, 0) + 1

    def failure(
        self,
        task_group: str,
        missing: int,
        *,
        base_filtered: dict[str, int] | None = None,
        available: dict[str, int] | None = None,
    ) -> PlacementFailure:
        """The failure record. ``base_filtered`` counts the nodes the job-wide filter
        removed before the attempt (not ready, other datacenter or pool): they were
        evaluated and filtered too."""
        filtered = dict(base_filtered or {})
        for why, n in self.constraint_filtered.items():
            filtered[why] = filtered.get(why, 0) + n
        base_count = sum((base_filtered or {}).values())
        return PlacementFailure(
            task_group=task_group,
            missing=missing,
            nodes_evaluated=self.nodes_evaluated + base_count,
            nodes_available=dict(available or {}),
            nodes_filtered=self.nodes_filtered + base_count,
            constraint_filtered=filtered,
            nodes_exhausted=self.nodes_exhausted,
            dimension_exhausted=dict(self.dimension_exhausted),
        )
