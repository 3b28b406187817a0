"""The underlay of a dev cluster: its subnet, a bridge, one namespace and veth per host, partitions.

A cluster takes index K, the first free one: subnet ``198.18.K.0/24`` (a benchmarking
range that is never routed off the machine), bridge ``shoalbrK`` with the runner's
address ``198.18.K.1``. A lock file per index under :data:`STATE_DIR` says who owns it,
and a state file records what it made, so the next cluster to take K sweeps what an
owner killed with SIGKILL left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shoal.devcluster.cleanup import sweep
from shoal.devcluster.hosts import NETNS_DIR, Host

STATE_DIR = Path("/run/shoal-devcluster")
NFT_TABLE = "shoal_partition"
MAX_INDEX = 256  # 198.18.0.0/24 .. 198.18.255.0/24, all inside 198.18.0.0/15
PARTITION_MODES = ("nft", "link")


@dataclass(slots=True)
class Subnet:
    """The network index a cluster holds (its lock file stays open, and locked, until :meth:`release`)."""

    index: int
    lock_fd: int

    @property
    def cidr(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"shoalbr{self.index}"

    @property
    def gateway(self) -> str:
        return f"198.18.{self.index}.1"

    def address(self, i: int) -> str:
        """The address of the cluster's ``i``-th host."""
        return f"198.18.{self.index}.{10 + i}"

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"net-{self.index}.json"

    def record(self, root: Path, hosts: Iterable[Host]) -> None:
        """Write down what this cluster makes, for whoever sweeps after a crash."""
        hosts = list(hosts)
        state = {"pid": os.getpid(), "root": str(root), "bridge": self.bridge,
                 "netns": [h.netns for h in hosts], "veths": [h.veth for h in hosts]}
        self.state_file.write_text(json.dumps(state))

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.state_file.unlink()
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)  # releases the flock


def claim_subnet() -> Subnet:
    """Lock the first free index (one no other process holds, and no other network uses)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    used = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    for k in range(MAX_INDEX):
        if f"198.18.{k}." in used and not (STATE_DIR / f"net-{k}.json").exists():
            continue  # somebody else's network, not a dev cluster's
        fd = os.open(STATE_DIR / f"net-{k}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        subnet = Subnet(k, fd)
        _sweep_stale(subnet)
        return subnet
    raise RuntimeError(f"no free dev cluster network index under {STATE_DIR}")


def _sweep_stale(subnet: Subnet) -> None:
    """Remove what a dead owner of this index left (we hold its lock, so its owner is gone)."""
    k = subnet.index
    if not subnet.state_file.exists():
        netns = [p.name for p in NETNS_DIR.glob(f"shoal{k}-*")] if NETNS_DIR.is_dir() else []
        if netns:
            sweep(None, netns, subnet.bridge, [])
        return
    try:
        state = json.loads(subnet.state_file.read_text())
    except (OSError, ValueError):
        state = {}
    print(f"devcluster: sweeping what a dead cluster (pid {state.get('pid')}) left on {subnet.cidr}", file=sys.stderr)
    root = Path(state["root"]) if state.get("root") else None
    sweep(root, state.get("netns") or [], state.get("bridge") or subnet.bridge, state.get("veths") or [])
    with contextlib.suppress(OSError):
        subnet.state_file.unlink()


def make_network(subnet: Subnet, hosts: Iterable[Host]) -> None:
    """The bridge (with the runner's address on it), and each host's namespace with ``eth0`` on the bridge."""
    from pyroute2 import IPRoute, netns as pnetns

    hosts = list(hosts)
    with IPRoute() as ip:
        ip.link("add", ifname=subnet.bridge, kind="bridge")
        br = ip.link_lookup(ifname=subnet.bridge)[0]
        # The runner's own address on the underlay: a connected route to a local bridge only.
        ip.addr("add", index=br, address=subnet.gateway, prefixlen=24)
        ip.link("set", index=br, state="up")
        for h in hosts:
            pnetns.create(h.netns)
            ip.link("add", ifname=h.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": h.netns})
            v = ip.link_lookup(ifname=h.veth)[0]
            ip.link("set", index=v, master=br, state="up")
    for h in hosts:
        with IPRoute(netns=h.netns) as ns:
            eth = ns.link_lookup(ifname="eth0")[0]
            ns.addr("add", index=eth, address=h.address, prefixlen=24)
            ns.link("set", index=eth, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


# ------------------------------------------------------------------ partitions
def partition(h: Host, mode: str = "nft") -> None:
    """Cut the host off the underlay in both directions (a no-op if it already is).

    ``nft``: an nftables table in the host's namespace drops everything in and out of its
    underlay interface (loopback inside the host still works). ``link``: its veth is set down.
    """
    if h.partitioned:
        return
    if mode == "nft":
        rules = (
            f"table inet {NFT_TABLE} {{\n"
            "  chain input { type filter hook input priority -10; policy accept; iifname \"eth0\" drop; }\n"
            "  chain output { type filter hook output priority -10; policy accept; oifname \"eth0\" drop; }\n"
            "}\n"
        )
        subprocess.run([*h.nsenter(), "nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    elif mode == "link":
        _set_link(h, "down")
    else:
        raise ValueError(f"unknown partition mode {mode!r} ({' or '.join(PARTITION_MODES)})")
    h.partitioned = mode


def heal(h: Host) -> None:
    if h.partitioned == "nft":
        subprocess.run([*h.nsenter(), "nft", "delete", "table", "inet", NFT_TABLE], check=True, capture_output=True)
    elif h.partitioned == "link":
        _set_link(h, "up")
    h.partitioned = None


def _set_link(h: Host, state: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        ip.link("set", index=ip.link_lookup(ifname=h.veth)[0], state=state)
