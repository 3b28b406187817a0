"""Garbage collection for a process that holds the cluster state (a server).

CPython's cycle collector scans every object of the generations it collects. A server keeps
hundreds of thousands to millions of long-lived objects (jobs, allocations, evaluations), and
they all pass through the older generations: under a sustained write load those collections
stopped the whole process for 0.25–0.85 s each (measured with ``bench/raft_write.py``: two such
stalls in 8 s made the p99 commit latency 330 ms).

The policy: the young generation is collected every 2,000 allocations and the middle one every
second young collection, so each collection scans at most a few thousand objects (a few
milliseconds); whatever survives a collection of the middle generation is frozen, that is moved
to the permanent generation, which no collection scans. Collections then only ever look at young
objects, and cost the same however large the state grows. With this, the same bench ran at
about 2,000 writes/s with a p99 of 50–55 ms.

The price: a reference cycle among frozen objects is never reclaimed. Shoal's state objects hold
no cycles, and under sustained writes the middle-generation collections found next to no cyclic
garbage (none in most, a few hundred objects once at start-up), so this leaks next to nothing. Only the process entry point applies the policy,
never a library import (a test process must keep collecting its own cycles).
"""

from __future__ import annotations

import gc
from typing import Any

YOUNG_THRESHOLD = 2000


def freeze_long_lived_objects() -> None:
    """Apply the policy to this process (idempotent)."""
    gc.set_threshold(YOUNG_THRESHOLD, 2, 10)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    # Right after a collection of generation 1 or 2, the younger generations are empty and every
    # survivor sits in the oldest one: freezing now moves exactly the long-lived objects.
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()
