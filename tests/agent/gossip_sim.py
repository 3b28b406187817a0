"""A deterministic in-process network for the SWIM core: virtual clock, seeded loss and latency.

The real ``Swim`` objects, driven by one priority queue of ``(time, order, kind, ...)`` events:
each member's ``tick`` at its ``next_deadline``, each UDP packet's messages through ``receive``
after the link's latency (lost with probability ``loss``, independently), each push-pull through
``receive_stream`` and its reply back (streams are reliable, with the same latency). A "slow"
member (an overloaded host) handles every packet and stream it receives ``slow_delay`` seconds
late, so its answers come late; its timers still fire on time. A killed member neither receives
nor sends anything from then on, packets already in flight from it included.

Everything random comes from ``seed``: the network's own ``random.Random`` (loss, slowness, join
times) and one per member, so a run is reproducible event for event.

``run_detection`` and ``run_slow_members`` are the two experiments of issue 19's acceptance
(tests/agent/test_swim_sim.py asserts on them, bench/gossip_sim.py prints them at full size).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import time
from dataclasses import dataclass, field, replace

from shoal.agent.gossip.broadcast import retransmit_limit
from shoal.agent.gossip.messages import ALIVE, Addr, PushPull
from shoal.agent.gossip.suspicion import suspicion_timeout
from shoal.agent.gossip.swim import Event, ReplyStream, SendStream, SendUdp, Swim, SwimConfig

_TICK, _START, _UDP, _STREAM, _REPLY = range(5)
FIRST_PROBE_PERIODS = 10  # the detection bound's allowance for someone to probe the victim


@dataclass(slots=True)
class SimConfig:
    """One simulated cluster: its size, network and protocol settings."""

    members: int
    loss: float = 0.05
    seed: int = 1
    latency: tuple[float, float] = (0.0001, 0.001)  # seconds, fixed per ordered pair of members
    slow_fraction: float = 0.0
    slow_delay: tuple[float, float] = (0.6, 1.0)  # seconds added to everything a slow member receives
    join_spread: float = 2.0  # members start (and join through member 0) over this many seconds
    swim: SwimConfig = field(default_factory=SwimConfig)


class Network:
    """The members and the packets between them."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        n = cfg.members
        self.names = [f"node-{i:04d}" for i in range(n)]
        self.addrs: list[Addr] = [(f"10.{i >> 8 & 255}.{i & 255}.1", 7946) for i in range(n)]
        self.index = {addr: i for i, addr in enumerate(self.addrs)}
        self.by_name = {name: i for i, name in enumerate(self.names)}
        self.swims: list[Swim | None] = [None] * n
        self.up = [False] * n
        self.slow = [False] * n
        for i in self.rng.sample(range(1, n), round(cfg.slow_fraction * n)):
            self.slow[i] = True
        self.now = 0.0
        self._heap: list[tuple] = []
        self._order = 0
        self._scheduled = [math.inf] * n  # each member's earliest queued tick
        # What happened: packets and messages sent, membership views from the events.
        self.packets = 0
        self.messages = 0
        self.streams = 0
        self.known = [0] * n  # members each one knows and does not hold dead or left (itself included)
        self.heard = [bytearray(n) for _ in range(n)]  # [observer][member]: ever heard of it
        self.heard_count = [0] * n
        self.killed: dict[int, float] = {}  # member -> when
        self.deaths: dict[tuple[int, int], float] = {}  # (observer, member) -> first dead/leave event
        self.false_positives: list[tuple[float, str, str]] = []  # (when, observer, live member declared dead)
        self.suspicions: set[tuple[str, int]] = set()  # (member, incarnation) suspected, members not killed

    # Setting up and driving.

    def start(self, i: int, at: float, seeds: list[int]) -> None:
        self._push(at, _START, i, seeds, None)

    def kill(self, i: int) -> None:
        self.up[i] = False
        self.killed[i] = self.now

    def run(self, until: float) -> None:
        """Deliver every event up to ``until`` (the clock then reads ``until``)."""
        heap, pop, up, swims = self._heap, heapq.heappop, self.up, self.swims
        while heap and heap[0][0] <= until:
            t, _, kind, j, a, b = pop(heap)
            self.now = t
            if kind == _START:
                self._boot(j, t, a)
                continue
            if not up[j]:
                continue
            sw = swims[j]
            peer = None
            if kind == _TICK:
                if t != self._scheduled[j]:
                    continue  # superseded by an earlier deadline
                self._scheduled[j] = math.inf
                outs = sw.tick(t)
            elif kind == _UDP:
                if not up[a]:
                    continue
                src = self.addrs[a]
                outs = []
                for msg in b:
                    outs += sw.receive(src, msg, t)
            else:
                if not up[a]:
                    continue
                outs = sw.receive_stream(b, t)
                peer = a
            if outs:
                self._dispatch(j, outs, t, peer)
            self._schedule(j, sw, t)
        self.now = until

    def _boot(self, i: int, t: float, seeds: list[int]) -> None:
        cfg = self.cfg
        sw = Swim(self.names[i], self.addrs[i], {"node_id": f"id-{i}", "vtep": self.addrs[i][0]}, cfg.swim,
                  random.Random(cfg.seed * 1_000_003 + i), t)
        self.swims[i], self.up[i] = sw, True
        self.known[i] = 1
        self.heard[i][i] = 1
        self.heard_count[i] = 1
        self._dispatch(i, sw.join([self.addrs[s] for s in seeds], t), t, None)
        self._schedule(i, sw, t)

    def _schedule(self, j: int, sw: Swim, t: float) -> None:
        deadline = max(sw.next_deadline(), t)
        if deadline < self._scheduled[j]:
            self._scheduled[j] = deadline
            self._push(deadline, _TICK, j, None, None)

    def _push(self, t: float, kind: int, j: int, a: object, b: object) -> None:
        self._order += 1
        heapq.heappush(self._heap, (t, self._order, kind, j, a, b))

    def _delay(self, i: int, j: int) -> float:
        lo, hi = self.cfg.latency
        d = lo + (hi - lo) * ((i * 2654435761 + j * 40503) % 1000) / 1000
        if self.slow[j]:
            d += self.rng.uniform(*self.cfg.slow_delay)
        return d

    def _dispatch(self, i: int, outs: list, t: float, peer: int | None) -> None:
        up, index, loss, rng = self.up, self.index, self.cfg.loss, self.rng
        for o in outs:
            kind = type(o)
            if kind is SendUdp:
                self.packets += 1
                self.messages += len(o.messages)
                j = index[o.addr]
                if up[j] and rng.random() >= loss:
                    self._push(t + self._delay(i, j), _UDP, j, i, o.messages)
            elif kind is Event:
                self._observe(i, o, t)
            elif kind is SendStream:
                self.streams += 1
                j = index[o.addr]
                if up[j]:
                    self._push(t + self._delay(i, j), _STREAM, j, i, o.message)
            elif kind is ReplyStream:
                assert peer is not None and isinstance(o.message, PushPull)
                self._push(t + self._delay(i, peer), _REPLY, peer, i, o.message)

    def _observe(self, i: int, ev: Event, t: float) -> None:
        kind = ev.kind
        if kind == "join":
            self.known[i] += 1
            j = self.by_name[ev.member.name]
            if not self.heard[i][j]:
                self.heard[i][j] = 1
                self.heard_count[i] += 1
        elif kind in ("dead", "leave"):
            self.known[i] -= 1
            j = self.by_name[ev.member.name]
            self.deaths.setdefault((i, j), t)
            if j not in self.killed:
                self.false_positives.append((t, self.names[i], ev.member.name))
        elif kind == "suspect" and self.by_name[ev.member.name] not in self.killed:
            self.suspicions.add((ev.member.name, ev.member.incarnation))

    # Questions about the cluster.

    def live(self) -> list[int]:
        return [i for i, u in enumerate(self.up) if u]

    def everyone_knows_everyone(self) -> bool:
        """Every live member knows every other one (alive or suspect): cheap, from the events."""
        n = len(self.live())
        return all(self.known[i] == n for i in self.live())

    def everyone_heard_of_everyone(self) -> bool:
        """Every member has heard of every other one (whatever it believes about it now)."""
        return all(c == self.cfg.members for c in self.heard_count)

    def all_alive_everywhere(self) -> bool:
        """Every live member sees every live member alive (``Swim.members``, not the events)."""
        live = {self.names[i] for i in self.live()}
        for i in self.live():
            alive = {m.name for m in self.swims[i].members() if m.state == ALIVE}
            if alive != live:
                return False
        return True


def detection_bound(cfg: SwimConfig, n: int) -> float:
    """The longest a killed member may take to be declared dead by every other member.

    - Someone probes it within ``FIRST_PROBE_PERIODS`` probe intervals (each of the N - 1 others
      probes it in a given period with probability about 1/(N - 1): nobody does for 10 periods
      with probability about e**-10), and that probe fails at the end of its interval.
    - The suspicion reaches every member within one retransmit round (``retransmit_limit``
      gossip intervals, after which nobody sends it any more).
    - Each holder declares death when its own suspicion times out, at the latest after the
      maximum timeout (no confirmation at all; plain SWIM: the minimum).
    - A member that missed the suspicion hears of the death within one more retransmit round.
    """
    low = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
    high = cfg.suspicion_max_timeout_mult * low if cfg.lifeguard else low
    spread = retransmit_limit(cfg.retransmit_mult, n) * cfg.gossip_interval
    return (FIRST_PROBE_PERIODS + 1) * cfg.probe_interval + spread + high + spread


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def boot(cfg: SimConfig) -> Network:
    """Member 0 starts alone; every other one starts within ``join_spread`` and joins through it."""
    net = Network(cfg)
    net.start(0, 0.0, [])
    for i in range(1, cfg.members):
        net.start(i, net.rng.uniform(0.0, cfg.join_spread), [0])
    return net


def form(net: Network, all_alive: bool) -> float:
    """Run until every member has heard of every other one (``all_alive``: and now sees each one
    alive, by ``Swim.members``); the time that took. Joining a cold cluster of N members has every
    member gossip N joins (memberlist's way: what is new to a member it passes on), a packet
    carries ~14, and anti-entropy (push-pull) repairs what gossip missed: a minute at 1,000."""
    limit = 120.0 + net.cfg.members / 5
    while net.now < limit:
        net.run(net.now + 1.0)
        if net.now >= net.cfg.join_spread and net.everyone_heard_of_everyone():
            if not all_alive or (net.everyone_knows_everyone() and net.all_alive_everywhere()):
                return net.now
    raise AssertionError(f"not converged after {limit} s: {min(net.heard_count)} of {net.cfg.members} heard of")


def settle(net: Network) -> None:
    """Run until the joins are gossiped out (under one pending update a member on average),
    so what is measured next is the steady state."""
    live = net.live()
    while sum(net.swims[i].pending_broadcasts for i in live) >= len(live):
        net.run(net.now + 1.0)


@dataclass(slots=True)
class Detection:
    """What ``run_detection`` measured (times in seconds of virtual time, from the kill)."""

    members: int
    loss: float
    converge_s: float  # from the first member's start until every member sees every member alive
    detect_p50_s: float  # over the observers: when each declared the killed member dead
    detect_p99_s: float
    detect_max_s: float
    bound_s: float  # detection_bound
    undetected: int  # observers that never declared it dead within the bound
    false_positives: int  # dead declarations about live members, by anyone, since the start
    false_suspicions: int  # distinct (member, incarnation) suspicions of live members
    member_periods: int  # protocol periods observed from convergence on, summed over members
    messages_per_member_per_s: float  # UDP packets (and streams) sent, from the kill on
    updates_per_member_per_s: float  # messages in those packets: probes, acks, piggybacked updates
    wall_s: float

    def summary(self) -> dict[str, float | int]:
        return {"members": self.members, "loss": self.loss, "detect_p50_s": round(self.detect_p50_s, 2),
                "detect_p99_s": round(self.detect_p99_s, 2), "false_positives": self.false_positives,
                "messages_per_member_per_s": round(self.messages_per_member_per_s, 2)}


def run_detection(members: int, loss: float = 0.05, seed: int = 1, periods: int = 10_000,
                  swim: SwimConfig | None = None) -> Detection:
    """Form the cluster, kill one member, and run until every other member has declared it dead
    and at least ``periods`` protocol periods (summed over members) have passed since the
    cluster converged."""
    wall = time.monotonic()
    cfg = SimConfig(members=members, loss=loss, seed=seed, swim=swim or SwimConfig())
    net = boot(cfg)
    converged = form(net, all_alive=True)
    settle(net)
    victim = members // 2
    net.kill(victim)
    killed, packets, messages = net.now, net.packets + net.streams, net.messages
    bound = detection_bound(cfg.swim, members)
    observers = net.live()
    end = converged + periods * cfg.swim.probe_interval / len(observers)
    while net.now < killed + bound:
        net.run(net.now + 1.0)
        if net.now >= end and all((i, victim) in net.deaths for i in observers):
            break
    net.run(max(net.now, end))
    window = net.now - killed
    detect = [net.deaths[i, victim] - killed for i in observers if (i, victim) in net.deaths]
    return Detection(
        members=members, loss=loss, converge_s=converged,
        detect_p50_s=statistics.median(detect) if detect else math.inf,
        detect_p99_s=_quantile(detect, 0.99) if detect else math.inf,
        detect_max_s=max(detect, default=math.inf), bound_s=bound, undetected=len(observers) - len(detect),
        false_positives=len(net.false_positives), false_suspicions=len(net.suspicions),
        member_periods=int(len(observers) * (net.now - converged) / cfg.swim.probe_interval),
        messages_per_member_per_s=(net.packets + net.streams - packets) / len(observers) / window,
        updates_per_member_per_s=(net.messages - messages) / len(observers) / window,
        wall_s=time.monotonic() - wall,
    )


@dataclass(slots=True)
class SlowRun:
    """One side of the Lifeguard comparison: what was declared about live members."""

    lifeguard: bool
    false_positives: int  # dead declarations about healthy (not slow) members, by anyone
    false_positives_slow: int  # dead declarations about the slow members themselves
    false_suspicions: int  # distinct (member, incarnation) suspicions, of any live member
    member_periods: int
    messages_per_member_per_s: float


def run_slow_members(members: int, slow_delay: tuple[float, float], slow_fraction: float = 0.1,
                     loss: float = 0.05, seed: int = 1, periods: int = 10_000, lifeguard: bool = True) -> SlowRun:
    """A cluster with ``slow_fraction`` of its members slow, run until everyone has heard of
    everyone and then for ``periods`` protocol periods (summed over members); nobody is killed,
    so every death declared, from the start, is false."""
    cfg = SimConfig(members=members, loss=loss, seed=seed, slow_fraction=slow_fraction, slow_delay=slow_delay,
                    swim=replace(SwimConfig(), lifeguard=lifeguard))
    net = boot(cfg)
    start = form(net, all_alive=False)  # slow members are suspected now and then: all alive at once is rare
    packets, duration = net.packets + net.streams, periods * cfg.swim.probe_interval / members
    net.run(start + duration)
    healthy = sum(1 for _, _, name in net.false_positives if not net.slow[net.by_name[name]])
    return SlowRun(
        lifeguard=lifeguard, false_positives=healthy, false_positives_slow=len(net.false_positives) - healthy,
        false_suspicions=len(net.suspicions), member_periods=periods,
        messages_per_member_per_s=(net.packets + net.streams - packets) / members / duration,
    )
