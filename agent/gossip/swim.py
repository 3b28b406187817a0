"""SWIM with Lifeguard as a pure state machine: packets and timer ticks in, packets and events out.

hashicorp/memberlist's protocol, rewritten as a class that never reads a clock, a socket or a
global random source: every call takes ``now`` (seconds, any monotonic origin) and returns the
``Output``s to act on; the asyncio shell (UDP for probes and gossip, TCP for push-pull, ``wire``
for bytes, the keyring for sealing) only moves them. Tests drive it with a virtual clock.

The shell's loop::

    swim = Swim(name, addr, meta, SwimConfig(), random.Random(), now=clock())
    act(swim.join(seeds, clock()))
    forever: sleep until swim.next_deadline() or a packet arrives, then
        act(swim.tick(clock()))                      # every due timer
        act(swim.receive(src, msg, clock()))         # for each message of a UDP packet from src
        act(swim.receive_stream(push_pull, clock())) # a PushPull read from a TCP stream
    act(swim.leave(clock())); keep gossiping until swim.pending_broadcasts == 0 (or a timeout)

where ``act`` sends ``SendUdp`` packets, opens a stream for ``SendStream`` (and feeds the
``PushPull`` reply read from it to ``receive_stream``), writes ``ReplyStream`` back on the stream
the request came from, and hands ``Event``s to whoever watches membership (the overlay, the
node-health reports). A failed stream or a lost packet needs no report: timers cover it.

The protocol (memberlist's, with the Lifeguard paper's three refinements when
``SwimConfig.lifeguard``):

- **Probing**: every probe interval, the next member of a shuffled round-robin list (new members
  inserted at random positions, the list reshuffled each round) gets a ``Ping``; no ``Ack``
  within the probe timeout: ``IndirectPing`` through ``indirect_checks`` random alive members;
  still no ack when the probe interval ends: the prober suspects the target.
- **Suspicion**: a ``Suspect`` is gossiped; the suspect has until the suspicion timeout to refute
  it; then whoever holds the suspicion declares it ``Dead`` (``suspicion.py``: Lifeguard's timeout
  starts at ``suspicion_max_timeout_mult`` times the minimum and shrinks, log-scaled, to
  ``suspicion_mult * log10(N) * probe_interval`` as ``suspicion_mult - 2`` independent accusers
  confirm; plain SWIM uses the minimum).
- **Refutation**: a member hearing it is suspected or dead (or alive with another incarnation or
  metadata: a previous life of it) re-broadcasts ``Alive`` with an incarnation above the
  accusation's. A restarted member learns its old incarnation from its join's push-pull reply.
- **Dissemination**: updates are queued (``broadcast.py``) and piggybacked on every UDP packet,
  and every gossip interval up to ``gossip_nodes`` random members (alive, suspect, or dead for
  less than ``gossip_to_the_dead_time``) get a packet of them; each update is sent
  ``retransmit_mult * ceil(log10(N + 1))`` times, suspicions, deaths and refutations before
  joins. Whoever gossips a suspicion or death already refuted is sent the refutation (by one
  receiver in ``CORRECT_ODDS``).
- **Push-pull**: every ``push_pull_interval`` (scaled up past 32 members, as memberlist) a full
  state exchange with one random alive member; joining is a push-pull with each seed.
- **Lifeguard**: the local health multiplier (LHM, ``health_score``) rises when probes fail with
  nacks missing from indirect probers, and when the member has to refute a suspicion, falls with
  each successful probe, and scales the probe interval and timeout by ``score + 1``, so a slow
  member probes less and waits longer instead of suspecting healthy members; indirect probers
  send ``Nack``; the buddy system: a prober that comes to suspect its target tells it at once,
  and every probe of a suspect carries the ``Suspect``, so a live suspect refutes within a round
  trip rather than when gossip reaches it (in a busy cluster, possibly after its timeout).
- **Leave**: ``leave`` broadcasts ``Dead`` about the member itself, which others record as
  "left", not "dead". Dead and left members stay listed (and are gossiped to for a while), then
  are dropped at the start of a probe round once ``gossip_to_the_dead_time`` has passed.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from shoal.agent.gossip.broadcast import BroadcastQueue, retransmit_limit
from shoal.agent.gossip.config import MAX_META_BYTES, SwimConfig, check_meta, push_pull_scale
from shoal.agent.gossip.members import Member, MemberTable, Node
from shoal.agent.gossip.messages import (
    ALIVE, DEAD, LEFT, SUSPECT, Ack, Addr, Alive, Dead, IndirectPing, Message, MemberState, Nack, Ping, PushPull,
    Suspect, size_hint,
)
from shoal.agent.gossip.outputs import Event, Output, ReplyStream, SendStream, SendUdp
from shoal.agent.gossip.suspicion import Suspicion, suspicion_timeout

__all__ = [
    "CORRECT_ODDS", "MAX_META_BYTES", "Event", "Member", "Output", "ReplyStream", "SendStream", "SendUdp", "Swim",
    "SwimConfig", "push_pull_scale",
]

CORRECT_ODDS = 4  # a stale suspicion or death is answered with the refutation one time in this many


@dataclass(slots=True)
class _Probe:
    """The probe in flight: our ``Ping(seq)`` to ``target`` (at ``incarnation``)."""

    seq: int
    target: str
    incarnation: int
    addr: Addr
    indirect_at: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    """An indirect probe we make for ``origin``: its ack goes back as ``Ack(origin_seq)``."""

    origin: Addr
    origin_seq: int
    nack: bool


class Swim:
    """One member's protocol state. Not thread-safe: one caller feeds it, in time order."""

    __slots__ = (
        "name", "config", "_rng", "_me", "_members", "_broadcasts", "_suspicions",
        "_suspicion_timers", "_relays", "_relay_timers", "_probe", "_seq", "_health", "_left",
        "_next_probe", "_next_gossip", "_next_push_pull",
    )

    def __init__(self, name: str, addr: Addr, meta: Mapping[str, str], config: SwimConfig, rng: random.Random,
                 now: float, incarnation: int = 0):
        """``incarnation``: where to start, when the member kept it across a restart (it need not:
        it learns the cluster's and refutes above it). ``rng`` makes every random choice."""
        check_meta(meta)
        self.name = name
        self.config = config
        self._rng = rng
        self._me = Node(name, addr, dict(meta), incarnation, ALIVE, now)
        self._members = MemberTable(self._me, rng)
        self._broadcasts = BroadcastQueue(config.packet_bytes)
        self._suspicions: dict[str, Suspicion] = {}
        self._suspicion_timers: list[tuple[float, str]] = []  # heap; stale entries skipped
        self._relays: dict[int, _Relay] = {}
        self._relay_timers: list[tuple[float, int]] = []  # heap of (nack deadline, our seq)
        self._probe: _Probe | None = None
        self._seq = 0
        self._health = 0  # Lifeguard's local health multiplier score
        self._left = False
        # Timers start at random phases, so members do not probe and gossip in lockstep.
        self._next_probe = now + rng.random() * config.probe_interval
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._next_push_pull = now + rng.random() * config.push_pull_interval
        self._broadcasts.push(self._alive_msg(), urgent=False)

    # The public API.

    @property
    def health_score(self) -> int:
        """Lifeguard's local health score: 0 is healthy; probing is slowed by ``score + 1``."""
        return self._health

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def pending_broadcasts(self) -> int:
        """Updates still to be gossiped (after ``leave``: stop once this reaches 0)."""
        return len(self._broadcasts)

    def members(self) -> list[Member]:
        """Every member known, this one included, dead and left ones until they are dropped."""
        return self._members.snapshots()

    def next_deadline(self) -> float:
        """When ``tick`` must next be called (it may be called earlier: nothing is then due)."""
        deadline = self._next_gossip if self._broadcasts else math.inf  # nothing to gossip: no tick
        if not self._left:
            deadline = min(deadline, self._next_probe, self._next_push_pull)
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.deadline if probe.indirect_sent else probe.indirect_at)
        if self._suspicion_timers:
            deadline = min(deadline, self._suspicion_timers[0][0])
        if self._relay_timers:
            deadline = min(deadline, self._relay_timers[0][0])
        return deadline

    def join(self, seeds: list[Addr], now: float) -> list[Output]:
        """Join through any of ``seeds``: a push-pull with each (the replies merge the cluster's
        state, and each seed gossips our ``Alive``). ``now`` is taken as by every call; a
        join's work happens when the replies arrive."""
        states = self._members.states()
        return [SendStream(addr, PushPull(states, reply=False)) for addr in seeds]

    def leave(self, now: float) -> list[Output]:
        """Leave gracefully: gossip ``Dead`` about ourselves (others record "left"); probing and
        push-pull stop, gossip goes on until ``pending_broadcasts`` is 0 and the shell stops."""
        if self._left:
            return []
        self._left = True
        self._probe = None
        me = self._me
        me.state, me.state_change = LEFT, now
        self._broadcasts.push(Dead(me.incarnation, me.name, me.name))
        out: list[Output] = []
        self._gossip(now, out)
        return out

    def update_meta(self, meta: Mapping[str, str], now: float) -> list[Output]:
        """Change our metadata: ``Alive`` with the next incarnation, gossiped at once."""
        check_meta(meta)
        if self._left:
            return []
        me = self._me
        me.meta = dict(meta)
        me.incarnation += 1
        self._broadcasts.push(self._alive_msg())
        out: list[Output] = []
        self._gossip(now, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Fire every timer due at ``now``: relayed probes' nacks, suspicion timeouts, the probe's
        indirect stage and deadline, the next probe, push-pull and gossip."""
        out: list[Output] = []
        cfg = self.config
        self._expire_relays(now, out)
        self._expire_suspicions(now, out)
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._send_indirect(probe, out)
            if now >= probe.deadline:
                self._probe_failed(probe, now, out)
        if not self._left:
            if now >= self._next_probe:
                self._start_probe(now, out)
            if now >= self._next_push_pull:
                self._next_push_pull = now + push_pull_scale(cfg.push_pull_interval, len(self._members))
                target = self._members.random(1, lambda n: n is self._me or n.state != ALIVE)
                if target:
                    out.append(SendStream(target[0].addr, PushPull(self._members.states(), reply=False)))
        if now >= self._next_gossip:
            self._next_gossip += cfg.gossip_interval
            if self._next_gossip <= now:
                self._next_gossip = now + cfg.gossip_interval
            self._gossip(now, out)
        return out

    def receive(self, src: Addr, msg: Message, now: float) -> list[Output]:
        """Handle one message of a UDP packet that came from ``src`` (where answers go)."""
        out: list[Output] = []
        kind = type(msg)
        if kind is Alive:
            self._on_alive(msg, now, out)
        elif kind is Suspect or kind is Dead:
            node = self._members.nodes.get(msg.name)
            if node is not None and msg.incarnation < node.incarnation and node.state == ALIVE:
                # Stale news: the sender missed the refutation (gossip reaches everyone with high
                # probability only) and would time the member out alone. It sends the stale
                # update to several members in turn, so one answer in CORRECT_ODDS puts it right.
                if self._rng.random() * CORRECT_ODDS < 1:
                    out.append(SendUdp(src, (Alive(node.incarnation, node.name, node.addr, node.meta),)))
            elif kind is Suspect:
                self._on_suspect(msg, now, out)
            else:
                self._on_dead(msg, now, out)
        elif kind is Ping:
            if msg.target == self.name:
                self._send(src, [Ack(msg.seq)], out)
        elif kind is Ack:
            self._on_ack(msg.seq, now, out)
        elif kind is Nack:
            probe = self._probe
            if probe is not None and probe.seq == msg.seq:
                probe.nacks += 1
        elif kind is IndirectPing:
            seq = self._next_seq()
            self._relays[seq] = _Relay(src, msg.seq, msg.nack)
            heapq.heappush(self._relay_timers, (now + self.config.probe_timeout, seq))
            self._send(msg.target_addr, [Ping(seq, msg.target)], out)
        return out

    def receive_stream(self, msg: PushPull, now: float) -> list[Output]:
        """Handle a ``PushPull``: a request is answered (``ReplyStream``) with our state as it
        was before merging theirs; a reply is merged only."""
        out: list[Output] = []
        if not msg.reply:
            out.append(ReplyStream(PushPull(self._members.states(), reply=True)))
        self._merge(msg.states, now, out)
        return out

    # Probing.

    def _scale(self) -> int:
        return self._health + 1 if self.config.lifeguard else 1

    def _adjust_health(self, delta: int) -> None:
        if self.config.lifeguard:
            self._health = min(max(0, self._health + delta), self.config.awareness_max_multiplier - 1)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _start_probe(self, now: float, out: list[Output]) -> None:
        cfg = self.config
        scale = self._scale()
        self._next_probe = now + cfg.probe_interval * scale
        target = self._members.next_target(now, cfg.gossip_to_the_dead_time)
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(seq, target.name, target.incarnation, target.addr,
                             indirect_at=now + cfg.probe_timeout * scale, deadline=self._next_probe)
        msgs: list[Message] = [Ping(seq, target.name)]
        if cfg.lifeguard and target.state == SUSPECT:  # the buddy system
            msgs.append(Suspect(target.incarnation, target.name, self.name))
        self._send(target.addr, msgs, out)

    def _send_indirect(self, probe: _Probe, out: list[Output]) -> None:
        probe.indirect_sent = True
        target = probe.target
        peers = self._members.random(self.config.indirect_checks,
                                     lambda n: n is self._me or n.name == target or n.state != ALIVE)
        nack = self.config.lifeguard
        probe.expected_nacks = len(peers) if nack else 0
        for peer in peers:
            self._send(peer.addr, [IndirectPing(probe.seq, target, probe.addr, nack)], out)

    def _on_ack(self, seq: int, now: float, out: list[Output]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if now <= probe.deadline:
                self._probe = None
                self._adjust_health(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(relay.origin, [Ack(relay.origin_seq)], out)

    def _probe_failed(self, probe: _Probe, now: float, out: list[Output]) -> None:
        """No ack by the deadline: our health pays for the nacks that did not come (for any
        failure, without indirect probers to tell), then the target is suspected. With
        Lifeguard the target is told at once too (the buddy system's first word): a live one
        refutes right away instead of when the suspicion reaches it, which in a busy cluster
        may be after its timeout elsewhere."""
        self._probe = None
        missing = probe.expected_nacks - probe.nacks
        self._adjust_health(missing if probe.expected_nacks else 1)
        suspect = Suspect(probe.incarnation, probe.target, self.name)
        self._on_suspect(suspect, now, out)
        node = self._members.nodes.get(probe.target)
        if self.config.lifeguard and node is not None and node.state == SUSPECT:
            out.append(SendUdp(probe.addr, (suspect,)))

    def _expire_relays(self, now: float, out: list[Output]) -> None:
        timers = self._relay_timers
        while timers and timers[0][0] <= now:
            _, seq = heapq.heappop(timers)
            relay = self._relays.pop(seq, None)
            if relay is not None and relay.nack:
                self._send(relay.origin, [Nack(relay.origin_seq)], out)

    def _expire_suspicions(self, now: float, out: list[Output]) -> None:
        timers = self._suspicion_timers
        while timers and timers[0][0] <= now:
            _, name = heapq.heappop(timers)
            suspicion = self._suspicions.get(name)
            if suspicion is None or suspicion.deadline > now:
                continue  # refuted, or a confirmation moved the deadline (its own entry is queued)
            del self._suspicions[name]
            node = self._members.nodes[name]
            self._on_dead(Dead(node.incarnation, name, self.name), now, out)

    # Membership updates: whatever is new to us is gossiped on.

    def _on_alive(self, msg: Alive, now: float, out: list[Output]) -> None:
        node = self._members.nodes.get(msg.name)
        if node is None:
            node = Node(msg.name, msg.addr, msg.meta, msg.incarnation, ALIVE, now)
            self._members.add(node)
            self._broadcasts.push(msg, urgent=False)
            out.append(Event("join", node.snapshot()))
            return
        if node is self._me:
            if self._left or msg.incarnation < node.incarnation:
                return
            if msg.incarnation == node.incarnation and msg.addr == node.addr and msg.meta == node.meta:
                return  # our own update coming back
            self._refute(msg.incarnation)  # a previous life of ours, or someone's mistake
            return
        moved = msg.addr != node.addr
        if moved and node.state in (ALIVE, SUSPECT):
            return  # a live member keeps its address: another process claims its name
        if msg.incarnation <= node.incarnation and not (moved and node.state == LEFT):
            return  # old news (a member that left may come back elsewhere, from incarnation 0)
        self._suspicions.pop(msg.name, None)
        old_state, changed = node.state, moved or msg.meta != node.meta
        node.incarnation, node.addr, node.meta = msg.incarnation, msg.addr, msg.meta
        if old_state != ALIVE:
            node.state, node.state_change = ALIVE, now
        self._broadcasts.push(msg)
        if old_state in (DEAD, LEFT):
            out.append(Event("join", node.snapshot()))
        elif old_state == SUSPECT:
            out.append(Event("alive", node.snapshot()))
        elif changed:
            out.append(Event("update", node.snapshot()))

    def _on_suspect(self, msg: Suspect, now: float, out: list[Output]) -> None:
        node = self._members.nodes.get(msg.name)
        if node is None or msg.incarnation < node.incarnation:
            return
        suspicion = self._suspicions.get(msg.name)
        if suspicion is not None:
            if suspicion.confirm(msg.from_):  # a new independent accuser: tell others too
                heapq.heappush(self._suspicion_timers, (suspicion.deadline, msg.name))
                self._broadcasts.push(msg)
            return
        if node.state != ALIVE:
            return
        if node is self._me:  # alive, so not left
            self._refute(msg.incarnation)
            return
        cfg = self.config
        n = len(self._members)
        k = cfg.suspicion_mult - 2 if cfg.lifeguard else 0
        if n - 2 < k:  # not enough other members to confirm
            k = 0
        low = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
        suspicion = Suspicion.begin(msg.from_, k, low, cfg.suspicion_max_timeout_mult * low, now)
        self._suspicions[msg.name] = suspicion
        heapq.heappush(self._suspicion_timers, (suspicion.deadline, msg.name))
        node.incarnation, node.state, node.state_change = msg.incarnation, SUSPECT, now
        self._broadcasts.push(msg)
        out.append(Event("suspect", node.snapshot()))

    def _on_dead(self, msg: Dead, now: float, out: list[Output]) -> None:
        node = self._members.nodes.get(msg.name)
        if node is None or msg.incarnation < node.incarnation:
            return
        self._suspicions.pop(msg.name, None)
        if node.state in (DEAD, LEFT):
            return
        if node is self._me:
            self._refute(msg.incarnation)  # never ourselves: leave() handles our own Dead
            return
        left = msg.from_ == msg.name
        node.incarnation, node.state, node.state_change = msg.incarnation, LEFT if left else DEAD, now
        self._broadcasts.push(msg)
        out.append(Event("leave" if left else "dead", node.snapshot()))

    def _refute(self, accused: int) -> None:
        """Beat an accusation at incarnation ``accused``; having to costs us health (Lifeguard)."""
        me = self._me
        me.incarnation = max(me.incarnation, accused) + 1
        self._adjust_health(1)
        self._broadcasts.push(self._alive_msg())

    def _merge(self, states: tuple[MemberState, ...], now: float, out: list[Output]) -> None:
        """Merge a push-pull's states as memberlist does: a remote "dead" is only a suspicion
        here (we may still reach the member), "left" is final."""
        nodes, me = self._members.nodes, self._me
        for s in states:
            node = nodes.get(s.name)
            if node is not None and node is not me and (s.incarnation, s.state) == (node.incarnation, node.state):
                continue  # nothing new (most of any push-pull)
            if s.state == ALIVE:
                self._on_alive(Alive(s.incarnation, s.name, s.addr, s.meta), now, out)
            elif s.state == LEFT:
                self._on_dead(Dead(s.incarnation, s.name, s.name), now, out)
            elif s.state in (SUSPECT, DEAD):
                self._on_suspect(Suspect(s.incarnation, s.name, self.name), now, out)

    # Helpers.

    def _alive_msg(self) -> Alive:
        me = self._me
        return Alive(me.incarnation, me.name, me.addr, me.meta)

    def _gossip(self, now: float, out: list[Output]) -> None:
        """A packet of pending updates to each of ``gossip_nodes`` random members, while any.

        Members dead for less than ``gossip_to_the_dead_time`` are candidates too: they may
        only be cut off, and hearing of their death lets them refute it."""
        if not self._broadcasts:
            return
        cfg = self.config
        me, dead_after = self._me, now - cfg.gossip_to_the_dead_time

        def exclude(n: Node) -> bool:
            return n is me or n.state == LEFT or (n.state == DEAD and n.state_change < dead_after)

        limit = retransmit_limit(cfg.retransmit_mult, len(self._members))
        for node in self._members.random(cfg.gossip_nodes, exclude):
            msgs = self._broadcasts.take(cfg.packet_bytes, limit)
            if not msgs:
                break
            out.append(SendUdp(node.addr, tuple(msgs)))

    def _send(self, addr: Addr, msgs: list[Message], out: list[Output]) -> None:
        """One packet: ``msgs`` with pending updates piggybacked in the room they leave."""
        if self._broadcasts:
            cfg = self.config
            room = cfg.packet_bytes - sum(size_hint(m) for m in msgs)
            msgs += self._broadcasts.take(room, retransmit_limit(cfg.retransmit_mult, len(self._members)))
        out.append(SendUdp(addr, tuple(msgs)))
