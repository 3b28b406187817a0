"""The SWIM + Lifeguard core, pure: messages in, messages and events out, on a virtual clock."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace

import pytest

from shoal.agent.gossip import wire
from shoal.agent.gossip.broadcast import BroadcastQueue, retransmit_limit
from shoal.agent.gossip.messages import (
    ALIVE, DEAD, KINDS, LEFT, SUSPECT, Ack, Alive, Dead, IndirectPing, MemberState, Nack, Ping, PushPull, Suspect,
    size_hint,
)
from shoal.agent.gossip.suspicion import Suspicion, suspicion_timeout
from shoal.agent.gossip.swim import (
    CORRECT_ODDS, MAX_META_BYTES, Event, Output, ReplyStream, SendStream, SendUdp, Swim, SwimConfig, push_pull_scale,
)

CFG = SwimConfig()
PLAIN = replace(CFG, lifeguard=False)


def addr(name: str) -> tuple[str, int]:
    return (f"10.0.0.{ord(name[0]) - ord('a') + 1}", 7946)


def member(name: str, now: float = 0.0, cfg: SwimConfig = CFG, **kw: int) -> Swim:
    return Swim(name, addr(name), {"node_id": f"id-{name}"}, cfg, random.Random(name), now, **kw)


def alive(name: str, incarnation: int = 0) -> Alive:
    return Alive(incarnation, name, addr(name), {"node_id": f"id-{name}"})


def introduce(s: Swim, *names: str, now: float = 0.0) -> None:
    for name in names:
        s.receive(addr(name), alive(name), now)


def advance(s: Swim, until: float) -> list[Output]:
    """Every tick ``s`` asks for up to ``until``, at the times it asks for them."""
    out: list[Output] = []
    for _ in range(100_000):
        t = s.next_deadline()
        if t > until:
            return out
        out += s.tick(t)
    raise AssertionError("next_deadline does not move on")


def sent(outs: list[Output], kind: type) -> list[tuple[tuple[str, int], object]]:
    """(destination, message) for every message of ``kind`` in the UDP packets of ``outs``."""
    return [(o.addr, m) for o in outs if isinstance(o, SendUdp) for m in o.messages if type(m) is kind]


def events(outs: list[Output], kind: str | None = None) -> list[Event]:
    return [o for o in outs if isinstance(o, Event) and (kind is None or o.kind == kind)]


def state(s: Swim, name: str) -> str:
    return {m.name: m.state for m in s.members()}[name]


def first_ping(s: Swim, until: float = 10.0) -> tuple[float, tuple[str, int], Ping, list[Output]]:
    """Run ``s`` to its next probe: when, to where, the ping, and the packet's messages."""
    for _ in range(10_000):
        t = s.next_deadline()
        assert t <= until, "no probe"
        outs = s.tick(t)
        for o in outs:
            if isinstance(o, SendUdp) and type(o.messages[0]) is Ping:
                return t, o.addr, o.messages[0], list(o.messages)
    raise AssertionError("no probe")


class Net:
    """Members that all know each other, packets delivered after 1 ms in time order; members in
    ``down`` neither send nor receive. Records every event and packet."""

    def __init__(self, names: str, cfg: SwimConfig = CFG):
        self.nodes = {n: member(n, cfg=cfg) for n in names}
        for s in self.nodes.values():
            introduce(s, *(n for n in names if n != s.name))
        self.by_addr = {addr(n): n for n in names}
        self.down: set[str] = set()
        self.events: list[tuple[float, str, Event]] = []
        self.packets: list[tuple[float, str, str, tuple]] = []  # (when, from, to, messages)
        self._queue: list[tuple[float, int, str, str, tuple]] = []
        self._seq = 0

    def run(self, until: float) -> None:
        while True:
            up = [s for n, s in self.nodes.items() if n not in self.down]
            tick = min(up, key=lambda s: s.next_deadline())
            t = tick.next_deadline()
            if self._queue and self._queue[0][0] <= t:
                t, _, dst, src, messages = heapq.heappop(self._queue)
                if t > until:
                    heapq.heappush(self._queue, (t, 0, dst, src, messages))
                    return
                if dst not in self.down and src not in self.down:
                    for msg in messages:
                        self._emit(dst, self.nodes[dst].receive(addr(src), msg, t), t)
            elif t > until:
                return
            else:
                self._emit(tick.name, tick.tick(t), t)

    def _emit(self, src: str, outs: list[Output], t: float) -> None:
        for o in outs:
            if isinstance(o, SendUdp):
                dst = self.by_addr[o.addr]
                self.packets.append((t, src, dst, o.messages))
                self._seq += 1
                heapq.heappush(self._queue, (t + 0.001, self._seq, dst, src, o.messages))
            elif isinstance(o, Event):
                self.events.append((t, src, o))

    def seen(self, kind: str, about: str) -> list[tuple[float, str]]:
        """(when, by whom) ``kind`` events about member ``about`` happened."""
        return [(t, by) for t, by, e in self.events if e.kind == kind and e.member.name == about]


# Probing.


def test_an_acked_probe_keeps_the_target_alive_and_health_at_zero() -> None:
    a, b = member("a"), member("b")
    introduce(a, "b")
    t, to, ping, _ = first_ping(a)
    assert to == addr("b") and ping.target == "b"
    (reply,) = [o for o in b.receive(addr("a"), ping, t + 0.001) if isinstance(o, SendUdp)]
    assert reply.addr == addr("a") and reply.messages[0] == Ack(ping.seq)
    a.receive(addr("b"), reply.messages[0], t + 0.002)
    outs = advance(a, t + CFG.probe_interval)  # the probe's deadline
    assert not events(outs, "suspect") and state(a, "b") == ALIVE
    assert not sent(outs, IndirectPing) and a.health_score == 0


def test_a_ping_for_another_name_is_not_answered() -> None:
    b = member("b")
    assert not sent(b.receive(addr("a"), Ping(7, "someone-else"), 0.0), Ack)


def test_a_lost_ack_is_made_up_for_by_an_indirect_probe() -> None:
    a, b, c, d = member("a"), member("b"), member("c"), member("d")
    introduce(a, "b", "c", "d")
    t, to, ping, _ = first_ping(a)
    target = {addr("b"): b, addr("c"): c, addr("d"): d}[to]
    relays = [n for n in (b, c, d) if n is not target]
    # The direct ack is lost; after the probe timeout, a asks the two others.
    outs = advance(a, t + CFG.probe_timeout)
    asks = sent(outs, IndirectPing)
    assert sorted(dst for dst, _ in asks) == sorted(addr(n.name) for n in relays)
    assert all(m.seq == ping.seq and m.target == target.name and m.nack for _, m in asks)
    relay = relays[0]
    (_, relay_ping), = sent(relay.receive(addr("a"), asks[0][1], t + 0.6), Ping)
    (_, ack), = sent(target.receive(addr(relay.name), relay_ping, t + 0.61), Ack)
    forwarded = relay.receive(addr(target.name), ack, t + 0.62)
    assert sent(forwarded, Ack) == [(addr("a"), Ack(ping.seq))]
    a.receive(addr(relay.name), Ack(ping.seq), t + 0.63)
    assert not events(advance(a, t + CFG.probe_interval), "suspect")


def test_a_silent_target_is_suspected_and_relays_send_nacks() -> None:
    net = Net("abc")
    net.down.add("b")
    net.run(20)
    (t, _), *_ = sorted(net.seen("suspect", "b"))
    assert {by for _, by in net.seen("suspect", "b")} == {"a", "c"}
    assert any(type(m) is Nack for _, src, dst, ms in net.packets if src == "c" and dst == "a" for m in ms)
    assert net.nodes["a"].health_score == 0  # the relays answered: the probers are fine
    assert not net.seen("suspect", "a") and not net.seen("suspect", "c")


def test_missing_nacks_raise_health_and_slow_probing_down() -> None:
    """Lifeguard's LHM: probes failing with no nack from the relays mean we are the problem:
    the score rises by the nacks missing and the probe interval and timeout stretch by score + 1."""
    a = member("a")
    introduce(a, "b", "c", "d", "e")  # none of them answers anything
    times = [first_ping(a, until=100)[0] for _ in range(3)]
    assert [round(y - x, 9) for x, y in zip(times, times[1:])] == [1.0, 4.0]  # score 0, then 3 (3 nacks missing)
    t, scale = times[-1], a.health_score + 1
    assert scale == 6  # 2 more missing: the first target, now suspect, relays nothing
    assert not sent(a.tick(t + CFG.probe_timeout * scale - 0.001), IndirectPing)  # the timeout stretches too
    assert sent(a.tick(t + CFG.probe_timeout * scale), IndirectPing)
    assert first_ping(a, until=100)[0] - t == pytest.approx(CFG.probe_interval * scale)


def test_successful_probes_bring_health_back_down() -> None:
    a = member("a")
    introduce(a, "b", "c", "d", "e")
    first_ping(a)  # nobody answers it
    t, to, ping, _ = first_ping(a)  # sent as the first failed, 3 nacks missing
    assert a.health_score == 3
    for _ in range(3):
        a.receive(to, Ack(ping.seq), t + 0.01)
        t, to, ping, _ = first_ping(a, until=100)
    assert a.health_score == 0


def test_the_health_score_is_capped() -> None:
    a = member("a")
    introduce(a, "b", "c", "d", "e")
    advance(a, 300)
    assert a.health_score == CFG.awareness_max_multiplier - 1


def test_plain_swim_has_no_health_and_asks_for_no_nacks() -> None:
    a = member("a", cfg=PLAIN)
    introduce(a, "b", "c")
    outs = advance(a, 60)
    assert a.health_score == 0
    assert sent(outs, IndirectPing) and all(not m.nack for _, m in sent(outs, IndirectPing))


# Suspicion.


def test_suspicion_timeout_scales_with_log_n() -> None:
    assert suspicion_timeout(4, 1, 1.0) == 4.0
    assert suspicion_timeout(4, 10, 1.0) == 4.0
    assert suspicion_timeout(4, 100, 1.0) == 8.0
    assert suspicion_timeout(4, 1000, 1.0) == pytest.approx(12.0)


def test_confirmations_shrink_the_timeout_log_scaled_to_the_minimum() -> None:
    s = Suspicion.begin("a", k=2, min_timeout=10.0, max_timeout=60.0, now=100.0)
    assert s.deadline == 160.0
    assert not s.confirm("a")  # the accuser itself
    assert s.confirm("b")
    assert s.deadline == pytest.approx(100 + 60 - math.log(2) / math.log(3) * 50)
    assert not s.confirm("b")
    assert s.confirm("c")
    assert s.deadline == 110.0
    assert not s.confirm("d")  # k reached: nothing more to learn
    assert Suspicion.begin("a", k=0, min_timeout=10.0, max_timeout=60.0, now=0.0).deadline == 10.0


def suspected(cfg: SwimConfig = CFG) -> tuple[Swim, float]:
    """``a`` with four others, suspecting ``b`` from now (t = 1)."""
    a = member("a", cfg=cfg)
    introduce(a, "b", "c", "d", "e")
    a.receive(addr("c"), Suspect(0, "b", "c"), 1.0)
    return a, 1.0


# Ticks jump straight to the times that matter: a's own probes (of members that never answer
# here) would confirm the suspicion themselves.


def test_an_unconfirmed_suspicion_becomes_death_after_the_maximum_timeout() -> None:
    a, t = suspected()
    high = CFG.suspicion_max_timeout_mult * suspicion_timeout(CFG.suspicion_mult, 5, CFG.probe_interval)
    assert state(a, "b") == SUSPECT
    assert not events(a.tick(t + high - 0.01), "dead") and state(a, "b") == SUSPECT
    assert [e.member.name for e in events(a.tick(t + high), "dead")] == ["b"]
    assert state(a, "b") == DEAD
    assert Dead(0, "b", "a") in [m for _, m in sent(a.tick(t + high + CFG.gossip_interval), Dead)]


def test_independent_confirmations_bring_death_sooner_and_are_gossiped() -> None:
    a, t = suspected()
    low = suspicion_timeout(CFG.suspicion_mult, 5, CFG.probe_interval)
    a.receive(addr("d"), Suspect(0, "b", "d"), t + 1)
    a.receive(addr("d"), Suspect(0, "b", "c"), t + 1)  # the first accuser again: no news
    a.receive(addr("e"), Suspect(0, "b", "e"), t + 2)
    assert Suspect(0, "b", "e") in [m for _, m in sent(a.tick(t + 2), Suspect)]
    assert not events(a.tick(t + low - 0.01), "dead")
    assert [e.member.name for e in events(a.tick(t + low), "dead")] == ["b"]


def test_plain_swim_uses_the_minimum_timeout_from_the_start() -> None:
    a, t = suspected(PLAIN)
    low = suspicion_timeout(PLAIN.suspicion_mult, 5, PLAIN.probe_interval)
    assert not events(a.tick(t + low - 0.01), "dead")
    assert [e.member.name for e in events(a.tick(t + low), "dead")] == ["b"]


@pytest.mark.parametrize("cfg", [CFG, PLAIN], ids=["lifeguard", "plain"])
def test_a_failed_probe_tells_its_target_at_once_with_lifeguard(cfg: SwimConfig) -> None:
    a = member("a", cfg=replace(cfg, gossip_interval=1e6))  # no gossip rounds: only what probing sends
    introduce(a, "b", "c")
    t, target, _, _ = first_ping(a)
    outs = a.tick(t + CFG.probe_interval)  # the probe fails; the next one goes to the other member
    (ev,) = events(outs, "suspect")
    told = [dst for dst, m in sent(outs, Suspect) if m.name == ev.member.name and dst == target]
    assert told == ([target] if cfg.lifeguard else [])


def test_a_probe_of_a_suspect_carries_the_suspicion_to_it() -> None:
    """The buddy system: the suspect hears of its suspicion from the next member to probe it."""
    a = member("a")
    introduce(a, "b")
    a.receive(addr("c"), Suspect(0, "b", "c"), 0.0)
    t, to, ping, messages = first_ping(a)
    assert to == addr("b") and Suspect(0, "b", "a") in messages


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    a, b = member("a"), member("b")
    introduce(a, "b")
    introduce(b, "a")
    a.receive(addr("c"), Suspect(0, "b", "c"), 1.0)
    b.receive(addr("a"), Suspect(0, "b", "c"), 1.1)
    assert b.incarnation == 1 and b.health_score == 1
    refutation = [m for _, m in sent(advance(b, 2), Alive) if m.name == "b"]
    assert refutation and refutation[0].incarnation == 1
    outs = a.receive(addr("b"), refutation[0], 2.0)
    assert [e.kind for e in outs if isinstance(e, Event)] == ["alive"] and state(a, "b") == ALIVE
    assert not events(a.tick(200), "dead")  # the suspicion is gone
    b.receive(addr("a"), Dead(1, "b", "a"), 3.0)
    assert b.incarnation == 2  # a death notice too is refuted
    b.receive(addr("a"), Suspect(0, "b", "a"), 3.0)
    assert b.incarnation == 2  # an old accusation needs no answer


def test_whoever_gossips_a_refuted_suspicion_is_told_the_refutation() -> None:
    """By one receiver in CORRECT_ODDS: the stale update reaches several."""
    a = member("a")
    introduce(a, "b")
    a.receive(addr("b"), alive("b", 1), 0.0)
    for stale in (Suspect(0, "b", "c"), Dead(0, "b", "c")):
        answers = [sent(a.receive(addr("d"), stale, 1.0), Alive) for _ in range(400)]
        assert all(x in ([], [(addr("d"), alive("b", 1))]) for x in answers)
        assert 400 / CORRECT_ODDS / 2 <= sum(map(len, answers)) <= 400 / CORRECT_ODDS * 2
    assert state(a, "b") == ALIVE
    a.receive(addr("c"), Suspect(0, "a", "c"), 2.0)  # about a itself: refuted
    assert a.incarnation == 1
    answers = [sent(a.receive(addr("d"), Suspect(0, "a", "c"), 3.0), Alive) for _ in range(400)]
    assert all(x in ([], [(addr("d"), alive("a", 1))]) for x in answers) and any(answers)
    assert a.incarnation == 1


def test_old_news_does_not_revive_or_kill() -> None:
    a = member("a")
    introduce(a, "b")
    a.receive(addr("b"), alive("b", 3), 0.0)
    assert not events(a.receive(addr("c"), Suspect(2, "b", "c"), 1.0))  # (perhaps answered: see above)
    assert not events(a.receive(addr("c"), Dead(2, "b", "c"), 1.0))
    assert state(a, "b") == ALIVE
    a.receive(addr("c"), Dead(3, "b", "c"), 1.0)
    assert state(a, "b") == DEAD
    assert not a.receive(addr("b"), alive("b", 3), 2.0) and state(a, "b") == DEAD
    assert [e.kind for e in a.receive(addr("b"), alive("b", 4), 2.0)] == ["join"]


# Leaving, dying, coming back.


def test_leave_is_recorded_as_left_not_dead_and_left_members_are_not_probed() -> None:
    a, b = member("a"), member("b")
    introduce(a, "b")
    introduce(b, "a")
    outs = b.leave(5.0)
    notice = [m for _, m in sent(outs, Dead)]
    assert notice == [Dead(0, "b", "b")]
    assert [e.kind for e in a.receive(addr("b"), notice[0], 5.0) if isinstance(e, Event)] == ["leave"]
    assert state(a, "b") == LEFT
    later = advance(a, 60)
    assert not [dst for dst, _ in sent(later, Ping) if dst == addr("b")]
    assert not [o for o in later if isinstance(o, SendUdp) and o.addr == addr("b")]  # no gossip to it either
    assert not b.leave(6.0)
    assert not any(isinstance(o, SendUdp) and type(o.messages[0]) is Ping for o in advance(b, 60))


def test_a_leaving_member_keeps_gossiping_until_its_notice_is_out() -> None:
    b = member("b")
    introduce(b, "a", "c", "d")
    advance(b, 30)
    assert b.pending_broadcasts == 0
    b.leave(30.0)
    advance(b, 60)
    assert b.pending_broadcasts == 0


def test_dead_members_are_gossiped_to_for_a_while_then_forgotten() -> None:
    a = member("a")
    introduce(a, "b", "c")
    a.receive(addr("c"), Dead(0, "b", "c"), 0.0)
    early = [o.addr for o in advance(a, 10) if isinstance(o, SendUdp) and type(o.messages[0]) is not Ping]
    assert addr("b") in early  # it may only be cut off: it would refute
    a.receive(addr("c"), Suspect(0, "c", "d"), 40.0)  # something to gossip, long after
    late = [o.addr for o in advance(a, 45) if isinstance(o, SendUdp)]
    assert addr("b") not in late
    advance(a, 100)  # a new probe round begins
    assert "b" not in {m.name for m in a.members()}


def test_a_restarted_member_rejoins_above_its_old_incarnation() -> None:
    a = member("a")
    introduce(a, "b")
    a.receive(addr("b"), alive("b", 5), 0.0)
    a.receive(addr("c"), Dead(5, "b", "c"), 1.0)
    b = member("b", now=10.0)  # restarted: incarnation 0 again
    (request,) = b.join([addr("a")], 10.0)
    assert isinstance(request, SendStream) and request.addr == addr("a") and not request.message.reply
    outs = a.receive_stream(request.message, 10.1)
    (reply,) = [o for o in outs if isinstance(o, ReplyStream)]
    assert not events(outs, "join")  # incarnation 0 is old news to a
    b.receive_stream(reply.message, 10.2)
    assert b.incarnation == 6
    refutation = [m for _, m in sent(advance(b, 11), Alive) if m.name == "b"]
    assert refutation and refutation[0].incarnation == 6
    assert [e.kind for e in a.receive(addr("b"), refutation[0], 11.0)] == ["join"]
    assert state(a, "b") == ALIVE


def test_a_member_that_left_may_come_back_at_another_address() -> None:
    a = member("a")
    introduce(a, "b")
    a.receive(addr("b"), Dead(0, "b", "b"), 0.0)
    moved = Alive(0, "b", ("10.9.9.9", 7946), {})
    assert [e.kind for e in a.receive(("10.9.9.9", 7946), moved, 1.0)] == ["join"]
    assert {m.name: m.addr for m in a.members()}["b"] == ("10.9.9.9", 7946)


def test_a_live_member_keeps_its_address() -> None:
    a = member("a")
    introduce(a, "b")
    assert not a.receive(("10.9.9.9", 7946), Alive(9, "b", ("10.9.9.9", 7946), {}), 1.0)
    assert {m.name: m.addr for m in a.members()}["b"] == addr("b")


def test_metadata_updates_raise_the_incarnation_and_reach_others() -> None:
    a, b = member("a"), member("b")
    introduce(b, "a")
    introduce(a, "b")
    outs = b.update_meta({"node_id": "id-b", "vtep": "10.1.0.2"}, 1.0)
    (update,) = [m for _, m in sent(outs, Alive) if m.name == "b"]
    assert update.incarnation == 1
    (ev,) = events(a.receive(addr("b"), update, 1.0))
    assert ev.kind == "update" and ev.member.meta["vtep"] == "10.1.0.2"
    with pytest.raises(ValueError):
        b.update_meta({"k": "v" * MAX_META_BYTES}, 2.0)


# Dissemination.


def test_each_update_is_sent_a_bounded_number_of_times() -> None:
    q = BroadcastQueue(1367)
    q.push(Suspect(0, "b", "a"))
    sends = 0
    while q:
        sends += len(q.take(1367, limit=5))
    assert sends == 5
    assert retransmit_limit(4, 1000) == 16 and retransmit_limit(4, 999) == 12 and retransmit_limit(4, 9) == 4


def test_a_newer_update_replaces_the_queued_one() -> None:
    q = BroadcastQueue(1367)
    q.push(Suspect(0, "b", "a"))
    q.take(1367, limit=5)
    q.push(alive("b", 1))
    assert len(q) == 1
    assert q.take(1367, limit=5) == [alive("b", 1)]


def test_urgent_updates_go_first_and_joins_keep_a_quarter_of_the_packet() -> None:
    q = BroadcastQueue(1367)
    for i in range(40):
        q.push(alive(f"j{i:02d}"), urgent=False)
    for i in range(40):
        q.push(Suspect(0, f"s{i:02d}", "a"))
    packet = q.take(1367, limit=5)
    suspects = [m for m in packet if type(m) is Suspect]
    joins = [m for m in packet if type(m) is Alive]
    assert packet[: len(suspects)] == suspects and suspects[0].name == "s00"
    assert joins and sum(size_hint(m) for m in joins) <= 1367 // 4 + size_hint(joins[-1])
    assert sum(size_hint(m) for m in packet) <= 1367


QUIET = replace(CFG, probe_interval=1e6, push_pull_interval=1e6)  # gossip only


def test_a_swim_member_sends_each_update_retransmit_limit_times() -> None:
    a = member("a", cfg=QUIET)
    introduce(a, *(chr(ord("b") + i) for i in range(12)))
    advance(a, 30)  # the joins are out
    assert a.pending_broadcasts == 0
    a.receive(addr("b"), Suspect(0, "c", "b"), 30.0)
    outs = advance(a, 60)
    copies = [dst for dst, m in sent(outs, Suspect) if m == Suspect(0, "c", "b")]
    assert len(copies) == retransmit_limit(CFG.retransmit_mult, 13) == 8
    assert len(set(copies)) > 3  # to random members


def test_push_pull_merges_both_ways_and_a_remote_death_is_only_a_suspicion_here() -> None:
    a, x = member("a"), member("x")
    introduce(a, "b", "c")
    introduce(x, "d", "c")
    x.receive(addr("d"), Dead(0, "c", "d"), 1.0)
    (request,) = a.join([addr("x")], 2.0)
    outs = x.receive_stream(request.message, 2.0)
    (reply,) = [o for o in outs if isinstance(o, ReplyStream)]
    assert reply.message.reply
    assert {e.member.name for e in events(outs, "join")} == {"a", "b"}
    back = a.receive_stream(reply.message, 2.1)
    assert not [o for o in back if isinstance(o, ReplyStream)]
    assert {e.member.name for e in events(back, "join")} == {"x", "d"}
    assert state(a, "c") == SUSPECT  # x holds it dead; a may still reach it
    assert {m.name for m in a.members()} == {m.name for m in x.members()} == {"a", "b", "c", "d", "x"}


def test_periodic_push_pull_picks_a_live_member_and_scales_with_size() -> None:
    a = member("a", cfg=QUIET)
    a._next_push_pull = 1.0  # noqa: SLF001 (its first one comes at a random time up to the interval)
    introduce(a, "b")
    outs = advance(a, CFG.push_pull_interval + 0.01)
    streams = [o for o in outs if isinstance(o, SendStream)]
    assert streams and streams[0].addr == addr("b") and not streams[0].message.reply
    assert push_pull_scale(30.0, 32) == 30.0 and push_pull_scale(30.0, 1000) == 180.0


# The messages on the wire.


def test_every_message_round_trips_through_the_wire_and_fits_its_size_hint() -> None:
    for kind, cls in KINDS.items():
        wire.register(kind, cls)
    big = 2**64 - 1
    meta = {"node_id": "0a3f2c4e-1111-2222-3333-444455556666", "vtep": "10.0.3.17", "subnet": "10.244.17.0/24"}
    udp = [Ping(big, "node-0123"), IndirectPing(big, "node-0123", ("10.0.3.17", 65535), True), Ack(big),
           Nack(big), Alive(big, "node-0123", ("10.0.3.17", 65535), meta), Suspect(big, "node-0123", "node-0456"),
           Dead(big, "node-0123", "node-0456")]
    for msg in udp:
        kind, fields = wire.to_fields(msg)
        assert len(wire.encode(kind, fields)) - 2 <= size_hint(msg), kind
        assert wire.from_fields(*wire.decode(wire.encode(kind, fields))) == msg
    pp = PushPull((MemberState("a", ("10.0.0.1", 7946), meta, 3, DEAD),), reply=True)
    assert wire.from_fields(*wire.decode(wire.encode(*wire.to_fields(pp)))) == pp
    assert CFG.packet_bytes == wire.UDP_PAYLOAD_BUDGET - 4  # version byte and array header


def test_a_full_packet_of_updates_packs_into_one_udp_payload() -> None:
    for kind, cls in KINDS.items():
        wire.register(kind, cls)
    a = member("a")
    names = [f"n{i:03d}" for i in range(200)]
    for name in names:
        a.receive(("10.1.0.1", 7946), Alive(0, name, ("10.1.0.1", 7946), {"node_id": name * 4}), 0.0)
    packets = [o for o in a.tick(a.next_deadline()) if isinstance(o, SendUdp)]
    packets += [o for o in advance(a, 1.0) if isinstance(o, SendUdp)]
    assert packets
    for p in packets:
        assert len(wire.pack(wire.to_fields(m) for m in p.messages)) == 1
