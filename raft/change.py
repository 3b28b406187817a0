"""One committed change of the state: what blocking queries, the event stream, the leader's
managers and derived indexes are told of, after the FSM applied an entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class Change:
    """One committed change, for blocking queries and the event stream."""

    index: int
    topic: str  # Job | Evaluation | Allocation | Node | Network | Server | Service
    type: str  # e.g. JobRegistered, AllocationUpdated
    key: str
    obj: Any = None
