"""Wake whoever waits on state changes: blocking queries and the leader's evaluation feed.

The FSM applies on the Raft thread; ``on_apply`` hops to the event loop and
resolves every waiter whose topics changed. No one polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from shoal.raft.fsm import ApplyResult, Change

TOPICS = ("Job", "Evaluation", "Allocation", "Node")


class StateWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._waiters: list[tuple[frozenset[str], asyncio.Future[int]]] = []
        self._subscribers: list[Callable[[list[Change]], None]] = []
        self._index_waiters: list[tuple[int, asyncio.Future[int]]] = []
        self.index = 0

    # called on the Raft thread
    def on_apply(self, result: ApplyResult) -> None:
        self._loop.call_soon_threadsafe(self._deliver, result.index, result.changes)

    def subscribe(self, fn: Callable[[list[Change]], None]) -> Callable[[], None]:
        """Call ``fn`` on the event loop with each batch of committed changes."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def _deliver(self, index: int, changes: list[Change]) -> None:
        self.index = max(self.index, index)
        if self._index_waiters:
            keep = []
            for want, fut in self._index_waiters:
                if fut.done():
                    continue
                if self.index >= want:
                    fut.set_result(self.index)
                else:
                    keep.append((want, fut))
            self._index_waiters = keep
        topics = {c.topic for c in changes}
        if topics:
            keep = []
            for want, fut in self._waiters:
                if fut.done():
                    continue
                if want & topics:
                    fut.set_result(index)
                else:
                    keep.append((want, fut))
            self._waiters = keep
            for fn in list(self._subscribers):
                fn(changes)

    async def wait(self, topics: Iterable[str], timeout: float) -> bool:
        """Wait until one of ``topics`` changes; False on timeout."""
        fut: asyncio.Future[int] = self._loop.create_future()
        self._waiters.append((frozenset(topics), fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    async def wait_index(self, index: int, timeout: float) -> bool:
        """Wait until this server has applied ``index`` (read-your-writes after a forwarded write)."""
        if self.index >= index:
            return True
        fut: asyncio.Future[int] = self._loop.create_future()
        self._index_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
