"""The overlay's kernel plumbing between two host namespaces: VXLAN device, peers, bridges,
allocation namespaces; idempotent re-sync; everything removed afterwards."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from netoverlay.hosts import HostSet, in_host, sh
from shoal.netoverlay import bridge, netns, nft, nftrules
from shoal.netoverlay.ipam import SubnetLayout, pick_address
from shoal.netoverlay.vxlan import VxlanConfig, VxlanDevice, find_underlay
from shoal.netoverlay.vxlan_plan import Peer, wanted

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

SUBNETS = {"a": "10.200.1.0/24", "b": "10.200.2.0/24"}


@pytest.fixture
def hosts():
    hs = HostSet(subnet="198.18.201")
    try:
        yield hs
    finally:
        hs.close()


def _bring_up(host: str, underlay: str, subnet: str, peers: list[Peer]) -> dict[str, object]:
    def work() -> dict[str, object]:
        with IPRoute() as ipr:
            dev = VxlanDevice(ipr, VxlanConfig(), find_underlay(ipr, underlay), subnet)
            dev.ensure()
            first = dev.sync(wanted(host, underlay, peers))
            again = dev.sync(wanted(host, underlay, peers))
            layout = SubnetLayout.of(subnet)
            bridge.ensure_bridge(ipr, bridge.DEFAULT_BRIDGE, layout, dev.mtu)
            netns.interface_sysctl(dev.cfg.device, "forwarding", "1")
            address = pick_address(layout, [])
            alloc = bridge.AllocNetwork(alloc_id=f"alloc-{host}", bridge=bridge.DEFAULT_BRIDGE, address=address,
                                        layout=layout, mtu=dev.mtu)
            path = bridge.setup_alloc(ipr, alloc)
            bridge.setup_alloc(ipr, alloc)  # adopting what is there builds nothing twice
            return {"first": first, "again": again, "address": address, "path": path, "mtu": dev.mtu,
                    "alloc": alloc}

    return in_host(host, work)


def test_two_hosts_reach_each_others_allocations_over_vxlan(hosts):
    a, ua = hosts.add("a")
    b, ub = hosts.add("b")
    peers = [Peer(a, ua, SUBNETS["a"]), Peer(b, ub, SUBNETS["b"])]
    ra = _bring_up(a, ua, SUBNETS["a"], peers)
    rb = _bring_up(b, ub, SUBNETS["b"], peers)
    try:
        assert len(ra["first"].add) == 3 and ra["again"].empty()
        assert ra["mtu"] == 1450
        ping = subprocess.run(["nsenter", f"--net={ra['path']}", "ping", "-c", "2", "-W", "2", str(rb["address"])],
                              capture_output=True, text=True, timeout=15)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # the inner interface has the overlay's MTU, the default route goes through the gateway
        route = subprocess.run(["nsenter", f"--net={ra['path']}", "ip", "route"], capture_output=True, text=True)
        assert "default via 10.200.1.1" in route.stdout
        # a peer that leaves: its entries go, nothing else changes
        gone = in_host(a, lambda: _resync(a, ua, SUBNETS["a"], [Peer(a, ua, SUBNETS["a"])]))
        assert len(gone.remove) == 3 and not len(gone.add)
        assert "10.200.2.0/24" not in sh(a, "ip", "route").stdout
    finally:
        for host, r in ((a, ra), (b, rb)):
            in_host(host, lambda r=r: _teardown(r["alloc"].alloc_id))
    for host in (a, b):
        links = sh(host, "ip", "-o", "link").stdout
        assert "shv" not in links
    assert not (netns.NETNS_DIR / "shoal-alloc-" f"{a}").exists()


def _resync(host: str, underlay: str, subnet: str, peers: list[Peer]):
    with IPRoute() as ipr:
        dev = VxlanDevice(ipr, VxlanConfig(), find_underlay(ipr, underlay), subnet)
        dev.ensure()
        return dev.sync(wanted(host, underlay, peers))


def _teardown(alloc_id: str) -> None:
    with IPRoute() as ipr:
        bridge.teardown_alloc(ipr, alloc_id)
        VxlanDevice(ipr, VxlanConfig(), None, "10.200.0.0/24").remove()  # type: ignore[arg-type]
        bridge.remove_link(ipr, bridge.DEFAULT_BRIDGE)


def test_published_port_reaches_the_allocation_from_another_host_and_loopback(hosts, tmp_path):
    a, ua = hosts.add("a")
    b, ub = hosts.add("b")
    ra = _bring_up(a, ua, SUBNETS["a"], [Peer(a, ua, SUBNETS["a"])])
    (tmp_path / "index.html").write_text("hello from a\n")
    server = subprocess.Popen(["nsenter", f"--net={ra['path']}", "busybox", "httpd", "-f", "-p", "8080",
                               "-h", str(tmp_path)])
    try:
        rules = nftrules.Ruleset(overlay_cidr="10.200.0.0/16", local_subnets=(SUBNETS["a"],),
                                 ports=[nftrules.PortMapping(18080, "tcp", str(ra["address"]), 8080)])
        in_host(a, lambda: nft.load(nftrules.render(rules)))
        in_host(a, lambda: nft.load(nftrules.render(rules)))  # replacing it again is fine
        for host, url in ((b, f"http://{ua}:18080/"), (a, f"http://{ua}:18080/"), (a, "http://127.0.0.1:18080/")):
            got = _fetch(host, url)
            assert got.stdout == "hello from a\n", (host, url, got.stderr)
        listing = sh(a, "nft", "list", "table", "ip", "shoal").stdout
        assert listing.count("dnat to 10.200.1.2:8080") == 2
        in_host(a, nft.remove)
        in_host(a, nft.remove)  # and removing it when absent
        assert sh(a, "nft", "list", "tables").stdout.strip() == ""
    finally:
        server.kill()
        server.wait()
        in_host(a, lambda: _teardown(ra["alloc"].alloc_id))


def _fetch(host: str, url: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        # (Debian's busybox-static wget segfaults on -T: bound it with timeout instead)
        got = sh(host, "timeout", "3", "busybox", "wget", "-q", "-O", "-", url)
        if got.returncode == 0 or time.monotonic() > deadline:
            return got
        time.sleep(0.1)  # the server may still be binding its port
