"""Test hosts for the overlay's kernel tests: network namespaces on one underlay bridge in
198.18.0.0/15 (never routed off the machine), and a way to run code inside one of them.

``in_host(name, fn)`` runs ``fn`` on a thread that entered the host's namespace: sockets,
``/proc/sys`` writes and threads it starts belong to that host, as they would in an agent
started there. Everything a ``HostSet`` made is removed by ``close``, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from shoal.netoverlay import netns

T = TypeVar("T")


def enter(name: str) -> None:
    """Move the calling thread into the namespace ``name`` (threads it starts later follow it)."""
    fd = os.open(netns.path_of(name), os.O_RDONLY)
    try:
        if netns._libc.setns(fd, netns.CLONE_NEWNET) != 0:
            raise OSError("setns failed")
    finally:
        os.close(fd)


def in_host(name: str, fn: Callable[[], T]) -> T:
    def entered() -> T:
        enter(name)
        return fn()

    return netns._in_thread(entered)


def sh(host: str, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command in a host (or allocation) namespace: for assertions only, not in shoal."""
    return subprocess.run(["nsenter", f"--net={netns.path_of(host)}", *argv], capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class HostSet:
    subnet: str  # the underlay, e.g. "198.18.201" (a /24)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: dict[str, str] = field(default_factory=dict)  # name -> underlay address
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"tu{self.tag}"

    def add(self, short: str) -> tuple[str, str]:
        """A host namespace on the underlay bridge: (namespace name, underlay address)."""
        name = f"t{self.tag}{short}"
        address = f"{self.subnet}.{len(self.hosts) + 2}"
        netns.create(name)
        self.namespaces.append(name)
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=self.bridge):
                ipr.link("add", ifname=self.bridge, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=self.bridge)[0], state="up")
            outer, inner = f"{name}o"[-15:], f"{name}i"[-15:]
            ipr.link("add", ifname=outer, kind="veth", peer={"ifname": inner})
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], master=ipr.link_lookup(ifname=self.bridge)[0],
                     state="up")
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=str(netns.path_of(name)))
        with netns.ipr_in(name) as h:
            i = h.link_lookup(ifname=inner)[0]
            h.link("set", index=i, ifname="eth0")
            h.addr("add", index=i, address=address, prefixlen=24)
            h.link("set", index=i, state="up")
            h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
        in_host(name, lambda: netns.interface_sysctl("eth0", "forwarding", "1"))
        self.hosts[name] = address
        return name, address

    def close(self) -> None:
        for name in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            with contextlib.suppress(OSError):
                netns.remove(name)
        with IPRoute() as ipr:  # the underlay veths go now, not when the kernel gets round to freeing a namespace
            for name in [*self.hosts, self.bridge]:
                for index in ipr.link_lookup(ifname=f"{name}o"[-15:] if name != self.bridge else name):
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=index)
