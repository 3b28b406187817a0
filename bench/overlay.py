"""Allocation-to-allocation TCP throughput across two hosts on shoal's overlay, against a
hand-built kernel VXLAN and the raw underlay between the same two host namespaces, and the
seconds from a new node joining until every other node reaches its subnet.

Hosts are network namespaces on one underlay bridge in 198.18.0.0/15 (``tests/netoverlay/
hosts.py``); overlays use 10.200.0.0/16 inside them only. Each shoal host runs the agent's
own ``NodeOverlay`` on an event loop of its own, on a thread inside the host's namespace:
the subnet lease, the VXLAN device, the default bridge, the sysctls, shoal's nftables table,
the lease watch that programs the peers and the allocation's namespace (``setup_alloc``) are
all the agent's code path. Only the servers are replaced: an in-process lease table answers
``Network.Lease`` (the subnet from ``shoal.jobs.network.lease_subnet``, as the FSM picks it)
and the ``Network.Leases`` blocking query, so the join figure measures the agent's side
(watch wake-up, peer sync, the new node's build), not a Raft commit.

The paths, measured alternately (``--rounds`` rounds, medians reported; iperf3 is not pinned
to CPUs: pinning its client and server apart halves the VXLAN paths here and not the underlay):

1. shoal: iperf3 between one allocation namespace per host: veth -> bridge ``shoal0`` ->
   routed onto ``shoal.vx`` -> underlay -> ``shoal.vx`` -> bridge -> veth. Shoal's nftables
   table is loaded in both hosts, as the agent leaves it.
2. kernel: the same topology built by hand with ``ip`` in the same two host namespaces: a
   second VXLAN device (VNI 4300, UDP port 4790, learning off, MTU 1450), a bridge with a
   gateway address, a veth into a namespace, static neighbour, FDB and onlink route entries.
   Same MTU, same number of hops, the same kernel objects (a VXLAN device straight between
   the hosts would leave out the veth and bridge hops shoal's allocations need and credit
   their cost to shoal): ``ratio_to_raw_vxlan`` isolates what shoal adds, the way it
   configures those objects and its nftables table. The table is removed from both hosts
   while this path runs, so the baseline pays none of the netfilter hooks and connection
   tracking shoal brings along.
3. the same hand-built path with shoal's table loaded in both hosts: what is left of the
   gap once both pay for the table (``ratio_to_vxlan_with_shoal_nftables``). The devices
   match the hand-built ones attribute for attribute (``ip -d link``: VXLAN flags, MTU,
   offloads) and shoal's path is as fast as the hand-built one with the table loaded: the
   gap to the bare kernel is netfilter. Every base chain costs each packet crossing its hook,
   empty or not (one empty IPv4 filter chain in a namespace that had none: ~9% of forwarding here), so the table holds only the
   chains with work to do: with no published port and one network, only the postrouting
   masquerade and the connection tracking it needs (~3-5% here). ``notrack`` for overlay
   traffic, ``nf_conntrack_checksum=0`` and ``bridge-nf-call-iptables=0`` won back little,
   and a flowtable fast path needs ``nf_flow_table``, which this kernel lacks.
4. underlay: iperf3 between the host namespaces' underlay addresses (MTU 1500), shoal's
   table removed too.

Join: with hosts a and b up, pings from a's and b's allocations to the gateway of the subnet
a new host c will lease start first (``ping -D -i 0.01 -c N``: bounded, stamped, read
line by line and ended at its first reply); then c's ``NodeOverlay`` starts. The figure is
the later of the two first replies minus the moment c's lease entered the table (resolution
about 10 ms). Reaching c's gateway needs both directions: a's and b's routes to c, c's to
them, and c's bridge up.

Prints a table, then one JSON line. Needs root and iperf3; removes every namespace, link and
process it made, also on failure or Ctrl-C.
Usage: python bench/overlay.py [--seconds 5] [--rounds 3] [--omit 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from netoverlay.hosts import HostSet, enter, in_host  # noqa: E402
from raft_write import cpu_times, steal_percent  # noqa: E402  (bench/ is this script's directory)

from shoal import log  # noqa: E402
from shoal.jobs.network import DEFAULT_NETWORK, OverlayConfig, lease_subnet  # noqa: E402
from shoal.jobs.structs import NODE_READY  # noqa: E402
from shoal.netoverlay import nft  # noqa: E402
from shoal.netoverlay.bridge import AllocNetwork, netns_name  # noqa: E402
from shoal.netoverlay.ipam import SubnetLayout  # noqa: E402
from shoal.netoverlay.overlay import NodeOverlay  # noqa: E402
from shoal.netoverlay.vxlan import DEFAULT_PORT, DEFAULT_VNI  # noqa: E402

T = TypeVar("T")
UNDERLAY = "198.18.210"  # a /24 on the bench's own underlay bridge
KERNEL_VNI, KERNEL_PORT = 4300, 4790
KERNEL_SUBNETS = ("10.200.250", "10.200.251")  # the hand-built path's two /24s
KERNEL_MTU = 1450  # the underlay's 1500 less VXLAN's 50, as shoal sets it
IPERF_PORT = 5201
LOOP_TIMEOUT = 30.0
PING_INTERVAL = 0.01


# --- the servers' side: a lease table ---
@dataclass(slots=True)
class LeaseTable:
    """What ``Network.Lease`` and ``Network.Leases`` answer, for NodeOverlays on several threads."""

    cfg: OverlayConfig = field(default_factory=OverlayConfig)
    index: int = 1
    leases: list[dict[str, str]] = field(default_factory=list)
    leased_at: dict[str, float] = field(default_factory=dict)  # node id -> time.time() its lease was written
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def next_subnet(self) -> str:
        with self._lock:
            subnet = lease_subnet(self.cfg, [le["subnet"] for le in self.leases])
        if subnet is None:
            raise RuntimeError("the overlay is full")
        return subnet

    def lease(self, node_id: str, network: str, underlay: str) -> dict[str, Any]:
        with self._lock:
            held = [le for le in self.leases if le["node_id"] == node_id and le["network"] == network]
            if held:
                subnet = held[0]["subnet"]
            else:
                subnet = lease_subnet(self.cfg, [le["subnet"] for le in self.leases]) or ""
                self.leases.append({"network": network, "node_id": node_id, "subnet": subnet, "underlay": underlay})
                self.index += 1
                self.leased_at[node_id] = time.time()
            index, waiters = self.index, list(self._waiters)
        for loop, ev in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(ev.set)
        return {"index": index, "subnet": subnet, "network": network, "cidr": self.cfg.cidr,
                "subnet_prefix": self.cfg.subnet_prefix, "vni": DEFAULT_VNI, "port": DEFAULT_PORT}

    async def follow(self, min_index: int, wait: float) -> dict[str, Any]:
        """The blocking query: returns once the index passes ``min_index`` or ``wait`` is over."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(entry)
            index = self.index
        try:
            if index <= min_index:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(entry[1].wait(), wait)
        finally:
            with self._lock:
                self._waiters.remove(entry)
        with self._lock:
            return {"index": self.index, "leases": [dict(le) for le in self.leases],
                    "nodes": {le["node_id"]: NODE_READY for le in self.leases}}

    async def call(self, method: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        if method == "Network.Lease":
            return self.lease(str(req["node_id"]), str(req["network"]), str(req["underlay"]))
        if method == "Network.Leases":
            return await self.follow(int(req.get("min_index") or 0), float(req.get("wait") or 0))
        raise ValueError(f"the bench's lease table does not answer {method}")


# --- an agent's thread in a host namespace ---
class HostLoop:
    """An event loop on a thread inside a host's namespace (the threads it starts stay there)."""

    def __init__(self, host: str):
        self.host = host
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"bench-{host}", daemon=True)
        self.thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            enter(self.host)
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        asyncio.set_event_loop(self.loop)
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = LOOP_TIMEOUT) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass(slots=True)
class ShoalHost:
    name: str
    underlay: str
    loop: HostLoop
    overlay: NodeOverlay | None = None
    alloc: AllocNetwork | None = None

    @property
    def alloc_netns(self) -> str:
        assert self.alloc is not None
        return self.alloc.netns

    async def bring_up(self, table: LeaseTable, alloc_id: str | None) -> None:
        """What the agent does at start, and for one bridge-mode allocation."""
        self.overlay = ov = NodeOverlay(table.call, self.name, self.underlay)
        await ov.start()
        if alloc_id is None:
            return
        att = await ov.attach(DEFAULT_NETWORK)
        self.alloc = AllocNetwork(alloc_id, att.bridge, ov.allocate(att, alloc_id), att.layout, att.mtu)
        await ov.setup_alloc(self.alloc)

    async def tear_down(self) -> None:
        """The agent's way out: the allocation's network released, the node leaves the overlay."""
        if self.overlay is None:
            return
        if self.alloc is not None:
            await self.overlay.teardown_alloc(self.alloc.alloc_id)
        await self.overlay.stop(leave=True)


# --- commands in namespaces ---
def _ns_argv(netns_name: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns_name}", *argv]


def ip(netns_name: str, *args: str) -> None:
    res = subprocess.run(_ns_argv(netns_name, "ip", *args), capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {netns_name}: {res.stderr.strip()}")


@dataclass(slots=True, frozen=True)
class KernelSide:
    """One host's end of the hand-built path."""

    host: str
    underlay: str
    netns: str  # the namespace standing in for an allocation
    prefix: str  # e.g. 10.200.250 (a /24)

    @property
    def vtep(self) -> str:
        return f"{self.prefix}.0"

    @property
    def address(self) -> str:
        return f"{self.prefix}.2"

    @property
    def mac(self) -> str:
        return "0e:4b:" + ":".join(f"{int(o):02x}" for o in self.vtep.split("."))


def build_kernel_side(k: KernelSide) -> None:
    """flannel's vxlan scheme by hand: device, bridge with the gateway, veth into ``k.netns``."""
    h, mtu = k.host, str(KERNEL_MTU)
    ip(h, "link", "add", "kvx", "type", "vxlan", "id", str(KERNEL_VNI), "dstport", str(KERNEL_PORT),
       "local", k.underlay, "dev", "eth0", "nolearning")
    ip(h, "link", "set", "kvx", "address", k.mac, "mtu", mtu, "up")
    ip(h, "addr", "add", f"{k.vtep}/32", "dev", "kvx")
    ip(h, "link", "add", "kbr0", "mtu", mtu, "type", "bridge")
    ip(h, "addr", "add", f"{k.prefix}.1/24", "dev", "kbr0")
    ip(h, "link", "set", "kbr0", "up")
    ip(h, "link", "add", "kvh", "mtu", mtu, "type", "veth", "peer", "name", "kvp", "mtu", mtu)
    ip(h, "link", "set", "kvp", "netns", k.netns)
    ip(h, "link", "set", "kvh", "master", "kbr0", "up")
    for dev in ("kvx", "kbr0"):
        in_host(h, lambda dev=dev: Path("/proc/sys/net/ipv4/conf", dev, "forwarding").write_text("1"))
    n = k.netns
    ip(n, "link", "set", "lo", "up")
    ip(n, "link", "set", "kvp", "name", "eth0")
    ip(n, "addr", "add", f"{k.address}/24", "dev", "eth0")
    ip(n, "link", "set", "eth0", "up")
    ip(n, "route", "add", "default", "via", f"{k.prefix}.1")


def add_kernel_peer(k: KernelSide, peer: KernelSide) -> None:
    ip(k.host, "neigh", "add", peer.vtep, "lladdr", peer.mac, "dev", "kvx", "nud", "permanent")
    subprocess.run(_ns_argv(k.host, "bridge", "fdb", "append", peer.mac, "dev", "kvx", "dst", peer.underlay),
                   check=True, capture_output=True, timeout=10)
    ip(k.host, "route", "add", f"{peer.prefix}.0/24", "via", peer.vtep, "dev", "kvx", "onlink")


# --- measurements ---
@dataclass(slots=True, frozen=True)
class Throughput:
    gbit_per_s: float
    retransmits: int
    sender_cpu_percent: float
    receiver_cpu_percent: float


def iperf(client_netns: str, server: str, seconds: float, omit: int) -> Throughput:
    """One bounded iperf3 run from ``client_netns`` to the server at ``server`` (retried while it starts)."""
    argv = _ns_argv(client_netns, "iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", str(seconds), "-O", str(omit),
                    "-J", "--connect-timeout", "2000")
    for _ in range(50):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + omit + 20)
        data = json.loads(res.stdout or "{}")
        error = str(data.get("error") or ("" if res.returncode == 0 else res.stderr.strip() or "iperf3 failed"))
        if not error:
            end = data["end"]
            cpu = end["cpu_utilization_percent"]
            return Throughput(end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"].get("retransmits", 0)),
                              float(cpu["host_total"]), float(cpu["remote_total"]))
        if "unable to connect" not in error:
            break
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 from {client_netns} to {server}: {error}")


def start_ping(procs: list[subprocess.Popen[str]], netns_name: str, address: str, deadline: float) -> subprocess.Popen[str]:
    """A ping sending every 10 ms for ``deadline`` seconds at most (``first_reply`` ends it sooner). Bounded by
    count: with ``-w`` ping stops at the first error (the "net unreachable" before the peer is known)."""
    count = str(max(1, round(deadline / PING_INTERVAL)))
    p = subprocess.Popen(_ns_argv(netns_name, "ping", "-n", "-D", "-i", str(PING_INTERVAL), "-c", count, "-W", "1",
                                  address), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    return p


REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")


def first_reply(p: subprocess.Popen[str]) -> float | None:
    """The wall-clock time ping stamped on its first reply (it writes line by line), None if none
    came before its deadline; the ping is ended either way."""
    try:
        assert p.stdout is not None
        for line in p.stdout:
            m = REPLY.match(line)
            if m:
                return float(m.group(1))
        return None
    finally:
        p.kill()
        p.wait()


def reachable(procs: list[subprocess.Popen[str]], netns_name: str, address: str, deadline: float = 10.0) -> None:
    if first_reply(start_ping(procs, netns_name, address, deadline)) is None:
        raise RuntimeError(f"{address} unreachable from {netns_name} within {deadline} s")


# --- the run ---
@dataclass(slots=True)
class Bench:
    hosts: HostSet
    table: LeaseTable = field(default_factory=LeaseTable)
    shoal: list[ShoalHost] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def shoal_host(self, short: str, alloc: bool) -> tuple[ShoalHost, Any]:
        """A host namespace whose agent-side overlay is starting; returns it and the start's future."""
        name, underlay = self.hosts.add(short)
        host = ShoalHost(name, underlay, HostLoop(name))
        self.shoal.append(host)
        alloc_id = f"bench-{self.hosts.tag}-{short}" if alloc else None
        if alloc_id is not None:
            self.hosts.namespaces.append(netns_name(alloc_id))  # removed with the hosts if the agent's way fails
        return host, host.loop.submit(host.bring_up(self.table, alloc_id))

    def serve(self, netns_name: str) -> None:
        self.procs.append(subprocess.Popen(_ns_argv(netns_name, "iperf3", "-s", "-p", str(IPERF_PORT)),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))

    def shoal_tables(self, loaded: bool) -> None:
        """Shoal's nftables table in both hosts as its firewall rendered it, or none."""
        for h in self.shoal:
            fw = h.overlay.firewall if h.overlay is not None else None
            if fw is not None:
                text = fw.render()
                in_host(h.name, (lambda t=text: nft.load(t)) if loaded else nft.remove)

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for h in self.shoal:
            with contextlib.suppress(Exception):
                h.loop.run(h.tear_down())
            h.loop.close()
        self.hosts.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(HostSet(subnet=UNDERLAY, tag=args.tag))
    try:
        return _measure(bench, args)
    finally:
        bench.close()


def _measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    a, started_a = bench.shoal_host("a", alloc=True)
    started_a.result(LOOP_TIMEOUT)
    b, started_b = bench.shoal_host("b", alloc=True)
    started_b.result(LOOP_TIMEOUT)
    assert a.alloc is not None and b.alloc is not None
    kernel = []
    for host, prefix in zip((a, b), KERNEL_SUBNETS):
        ns = f"t{bench.hosts.tag}k{host.name[-1]}"
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
        bench.hosts.namespaces.append(ns)
        kernel.append(KernelSide(host.name, host.underlay, ns, prefix))
        build_kernel_side(kernel[-1])
    add_kernel_peer(kernel[0], kernel[1])
    add_kernel_peer(kernel[1], kernel[0])
    for ns in (b.alloc_netns, kernel[1].netns, b.name):
        bench.serve(ns)
    reachable(bench.procs, a.alloc_netns, b.alloc.address)
    reachable(bench.procs, kernel[0].netns, kernel[1].address)

    # path -> (client namespace, server address, shoal's nftables table loaded in both hosts)
    paths = {"shoal_overlay": (a.alloc_netns, b.alloc.address, True),
             "kernel_vxlan": (kernel[0].netns, kernel[1].address, False),
             "kernel_vxlan_with_shoal_nftables": (kernel[0].netns, kernel[1].address, True),
             "underlay": (a.name, b.underlay, False)}
    results: dict[str, list[Throughput]] = {p: [] for p in paths}
    machine = cpu_times()
    for _ in range(args.rounds):
        for path, (client, server, table) in paths.items():
            bench.shoal_tables(loaded=table)
            results[path].append(iperf(client, server, args.seconds, args.omit))
    bench.shoal_tables(loaded=True)
    steal = steal_percent(machine, cpu_times())

    join = measure_join(bench, a, b, args.join_deadline)
    med = {p: statistics.median(t.gbit_per_s for t in rs) for p, rs in results.items()}
    out: dict[str, Any] = {f"{p}_gbit_per_s": round(v, 3) for p, v in med.items()}
    out["ratio_to_raw_vxlan"] = round(med["shoal_overlay"] / med["kernel_vxlan"], 3)
    out["ratio_to_underlay"] = round(med["shoal_overlay"] / med["underlay"], 3)
    out["ratio_to_vxlan_with_shoal_nftables"] = round(med["shoal_overlay"] / med["kernel_vxlan_with_shoal_nftables"], 3)
    out.update(join)
    out.update({f"{p}_rounds_gbit_per_s": [round(t.gbit_per_s, 3) for t in rs] for p, rs in results.items()})
    out.update({f"{p}_retransmits": sum(t.retransmits for t in rs) for p, rs in results.items()})
    out.update({"overlay_mtu": a.alloc.mtu, "rounds": args.rounds, "seconds_per_measurement": args.seconds,
                "cpu_steal_percent": steal})
    print_table(results, out)
    return out


def measure_join(bench: Bench, a: ShoalHost, b: ShoalHost, deadline: float) -> dict[str, Any]:
    subnet = bench.table.next_subnet()
    gateway = str(SubnetLayout.of(subnet).gateway)
    pings = [start_ping(bench.procs, h.alloc_netns, gateway, deadline) for h in (a, b)]
    with ThreadPoolExecutor(max_workers=len(pings)) as readers:
        firsts = [readers.submit(first_reply, p) for p in pings]
        time.sleep(0.05)  # both are sending before c exists
        c, started_c = bench.shoal_host("c", alloc=False)
        started_c.result(LOOP_TIMEOUT)
        replies = [f.result(deadline + 5) for f in firsts]
    t0 = bench.table.leased_at[c.name]
    if {"node_id": c.name, "network": DEFAULT_NETWORK, "subnet": subnet, "underlay": c.underlay} not in bench.table.leases:
        raise RuntimeError(f"c was expected to lease {subnet} (the subnet pinged): {bench.table.leases}")
    if any(r is None for r in replies):
        raise RuntimeError(f"c's gateway {gateway} was not reachable from a and b within {deadline} s: {replies}")
    seen = [r - t0 for r in replies if r is not None]
    return {"join_to_reachable_seconds": round(max(seen), 3),
            "join_reachable_from_each_seconds": [round(s, 3) for s in seen]}


def print_table(results: dict[str, list[Throughput]], out: dict[str, Any]) -> None:
    names = {"shoal_overlay": "shoal overlay (alloc -> alloc)", "kernel_vxlan": "kernel VXLAN, hand-built",
             "kernel_vxlan_with_shoal_nftables": "  the same, shoal's table loaded", "underlay": "raw underlay (host -> host)"}
    rounds = len(next(iter(results.values())))
    print(f"{'path':32}" + "".join(f"{f'round {i + 1}':>10}" for i in range(rounds))
          + f"{'median':>10}  Gbit/s   retransmits  cpu% snd/rcv (medians)")
    for path, rs in results.items():
        cells = "".join(f"{t.gbit_per_s:10.2f}" for t in rs)
        snd = statistics.median(t.sender_cpu_percent for t in rs)
        rcv = statistics.median(t.receiver_cpu_percent for t in rs)
        print(f"{names[path]:32}{cells}{out[f'{path}_gbit_per_s']:10.2f}  {sum(t.retransmits for t in rs):20d}"
              f"  {snd:5.0f}/{rcv:.0f}")
    print(f"ratio to raw VXLAN {out['ratio_to_raw_vxlan']:.3f} (target >= 0.9), ratio to underlay "
          f"{out['ratio_to_underlay']:.3f}; overlay MTU {out['overlay_mtu']}, CPU steal {out['cpu_steal_percent']}%")
    print(f"new node joining -> reachable from every other node: {out['join_to_reachable_seconds']:.3f} s "
          f"(each: {out['join_reachable_from_each_seconds']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 measurement")
    ap.add_argument("--omit", type=int, default=1, help="seconds of each measurement's start left out (TCP ramp-up)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the paths, alternating")
    ap.add_argument("--join-deadline", type=float, default=10.0, help="seconds to wait for the new node's subnet")
    ap.add_argument("--tag", default=uuid.uuid4().hex[:5], help="in the name of every namespace and link made (5 hex)")
    args = ap.parse_args()
    log.configure(level="warning", stream=sys.stderr)

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
