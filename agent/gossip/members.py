"""The members one member knows: their records, the probe round's order, and random picks.

memberlist's ``nodes``/``nodeMap``: a record per member by name, and the same records in the
order probes visit them. SWIM's randomized round-robin: the order is shuffled at the start of each
round, and a member learned of mid-round goes to a random place in it (appended then swapped, so
no member is always probed last, which would stretch its detection time). A round's start is
also when members dead or left for long enough are dropped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from shoal.agent.gossip.messages import ALIVE, DEAD, LEFT, SUSPECT, Addr, MemberState

EXACT_PICK_MAX = 64  # members: up to this many, random picks look at every candidate


@dataclass(slots=True, frozen=True)
class Member:
    """One member as this member sees it; ``state`` is alive, suspect, dead or left, since
    ``state_change`` (on the caller's clock)."""

    name: str
    addr: Addr
    meta: dict[str, str]
    incarnation: int
    state: str
    state_change: float


@dataclass(slots=True)
class Node:
    """A member's record. ``meta`` dicts are shared with messages and replaced, never mutated."""

    name: str
    addr: Addr
    meta: dict[str, str]
    incarnation: int
    state: str
    state_change: float

    def snapshot(self) -> Member:
        return Member(self.name, self.addr, dict(self.meta), self.incarnation, self.state, self.state_change)


class MemberTable:
    """Every member known, ``me`` included, with the probe order over them."""

    __slots__ = ("me", "nodes", "_order", "_index", "_rng")

    def __init__(self, me: Node, rng: random.Random):
        self.me = me
        self.nodes: dict[str, Node] = {me.name: me}
        self._order: list[Node] = [me]
        self._index = 0  # the next place in the order to probe
        self._rng = rng

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, node: Node) -> None:
        self.nodes[node.name] = node
        order = self._order
        order.append(node)
        i = self._rng.randrange(len(order))
        order[i], order[-1] = order[-1], order[i]

    def next_target(self, now: float, forget_after: float) -> Node | None:
        """The next alive or suspect member of the round, None when there is none. A new round
        first drops the members dead or left for longer than ``forget_after``, then reshuffles."""
        for _ in range(len(self._order) + 1):
            if self._index >= len(self._order):
                self._new_round(now, forget_after)
            node = self._order[self._index]
            self._index += 1
            if node is not self.me and node.state in (ALIVE, SUSPECT):
                return node
        return None

    def _new_round(self, now: float, forget_after: float) -> None:
        keep = []
        for node in self._order:
            if node is not self.me and node.state in (DEAD, LEFT) and now - node.state_change > forget_after:
                del self.nodes[node.name]
            else:
                keep.append(node)
        self._rng.shuffle(keep)
        self._order = keep
        self._index = 0

    def random(self, k: int, exclude: Callable[[Node], bool]) -> list[Node]:
        """Up to ``k`` distinct random members not excluded: among all candidates in a small
        cluster, else by at most 3N random draws (memberlist's ``kRandomNodes``: cheap for a
        large N, where the draws miss no candidate worth having)."""
        order, rand = self._order, self._rng.random
        n = len(order)
        if n <= EXACT_PICK_MAX:
            candidates = [node for node in order if not exclude(node)]
            return self._rng.sample(candidates, min(k, len(candidates)))
        picked: list[Node] = []
        for _ in range(3 * n):
            if len(picked) == k:
                break
            node = order[int(rand() * n)]
            if not exclude(node) and node not in picked:
                picked.append(node)
        return picked

    def states(self) -> tuple[MemberState, ...]:
        """Every record as a push-pull carries it."""
        return tuple(MemberState(n.name, n.addr, n.meta, n.incarnation, n.state) for n in self.nodes.values())

    def snapshots(self) -> list[Member]:
        return sorted((n.snapshot() for n in self.nodes.values()), key=lambda m: m.name)
