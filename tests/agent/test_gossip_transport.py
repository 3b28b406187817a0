"""The gossip shell on real sockets (127.0.0.1, free ports): members join through a seed, a member
with the wrong key is never admitted and the log says why, garbage is dropped and counted, a key
rotation across every member loses none, and a member that stops answering is declared dead."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import structlog

from shoal.agent.gossip.keyring import Keyring, generate
from shoal.agent.gossip.swim import Event, SwimConfig
from shoal.agent.gossip.transport import GossipNode

FAST = SwimConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05, push_pull_interval=2.0)


class Cluster:
    def __init__(self) -> None:
        self.nodes: list[GossipNode] = []
        self.events: list[tuple[str, str, str]] = []  # (observer, kind, member)

    async def add(self, name: str, ring: Keyring) -> GossipNode:
        node = GossipNode(name, {"name": name}, ring, FAST, ("127.0.0.1", 0),
                          lambda e, n=name: self.events.append((n, e.kind, e.member.name)))
        await node.start()
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)


def alive(node: GossipNode) -> set[str]:
    return {m.name for m in node.members() if m.state == "alive"}


async def until(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def run(scenario: Callable[[Cluster], object]) -> None:
    async def main() -> None:
        c = Cluster()
        try:
            await scenario(c)  # type: ignore[misc]
        finally:
            await c.close()

    asyncio.run(main())


def test_members_join_through_one_seed_and_a_silent_member_is_declared_dead():
    async def scenario(c: Cluster) -> None:
        key = generate()
        nodes = [await c.add(f"n{i}", Keyring([key], key)) for i in range(4)]
        for n in nodes[1:]:
            await n.join([nodes[0].address])
        names = {f"n{i}" for i in range(4)}
        await until("everyone sees everyone", lambda: all(alive(n) == names for n in nodes))
        await nodes[3].close()
        c.nodes.remove(nodes[3])
        await until("n3 dead everywhere", lambda: all(
            {m.name: m.state for m in n.members()}.get("n3") == "dead" for n in nodes[:3]))
        assert {(o, k) for o, k, m in c.events if m == "n3" and k == "dead"} == {(f"n{i}", "dead") for i in range(3)}

    run(scenario)


def test_a_member_with_the_wrong_key_is_rejected_and_the_log_says_why():
    async def scenario(c: Cluster) -> None:
        key = generate()
        a = await c.add("a", Keyring([key], key))
        b = await c.add("b", Keyring([key], key))
        await b.join([a.address])
        await until("a and b together", lambda: alive(a) == {"a", "b"})
        stranger_key = generate()
        stranger = await c.add("stranger", Keyring([stranger_key], stranger_key))
        with structlog.testing.capture_logs() as logs:
            await stranger.join([a.address])
            await until("the stranger's packets dropped", lambda: a.counters.dropped > 0)
        assert alive(a) == {"a", "b"} and alive(stranger) == {"stranger"}
        why = [entry for entry in logs if entry["event"] == "gossip packet dropped"]
        assert why and "no installed key decrypts it" in why[0]["reason"]
        # garbage, truncated and oversized packets are dropped and counted, never a crash
        before = a.counters.dropped
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\x01", b"\xff" * 40, b"\x01" + b"\x00" * 1500):
                s.sendto(junk, a.address)
        await until("the junk counted", lambda: a.counters.dropped >= before + 4)
        assert alive(a) == {"a", "b"}

    run(scenario)


def test_a_key_rotation_across_every_member_loses_none(members: int = 3):
    async def scenario(c: Cluster) -> None:
        old = generate()
        nodes = [await c.add(f"n{i}", Keyring([old], old)) for i in range(members)]
        for n in nodes[1:]:
            await n.join([nodes[0].address])
        names = {n.name for n in nodes}
        await until("everyone together", lambda: all(alive(n) == names for n in nodes))
        new = generate()
        for step in (lambda r: r.install(new), lambda r: r.use(new), lambda r: r.remove(old)):
            for n in nodes:  # one member at a time, gossip going on in between
                step(n.keyring)
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            assert all(alive(n) | {m.name for m in n.members() if m.state == "suspect"} == names for n in nodes)
        assert not [e for e in c.events if e[1] == "dead"]  # (a suspicion under load is refuted)
        assert all(n.keyring.list() == [f"{new} (primary)"] for n in nodes)

    run(scenario)
