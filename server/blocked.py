"""Blocked evaluations (a leader manager): re-run when capacity may have appeared.

An evaluation that could not place everything is committed as ``blocked``
(one per job, see ``scheduler/plan.py``). This manager knows them all (rebuilt
from state on each leadership gain) and, when committed changes may have added
capacity (a node became schedulable, an allocation stopped), turns them back to
``pending`` with one write, coalesced over ``UNBLOCK_DELAY`` so that a burst of
changes unblocks them once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from shoal.jobs.structs import EVAL_BLOCKED, EVAL_PENDING, Evaluation
from shoal.raft import ops
from shoal.raft.change import Change
from shoal.raft.node import RaftNode
from shoal.raft.state import StateSnapshot
from shoal.server.leader_manager import LeaderContext, LeaderManager, Tasks

UNBLOCK_DELAY = 0.2  # seconds: capacity changes within this window unblock evaluations once


def capacity_changed(changes: list[Change]) -> bool:
    """Whether any change may have made room: a node (re)registered, ready or eligible, or an
    allocation that reached a terminal state."""
    for c in changes:
        if c.obj is None:
            continue
        if c.topic == "Node" and c.obj.schedulable():
            return True
        if c.topic == "Allocation" and c.obj.terminal():
            return True
    return False


def unblocked(blocked: list[Evaluation], now: float) -> list[Evaluation]:
    """The records that put ``blocked`` evaluations back in the queue."""
    return [dataclasses.replace(e, status=EVAL_PENDING, status_description="capacity changed", modify_time=now)
            for e in blocked]


class BlockedEvals(LeaderManager):
    name = "blocked evaluations"

    def __init__(self, delay: float = UNBLOCK_DELAY) -> None:
        self.delay = delay
        self._raft: RaftNode | None = None
        self._blocked: dict[str, Evaluation] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._tasks = Tasks(self.name)

    def evals(self) -> list[Evaluation]:
        return list(self._blocked.values())

    @property
    def busy(self) -> bool:
        """An unblock is scheduled or being written."""
        return self._handle is not None or len(self._tasks) > 0

    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        self._raft = ctx.raft
        self._blocked = {e.id: e for e in snap.evals() if e.status == EVAL_BLOCKED}

    def on_changes(self, changes: list[Change]) -> None:
        for c in changes:
            if c.topic != "Evaluation":
                continue
            if c.obj is not None and c.obj.status == EVAL_BLOCKED:
                self._blocked[c.key] = c.obj
            else:
                self._blocked.pop(c.key, None)
        if self._blocked and self._handle is None and capacity_changed(changes):
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._unblock)

    def _unblock(self) -> None:
        self._handle = None
        if self._raft is None or not self._blocked:
            return
        evals = unblocked(list(self._blocked.values()), time.time())
        self._blocked.clear()
        self._tasks.spawn(self._raft.submit(ops.EVAL_UPSERT, ops.EvalUpsert(evals=evals)), name="shoal-unblock")

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._tasks.cancel()
        self._raft = None
        self._blocked.clear()
