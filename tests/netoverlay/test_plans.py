"""The overlay's pure parts: subnet leases, addresses, peer entries, the nftables text."""

from __future__ import annotations

import pytest

from shoal.netoverlay import nftrules
from shoal.jobs.network import IpamError, OverlayConfig, lease_subnet
from shoal.netoverlay.ipam import SubnetLayout, pick_address
from shoal.netoverlay.vxlan_plan import Fdb, Neigh, Peer, PeerEntries, Route, diff, vtep_mac, wanted


def test_subnets_are_leased_lowest_free_first_and_never_twice():
    cfg = OverlayConfig(cidr="10.200.0.0/22", subnet_prefix=24)
    assert lease_subnet(cfg, []) == "10.200.0.0/24"
    assert lease_subnet(cfg, ["10.200.0.0/24", "10.200.2.0/24"]) == "10.200.1.0/24"
    assert lease_subnet(cfg, [f"10.200.{i}.0/24" for i in range(4)]) is None


def test_overlay_config_is_checked():
    with pytest.raises(IpamError, match="overlay CIDR '10.200.0.1/16'"):
        OverlayConfig(cidr="10.200.0.1/16").check()
    with pytest.raises(IpamError, match="prefix /16"):
        OverlayConfig(cidr="10.200.0.0/16", subnet_prefix=16).check()
    OverlayConfig().check()


def test_addresses_skip_the_vtep_gateway_and_broadcast():
    layout = SubnetLayout.of("10.200.7.0/29")
    assert (str(layout.vtep), str(layout.gateway)) == ("10.200.7.0", "10.200.7.1")
    assert pick_address(layout, []) == "10.200.7.2"
    assert pick_address(layout, ["10.200.7.2", "10.200.7.3"]) == "10.200.7.4"
    assert pick_address(layout, [f"10.200.7.{i}" for i in range(2, 7)]) is None  # .7 is the broadcast


def test_peer_entries_follow_the_lease_table():
    peers = [Peer("a", "198.18.0.2", "10.200.1.0/24"), Peer("b", "198.18.0.3", "10.200.2.0/24"),
             Peer("c", "198.18.0.4", "")]  # no lease yet: nothing to route
    want = wanted("a", "198.18.0.2", peers)
    mac = vtep_mac("10.200.2.0")
    assert mac == "0e:5e:0a:c8:02:00"
    assert want.neighs == {Neigh("10.200.2.0", mac)}
    assert want.fdbs == {Fdb(mac, "198.18.0.3")}
    assert want.routes == {Route("10.200.2.0/24", "10.200.2.0")}
    assert diff(want, want).empty()


def test_a_peer_that_moved_is_removed_and_added_again():
    old = wanted("a", "198.18.0.2", [Peer("b", "198.18.0.3", "10.200.2.0/24")])
    new = wanted("a", "198.18.0.2", [Peer("b", "198.18.0.9", "10.200.2.0/24")])
    d = diff(new, old)
    assert d.add.fdbs == {Fdb(vtep_mac("10.200.2.0"), "198.18.0.9")}
    assert d.remove.fdbs == {Fdb(vtep_mac("10.200.2.0"), "198.18.0.3")}
    assert not d.add.routes and not d.remove.routes
    gone = diff(PeerEntries(), old)
    assert len(gone.remove) == 3 and not len(gone.add)


def test_a_stale_lease_at_our_own_underlay_address_is_ignored():
    assert not len(wanted("new-id", "198.18.0.2", [Peer("old-id", "198.18.0.2", "10.200.1.0/24")]))


def test_ruleset_text_is_deterministic_and_isolates_networks():
    rs = nftrules.Ruleset(
        overlay_cidr="10.200.0.0/16", local_subnets=("10.200.1.0/24",),
        ports=[nftrules.PortMapping(18080, "tcp", "10.200.1.2", 80), nftrules.PortMapping(5353, "udp", "10.200.1.3", 53)],
        networks=[nftrules.NetworkSubnets("b", ("10.200.9.0/24",)), nftrules.NetworkSubnets("a", ("10.200.5.0/24",))])
    text = nftrules.render(rs)
    assert text == nftrules.render(rs)
    assert text.startswith("table ip shoal\ndelete table ip shoal\ntable ip shoal {\n")
    assert text.count("tcp dport 18080 dnat to 10.200.1.2:80") == 2  # prerouting and output
    assert "udp dport 5353 dnat to 10.200.1.3:53" in text
    a, b = nftrules.set_name("a"), nftrules.set_name("b")
    assert a != b and text.index(f"set {a}") < text.index(f"set {b}")
    assert f"ip saddr @{a} ip daddr 10.200.0.0/16 ip daddr != @{a} drop" in text


def test_one_network_needs_no_isolation_and_odd_names_are_safe_identifiers():
    text = nftrules.render(nftrules.Ruleset(overlay_cidr="10.200.0.0/16",
                                            networks=[nftrules.NetworkSubnets("default", ("10.200.1.0/24",))]))
    assert " set " not in text and "drop" not in text
    name = nftrules.set_name("front end/é")
    assert name.replace("_", "").isalnum() and name != nftrules.set_name("front_end__")


def test_chains_with_nothing_to_do_are_left_out():
    # Every base chain costs each packet crossing its hook, even empty: only masquerade stays.
    bare = nftrules.render(nftrules.Ruleset(overlay_cidr="10.200.0.0/16", local_subnets=("10.200.1.0/24",)))
    assert "chain postrouting" in bare
    assert "chain prerouting" not in bare and "chain output" not in bare and "chain forward" not in bare
    published = nftrules.render(nftrules.Ruleset(overlay_cidr="10.200.0.0/16",
                                                 ports=[nftrules.PortMapping(18080, "tcp", "10.200.1.2", 80)]))
    assert "chain prerouting" in published and "chain output" in published and "chain forward" not in published
