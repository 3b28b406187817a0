"""A deadline on a future, for hot paths: one timer handle instead of an ``asyncio.timeout`` scope.

``asyncio.timeout`` costs a context manager, a reschedule and task bookkeeping per use; on the
write path (every RPC call, every Raft write) that was measurable. Here the future itself fails
with ``TimeoutError`` when its time is up, unless it was settled first.
"""

from __future__ import annotations

import asyncio


def fail_after(fut: asyncio.Future, seconds: float) -> asyncio.TimerHandle:
    """Make ``fut`` fail with ``TimeoutError`` in ``seconds`` unless settled by then.
    Cancel the returned handle once the future is settled."""
    return fut.get_loop().call_later(seconds, _expire, fut)


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
