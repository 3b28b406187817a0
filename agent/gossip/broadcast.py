"""The queue of membership updates a member still has to gossip, each sent a bounded number of times.

memberlist's ``TransmitLimitedQueue``: every outgoing UDP packet picks the updates sent the fewest
times so far, and an update is dropped once sent ``limit`` times, ``retransmit_limit(mult, n)`` =
``mult * ceil(log10(n + 1))`` for ``n`` members: enough for an epidemic to reach every member with
high probability despite loss, and no more. A newer update about a member replaces the one queued
about it (updates are keyed by the member's name), so a refutation never travels behind the
suspicion it answers.

A packet takes as many updates as fit in its free bytes (``size_hint``), as memberlist fills its
UDP buffer. One change from memberlist: updates are urgent or not. Suspicions, deaths and refutations decide
whether a member is declared dead, within a suspicion timeout; news of a member joining can wait.
When a thousand members join at once every member has a thousand joins to pass on, a packet
carries only so many, and a suspicion queued behind them (or the refutation answering it) would
wait several seconds at each hop: long enough for a live member to be declared dead (measured in
tests/agent/gossip_sim.py). So urgent updates go first, and the others still get a quarter of
every packet, so no flood of suspicions can starve joins for good. Among equals, the updates sent
the fewest times go first, the oldest first.

Updates wait in one FIFO per tier and transmit count, so queueing, replacing and taking cost O(1)
per update.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from shoal.agent.gossip.messages import Broadcast, size_hint

MIN_UPDATE = 45  # bytes: no update is smaller (size_hint), so less room ends a packet


def retransmit_limit(mult: int, n: int) -> int:
    """How many times each update is sent, for ``n`` members (memberlist's ``retransmitLimit``)."""
    return mult * math.ceil(math.log10(n + 1))


class _Tier:
    """Updates by member name, in one FIFO per transmit count.

    An entry is ``[name, update, transmits, size]``; a replaced update is only marked (its update
    set to None) and skipped when reached, so nothing is searched for."""

    __slots__ = ("buckets", "entries")

    def __init__(self) -> None:
        self.buckets: list[deque[list[Any]]] = [deque()]  # [transmits] -> entries, oldest first
        self.entries: dict[str, list[Any]] = {}  # name -> its live entry

    def discard(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            entry[1] = None

    def add(self, msg: Broadcast, size: int) -> None:
        entry = [msg.name, msg, 0, size]
        self.entries[msg.name] = entry
        self.buckets[0].append(entry)

    def select(self, budget: int, limit: int, picked: list[list[Any]]) -> int:
        """Move to ``picked``, in order, the entries that fit in ``budget`` bytes (up to the
        first that does not: it goes first in a packet with more room); the bytes left. Until
        ``commit`` they are in no bucket, so a second call for the same packet picks others."""
        for sent, bucket in enumerate(self.buckets):
            while bucket:
                entry = bucket[0]
                if entry[1] is None:  # replaced
                    bucket.popleft()
                elif sent >= limit:  # the cluster shrank: sent often enough
                    bucket.popleft()
                    del self.entries[entry[0]]
                elif entry[3] > budget:
                    return budget
                else:
                    bucket.popleft()
                    budget -= entry[3]
                    picked.append(entry)
        return budget

    def commit(self, picked: list[list[Any]], limit: int, out: list[Broadcast]) -> None:
        """Count the ``picked`` entries as sent once more, appending their updates to ``out``."""
        buckets = self.buckets
        for entry in picked:
            out.append(entry[1])
            sent = entry[2] = entry[2] + 1
            if sent >= limit:
                del self.entries[entry[0]]
                continue
            if sent == len(buckets):
                buckets.append(deque())
            buckets[sent].append(entry)


class BroadcastQueue:
    """Pending updates, urgent ones first, each sent at most ``limit`` times.

    ``max_size``: the bytes of the largest packet; an update that could never fit in one is not
    queued (it travels by push-pull only)."""

    __slots__ = ("_urgent", "_other", "max_size")

    def __init__(self, max_size: int) -> None:
        self._urgent = _Tier()
        self._other = _Tier()
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self._urgent.entries) + len(self._other.entries)

    def push(self, msg: Broadcast, urgent: bool = True) -> None:
        """Queue ``msg``, replacing any update still queued about the same member. Not urgent:
        news of a member the sender did not know (a join)."""
        self._urgent.discard(msg.name)
        self._other.discard(msg.name)
        size = size_hint(msg)
        if size <= self.max_size:
            (self._urgent if urgent else self._other).add(msg, size)

    def take(self, budget: int, limit: int) -> list[Broadcast]:
        """Updates for a packet with ``budget`` bytes free, each counted as sent once more; those
        now sent ``limit`` times (or more, after the cluster shrank) leave the queue. While
        updates of both kinds wait, a quarter of the budget is kept for the non-urgent ones."""
        urgent, other = self._urgent, self._other
        kept = budget // 4 if other.entries else 0
        picked_urgent: list[list[Any]] = []
        picked_other: list[list[Any]] = []
        budget = urgent.select(budget - kept, limit, picked_urgent) + kept
        if other.entries:
            budget = other.select(budget, limit, picked_other)
            if budget >= MIN_UPDATE:  # room the others left unused
                urgent.select(budget, limit, picked_urgent)
        out: list[Broadcast] = []
        urgent.commit(picked_urgent, limit, out)
        other.commit(picked_other, limit, out)
        return out
