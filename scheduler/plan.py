"""A Plan: what one scheduler run wants changed. The leader's plan applier commits it."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.jobs.structs import Allocation, PlacementFailure


@dataclass(slots=True)
class Plan:
    eval_id: str = ""
    namespace: str = "default"
    job_id: str = ""
    job_modify_index: int = 0  # the job version this plan was computed for
    priority: int = 50
    # node_id -> new allocations to place there
    node_allocation: dict[str, list[Allocation]] = field(default_factory=dict)
    # node_id -> allocations to stop there (desired_status and description already set)
    node_update: dict[str, list[Allocation]] = field(default_factory=dict)
    # task group -> why some allocations could not be placed
    failed_tg_allocs: dict[str, PlacementFailure] = field(default_factory=dict)

    def is_noop(self) -> bool:
        return not self.node_allocation and not self.node_update

    def placements(self) -> int:
        return sum(len(v) for v in self.node_allocation.values())

    def append_alloc(self, alloc: Allocation) -> None:
        self.node_allocation.setdefault(alloc.node_id, []).append(alloc)

    def append_stop(self, alloc: Allocation) -> None:
        self.node_update.setdefault(alloc.node_id, []).append(alloc)


@dataclass(slots=True)
class PlanResult:
    """What the applier committed of a plan; ``refused`` node ids did not fit any more."""

    index: int = 0
    node_allocation: dict[str, list[Allocation]] = field(default_factory=dict)
    node_update: dict[str, list[Allocation]] = field(default_factory=dict)
    refused_nodes: list[str] = field(default_factory=list)

    def fully_committed(self) -> bool:
        return not self.refused_nodes
