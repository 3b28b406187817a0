"""What a leader manager is: one concern that runs only while this server leads.

Modelled on Nomad's ``nomad/leader.go`` (``establishLeadership`` / ``revokeLeadership``
enable and disable a list of subsystems). On gaining leadership, after a Raft barrier
(everything earlier leaders committed is applied here), :class:`~shoal.server.leader.LeaderDuties`
starts each manager in order with one snapshot of the replicated state to rebuild from,
then hands every manager each batch of changes committed after that snapshot, in order;
on losing leadership it stops them in reverse order. A manager keeps nothing across
terms: all it knows it rebuilds from the snapshot, so work in flight when a leader dies
is picked up by the next one.

Contract:

* ``start(ctx, snap)``: rebuild from ``snap`` and begin work. Called once per term, before
  any ``on_changes`` of that term; a manager may rely on the managers before it in the
  list having started (the eval broker's workers on the plan applier).
* ``on_changes(changes)``: on the event loop, for each committed batch with a Raft index
  above the snapshot's, once the whole list has started. Decide and return at once:
  anything slow or that waits (a Raft write) goes in a task of the manager's :class:`Tasks`.
* ``stop()``: cancel every timer and task of the manager and drop what it rebuilt; when
  it returns nothing of it runs. Safe to call on a manager that never started.

A new manager (deployment watcher, service catalog, node drain, periodic dispatch, GC) is
a new file beside its peers with one such class, and one line in ``LeaderDuties``' list.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from shoal.raft.change import Change
from shoal.raft.node import RaftNode
from shoal.raft.state import StateSnapshot, StateStore
from shoal.scheduler import SchedulerConfig
from shoal.server.usage import UsageIndexer
from shoal.server.watch import StateWatch

log = structlog.get_logger("shoal.server.leader")


@dataclass(frozen=True, slots=True)
class LeaderContext:
    """What every manager may use while leading."""

    store: StateStore  # the replicated state (read with ``store.snapshot()``; only the FSM writes)
    raft: RaftNode  # where writes go (``raft.submit``)
    watch: StateWatch  # to wait for state changes (``watch.wait``); changes reach managers by ``on_changes``
    usage: UsageIndexer  # the scheduler's view: a snapshot and usage index at one Raft index
    scheduler: SchedulerConfig


class LeaderManager(abc.ABC):
    name: ClassVar[str]

    @abc.abstractmethod
    async def start(self, ctx: LeaderContext, snap: StateSnapshot) -> None:
        """Leadership gained: rebuild from ``snap`` and begin work."""

    def on_changes(self, changes: list[Change]) -> None:
        """Changes committed after the snapshot ``start`` was given (a manager that needs none keeps this)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leadership lost: stop every timer and task, forget what was rebuilt."""


class Tasks:
    """The tasks one manager runs while leading; ``cancel`` ends them all and waits until they have."""

    __slots__ = ("_owner", "_tasks")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("leader task failed", manager=self._owner, task=task.get_name(), error=repr(task.exception()))

    async def cancel(self) -> None:
        while self._tasks:  # cancel until every task has really finished (one may catch a cancellation)
            for t in self._tasks:
                t.cancel()
            done, _ = await asyncio.wait(list(self._tasks), timeout=1.0)
            self._tasks -= done
