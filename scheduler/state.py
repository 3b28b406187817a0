"""What the scheduler may read of the cluster state: two small, read-only protocols.

:class:`StateReader` is the records: the server's state snapshot
(``raft.state.StateSnapshot``) implements it. :class:`SchedulerState` is what
a scheduler run reads: those records and the :class:`UsageIndex` kept with
them, if any. ``scheduler.usage.IndexedState`` pairs a snapshot with its index
(what a server's worker plans on); tests implement both with plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Node

if TYPE_CHECKING:
    from shoal.scheduler.usage import UsageIndex


class StateReader(Protocol):
    def job(self, namespace: str, job_id: str) -> Job | None: ...

    def job_version(self, namespace: str, job_id: str, version: int) -> Job | None:
        """An older (or the current) version of a job: in-place updates compare against it."""
        ...

    def nodes(self) -> Iterable[Node]: ...

    def node(self, node_id: str) -> Node | None: ...

    def allocs_by_job(self, namespace: str, job_id: str) -> list[Allocation]: ...

    def allocs_by_node(self, node_id: str) -> list[Allocation]: ...


class SchedulerState(StateReader, Protocol):
    def usage_index(self) -> UsageIndex | None:
        """Per-node usage and the nodes by free capacity, at the records' index; None when the
        state keeps no index (tallies are then summed from ``allocs_by_node``, nodes walked in ring order)."""
        ...
