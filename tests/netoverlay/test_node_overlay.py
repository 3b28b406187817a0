"""NodeOverlay's decisions without a kernel: peers from leases, network sets, addresses,
and the firewall's coalesced, ordered loads."""

from __future__ import annotations

import asyncio

from shoal.jobs.structs import SubnetLease
from shoal.netoverlay.firewall import Firewall
from shoal.netoverlay.ipam import SubnetLayout
from shoal.netoverlay.nftrules import PortMapping
from shoal.netoverlay.overlay import Attachment, NodeOverlay, network_sets, peers_from
from shoal.netoverlay.vxlan_plan import Peer, wanted

LEASES = [SubnetLease(net, node, subnet, underlay) for net, node, subnet, underlay in (
    ("default", "a", "10.200.0.0/24", "198.18.0.2"), ("default", "b", "10.200.1.0/24", "198.18.0.3"),
    ("front", "a", "10.200.2.0/24", "198.18.0.2"), ("default", "gone", "10.200.3.0/24", "198.18.0.4"))]


def test_peers_are_the_leases_of_nodes_that_are_up():
    peers = peers_from(LEASES, {"a": "ready", "b": "ready", "gone": "down"})
    assert Peer("b", "198.18.0.3", "10.200.1.0/24", "10.200.1.0/24") in peers
    assert all(p.node_id != "gone" for p in peers)
    # a's named network is routed through a's one VTEP, the first address of its default subnet
    assert peers_from(LEASES, {"a": "ready"}) == [Peer("a", "198.18.0.2", "10.200.0.0/24", "10.200.0.0/24"),
                                                  Peer("a", "198.18.0.2", "10.200.2.0/24", "10.200.0.0/24")]
    want = wanted("b", "198.18.0.3", peers_from(LEASES, {"a": "ready", "b": "ready"}))
    assert len(want.neighs) == len(want.fdbs) == 1
    assert {r.via for r in want.routes} == {"10.200.0.0"} and len(want.routes) == 2


def test_network_sets_group_every_nodes_subnets_by_network():
    assert network_sets(LEASES) == {"default": ("10.200.0.0/24", "10.200.1.0/24", "10.200.3.0/24"),
                                    "front": ("10.200.2.0/24",)}


def test_addresses_are_never_handed_out_twice_and_restored_ones_are_claimed_first():
    async def call(method, req, timeout):
        raise AssertionError("no RPC in this test")

    ov = NodeOverlay(call, "a", "198.18.0.2")
    att = Attachment("default", "shoal0", SubnetLayout.of("10.200.0.0/29"), 1450)
    assert ov.claim("default", "restored", "10.200.0.2")
    assert not ov.claim("default", "other", "10.200.0.2")
    assert ov.allocate(att, "new") == "10.200.0.3"
    assert ov.allocate(att, "new") == "10.200.0.3"  # asked again: the same one
    ov.release("restored")
    assert ov.allocate(att, "third") == "10.200.0.2"
    ov._exec.shutdown()


def test_firewall_coalesces_changes_and_loads_each_state_once():
    loads: list[str] = []

    async def load(text: str) -> None:
        await asyncio.sleep(0.01)
        loads.append(text)

    async def main() -> None:
        fw = Firewall("10.200.0.0/16", load)
        await asyncio.gather(fw.publish("x", [PortMapping(8080, "tcp", "10.200.0.2", 80)]),
                             fw.publish("y", [PortMapping(8081, "tcp", "10.200.0.3", 80)]))
        assert len(loads) == 1 and "dport 8080" in loads[0] and "dport 8081" in loads[0]
        await fw.set_networks({"default": ("10.200.0.0/24",)}, ("10.200.0.0/24",))
        await fw.set_networks({"default": ("10.200.0.0/24",)}, ("10.200.0.0/24",))  # no change: no load
        await fw.unpublish("x")
        await fw.unpublish("x")
        assert len(loads) == 3 and "dport 8080" not in loads[-1]
        # a change arriving while a load runs is loaded right after it
        first = asyncio.ensure_future(fw.publish("z", [PortMapping(9000, "udp", "10.200.0.4", 53)]))
        await asyncio.sleep(0.025)
        await fw.unpublish("y")
        await first
        assert "dport 9000" in loads[-1] and "dport 8081" not in loads[-1]

    asyncio.run(main())


def test_a_host_port_published_twice_goes_to_the_latest_publisher_until_it_leaves():
    async def load(text: str) -> None:
        loads.append(text)

    loads: list[str] = []

    async def main() -> None:
        fw = Firewall("10.200.0.0/16", load)
        await fw.publish("old", [PortMapping(20000, "tcp", "10.200.0.2", 80)])
        await fw.publish("new", [PortMapping(20000, "tcp", "10.200.0.3", 80)])
        assert "10.200.0.3:80" in loads[-1] and "10.200.0.2:80" not in loads[-1]
        await fw.unpublish("new")
        assert "10.200.0.2:80" in loads[-1]

    asyncio.run(main())
