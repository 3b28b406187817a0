"""Lifeguard's suspicion timeouts: long for a lone accuser, shrinking as independent ones confirm.

A member suspected by one prober may only be slow to answer that prober, or the prober may be the
slow one; a member that several members independently fail to reach is much more likely dead.
So a suspicion starts at the maximum timeout and each new accuser (a ``Suspect`` with a ``from_``
not seen yet) brings the deadline closer, log-scaled between ``max_timeout`` (no confirmation)
and ``min_timeout`` (``k`` confirmations), as memberlist's ``suspicion.go``::

    timeout(n) = max(min, max - log(n + 1) / log(k + 1) * (max - min)),  measured from the start

``k`` is how many confirmations are expected before the minimum applies (``suspicion_mult - 2``,
0 in a cluster too small to give that many, or in plain SWIM: then the timeout is ``min``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    """The minimum suspicion timeout for ``n`` members: ``mult * max(1, log10(n)) * interval``
    (memberlist's ``suspicionTimeout``: the time an epidemic needs to reach everyone grows as
    log N, and the suspect needs that long to hear of its suspicion and refute it)."""
    return mult * max(1.0, math.log10(max(1, n))) * interval


@dataclass(slots=True)
class Suspicion:
    """The suspicion of one member: its accusers so far and when it turns into death."""

    start: float
    k: int  # confirmations expected before the timeout reaches min_timeout
    min_timeout: float
    max_timeout: float
    accusers: set[str]  # the first accuser, then each confirmation
    deadline: float

    @classmethod
    def begin(cls, accuser: str, k: int, min_timeout: float, max_timeout: float, now: float) -> Suspicion:
        """A new suspicion raised by ``accuser``; the deadline is ``max_timeout`` away, or
        ``min_timeout`` when no confirmation is expected (``k`` < 1)."""
        timeout = max_timeout if k >= 1 else min_timeout
        return cls(now, k, min_timeout, max_timeout, {accuser}, now + timeout)

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser`` as an independent confirmation and move the deadline closer.

        False when it is not new (already counted, or ``k`` confirmations reached): then the
        ``Suspect`` carrying it need not be gossiped again."""
        n = self.confirmations
        if n >= self.k or accuser in self.accusers:
            return False
        self.accusers.add(accuser)
        n += 1
        span = self.max_timeout - self.min_timeout
        timeout = max(self.min_timeout, self.max_timeout - math.log(n + 1) / math.log(self.k + 1) * span)
        self.deadline = self.start + timeout
        return True
