"""What the scheduler may read of the cluster state: a small, read-only protocol.

The server's state snapshot implements it; tests implement it with plain dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Node


class StateReader(Protocol):
    def job(self, namespace: str, job_id: str) -> Job | None: ...

    def nodes(self) -> Iterable[Node]: ...

    def node(self, node_id: str) -> Node | None: ...

    def allocs_by_job(self, namespace: str, job_id: str) -> list[Allocation]: ...

    def allocs_by_node(self, node_id: str) -> list[Allocation]: ...
