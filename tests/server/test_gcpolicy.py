"""The servers' GC policy, in a process of its own (it is process-wide)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import gc
import weakref
from shoal.gcpolicy import freeze_long_lived_objects

freeze_long_lived_objects()
freeze_long_lived_objects()  # idempotent
assert gc.get_threshold() == (2000, 2, 10), gc.get_threshold()
state = [[i] for i in range(100_000)]  # long-lived (lists are always tracked)
gc.collect(1)
frozen = gc.get_freeze_count()
assert frozen >= 100_000, frozen  # survivors of a middle collection are frozen: never scanned again
assert sum(len(gc.get_objects(g)) for g in range(3)) < 1000

class Node:
    pass

refs = []
for _ in range(1000):  # young cyclic garbage is still collected
    a, b = Node(), Node()
    a.other, b.other = b, a
    refs.append(weakref.ref(a))
del a, b
gc.collect(0)
alive = sum(r() is not None for r in refs)
# the price of the policy: a cycle that was alive when a middle collection froze it stays
assert alive <= 10, alive
print("ok", frozen, alive)
"""


def test_long_lived_objects_are_frozen_and_young_garbage_is_still_collected():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok")
