"""The evaluation broker (leader only): hands pending evaluations to scheduler workers.

At most one evaluation per job is out at a time (the next waits behind it),
as in Nomad, so two workers never plan the same job at once. An evaluation
that is not acknowledged (worker failed) goes back in the queue, up to a
delivery limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import structlog

from shoal.jobs.structs import Evaluation

log = structlog.get_logger("shoal.server.broker")

DELIVERY_LIMIT = 3


@dataclass(slots=True)
class _JobQueue:
    inflight: str = ""  # eval id out with a worker
    waiting: deque[Evaluation] = field(default_factory=deque)


class EvalBroker:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[Evaluation] = asyncio.Queue()
        self._jobs: dict[tuple[str, str], _JobQueue] = {}
        self._known: set[str] = set()
        self._deliveries: dict[str, int] = {}
        self._delayed: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return self._ready.qsize() + sum(len(q.waiting) for q in self._jobs.values())

    def enqueue(self, ev: Evaluation) -> None:
        if ev.id in self._known:
            return
        self._known.add(ev.id)
        delay = ev.wait_until - time.time()
        if delay > 0:  # a delayed evaluation (e.g. a reschedule): hold it until its time
            self._delayed[ev.id] = asyncio.get_running_loop().call_later(delay, self._release, ev)
            return
        self._release(ev)

    def _release(self, ev: Evaluation) -> None:
        self._delayed.pop(ev.id, None)
        q = self._jobs.setdefault((ev.namespace, ev.job_id), _JobQueue())
        if q.inflight or q.waiting:
            q.waiting.append(ev)
        else:
            q.inflight = ev.id
            self._ready.put_nowait(ev)

    async def dequeue(self) -> Evaluation:
        ev = await self._ready.get()
        self._deliveries[ev.id] = self._deliveries.get(ev.id, 0) + 1
        return ev

    def ack(self, ev: Evaluation) -> None:
        """The evaluation is done (its outcome committed): release the job's next one."""
        self._known.discard(ev.id)
        self._deliveries.pop(ev.id, None)
        key = (ev.namespace, ev.job_id)
        q = self._jobs.get(key)
        if q is None:
            return
        q.inflight = ""
        if q.waiting:
            nxt = q.waiting.popleft()
            q.inflight = nxt.id
            self._ready.put_nowait(nxt)
        else:
            del self._jobs[key]

    def nack(self, ev: Evaluation) -> bool:
        """The worker failed: redeliver unless the limit is reached (then the caller fails it)."""
        if self._deliveries.get(ev.id, 0) >= DELIVERY_LIMIT:
            return False
        self._ready.put_nowait(ev)
        return True

    def clear(self) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._ready = asyncio.Queue()
        self._jobs.clear()
        self._known.clear()
        self._deliveries.clear()
