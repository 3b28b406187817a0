"""The scheduler's usage index on a server, kept current by the FSM.

Workers plan on :meth:`UsageIndexer.state`: a state snapshot and a copy of the
:class:`~shoal.scheduler.usage.UsageIndex` taken under the store's lock, so
both stand at the same Raft index. The index answers per-node usage without
walking allocations and orders nodes by free capacity (best-fit packing whose
cost does not grow with the cluster).
"""

from __future__ import annotations

from shoal.raft.change import Change
from shoal.raft.state import StateSnapshot, StateStore
from shoal.scheduler.usage import IndexedState, UsageIndex


class UsageIndexer:
    """An FSM indexer (see ``FSM.add_indexer``)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.index = UsageIndex()

    def changed(self, changes: list[Change]) -> None:
        index = self.index
        for c in changes:
            if c.topic == "Allocation":
                if c.obj is not None:
                    index.upsert(c.obj)
                else:
                    index.delete(c.key)
            elif c.topic == "Node":
                if c.obj is not None:
                    index.put_node(c.obj)
                else:
                    index.remove_node(c.key)

    def rebuild(self, snapshot: StateSnapshot) -> None:
        self.index = UsageIndex(snapshot.nodes(), snapshot.allocs())

    def state(self) -> IndexedState[StateSnapshot]:
        """A snapshot and the index as of the same Raft index, for one scheduling pass."""
        with self.store.lock:
            return IndexedState(self.store.snapshot(), self.index.view())
