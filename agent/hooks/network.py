"""An allocation's network (Nomad's network hook), by the group's mode (``jobs.network.group_network``):

- ``bridge`` / ``overlay``: a network namespace shared by all the allocation's tasks (a pod), a
  veth on the node's bridge of that overlay network, an address of the node's subnet there, and
  its host ports published by DNAT (the node's nftables table). Reachable from every host.
- ``host``: the host's namespace; tasks bind their host ports themselves.
- ``none``: a namespace with loopback only.

In bridge and overlay modes the tasks' ``/etc/resolv.conf`` names the agent's DNS server on the
bridge's gateway (service discovery), when the agent runs one.

prerun builds (or, after an agent restart, adopts) it and reports the allocation's
``AllocNetworkStatus``; postrun releases all of it. A restarted agent keeps the address the
allocation had (saved in its state file) and never hands it to another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.agent.drivers.base import HOST_NETNS, Mount, TaskSpec
from shoal.agent.hooks.base import AllocHook, TaskHook
from shoal.agent.taskenv import runtime_env
from shoal.ids import DEFAULT_NAMESPACE
from shoal.jobs.model import TaskGroup
from shoal.jobs.network import MODE_BRIDGE, MODE_HOST, MODE_NONE, MODE_OVERLAY, group_network
from shoal.jobs.structs import AllocNetworkStatus, Allocation
from shoal.netoverlay import bridge
from shoal.netoverlay.nftrules import PortMapping
from shoal.netoverlay.overlay import NodeOverlay

PROTOCOLS = ("tcp", "udp")


Nameserver = Callable[[str], Awaitable[bool]]


@dataclass(slots=True, frozen=True)
class Networking:
    """What an agent gives its allocations' network hooks: its overlay, its own address, and its DNS
    server: ``nameserver(gateway)`` makes it answer on a bridge's gateway (False: it cannot)."""

    overlay: NodeOverlay
    host_ip: str
    nameserver: Nameserver | None = None


def resolv_conf(nameserver: str, namespace: str) -> str:
    """An allocation's /etc/resolv.conf: the agent's DNS server, searching its namespace's services
    (so that a plain ``web`` is ``web.service.shoal``, or ``web.service.NS.shoal`` in namespace NS)."""
    search = "service.shoal" if namespace == DEFAULT_NAMESPACE else f"service.{namespace}.shoal service.shoal"
    return f"# written by shoal: the agent's DNS server on this node's bridge\nnameserver {nameserver}\nsearch {search}\n"


def port_mappings(alloc: Allocation, address: str) -> list[PortMapping]:
    """Every host port of the allocation, TCP and UDP, to its address and ``to`` port."""
    return [PortMapping(p.value, proto, address, p.to or p.value) for p in alloc.ports for proto in PROTOCOLS]


def port_env(alloc: Allocation, mode: str, host_ip: str, address: str) -> dict[str, str]:
    """Nomad's port variables: PORT (what the task binds), HOST_PORT/IP/ADDR (where others reach it
    on the host), ALLOC_PORT/IP/ADDR (the same inside the allocation's network)."""
    values: dict[str, str] = {}
    inside_ip = address if mode in (MODE_BRIDGE, MODE_OVERLAY) else host_ip
    for p in alloc.ports:
        inside = p.value if mode == MODE_HOST else (p.to or p.value)
        values.update({
            f"PORT_{p.label}": str(inside),
            f"HOST_PORT_{p.label}": str(p.value),
            f"IP_{p.label}": host_ip,
            f"ADDR_{p.label}": f"{host_ip}:{p.value}",
            f"ALLOC_PORT_{p.label}": str(inside),
            f"ALLOC_IP_{p.label}": inside_ip,
            f"ALLOC_ADDR_{p.label}": f"{inside_ip}:{inside}",
        })
    return runtime_env(values)


class NetworkHook(AllocHook):
    name = "network"

    def __init__(self, alloc: Allocation, group: TaskGroup, networking: Networking | None,
                 restored: AllocNetworkStatus | None, on_status: Callable[[], None]):
        self.alloc = alloc
        self.mode, self.network = group_network(group)
        self.networking = networking
        self.restored = restored
        self.on_status = on_status
        self.status: AllocNetworkStatus | None = restored
        self.netns = HOST_NETNS if self.mode == MODE_HOST else ""  # set by prerun for the other modes
        self.nameserver = ""  # the agent's DNS server on the allocation's bridge ("": the host's resolv.conf)
        self._built = False

    def _overlay(self) -> NodeOverlay:
        if self.networking is None:
            raise RuntimeError(f"network mode {self.mode!r} needs the agent's networking, and this runner has none")
        return self.networking.overlay

    async def prerun(self) -> None:
        if self.mode == MODE_HOST:
            host_ip = self.networking.host_ip if self.networking else ""
            self._report(AllocNetworkStatus(mode=MODE_HOST, address=host_ip))
            return
        overlay = self._overlay()
        if self.mode == MODE_NONE:
            self.netns = await overlay.isolated_netns(self.alloc.id)
            self._built = True
            self._report(AllocNetworkStatus(mode=MODE_NONE, interface="lo"))
            return
        att = await overlay.attach(self.network)
        old = self.restored
        if old is not None and old.address and old.network == self.network and att.layout.contains(old.address) \
                and overlay.claim(self.network, self.alloc.id, old.address):
            address = old.address
        else:
            address = overlay.allocate(att, self.alloc.id)
        net = bridge.AllocNetwork(alloc_id=self.alloc.id, bridge=att.bridge, address=address, layout=att.layout,
                                  mtu=att.mtu)
        self._built = True
        self.netns = await overlay.setup_alloc(net)
        await overlay.publish(self.alloc.id, port_mappings(self.alloc, address))
        gateway = str(att.layout.gateway)
        if self.networking is not None and self.networking.nameserver is not None \
                and await self.networking.nameserver(gateway):
            self.nameserver = gateway
        self._report(AllocNetworkStatus(mode=self.mode, network=self.network, address=address,
                                        interface=bridge.INNER_IFNAME))

    def _report(self, status: AllocNetworkStatus) -> None:
        self.status = status
        self.on_status()

    async def update(self, alloc: Allocation) -> None:
        self.alloc = alloc  # an in-place update keeps the ports: nothing to re-publish

    async def postrun(self) -> None:
        """The tasks are gone: unpublish the ports, remove the veth and namespace, free the address."""
        if self.networking is None or not self._built:
            return
        overlay = self.networking.overlay
        await overlay.unpublish(self.alloc.id)
        await overlay.teardown_alloc(self.alloc.id)
        overlay.release(self.alloc.id)
        self._built = False


class NetworkTaskHook(TaskHook):
    """prestart: the task joins the allocation's namespace and learns its ports (Nomad's variables)."""

    name = "network"

    def __init__(self, alloc_hook: NetworkHook, joins: bool):
        self.alloc_hook = alloc_hook
        self.joins = joins  # the driver can join a namespace (raw_exec tasks stay on the host)

    async def prestart(self, spec: TaskSpec) -> None:
        h = self.alloc_hook
        if self.joins:
            spec.netns = h.netns
        host_ip = h.networking.host_ip if h.networking else "127.0.0.1"
        address = h.status.address if h.status is not None else ""
        mode = h.mode if self.joins else MODE_HOST
        spec.env.update(port_env(h.alloc, mode, host_ip, address))
        if self.joins and h.nameserver:
            path = Path(spec.alloc_dir) / "resolv.conf"
            path.write_text(resolv_conf(h.nameserver, h.alloc.namespace))
            spec.mounts.append(Mount(path, "/etc/resolv.conf", readonly=True))
