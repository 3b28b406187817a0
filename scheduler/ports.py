"""Host ports: the group's ``network { port ... }`` asks, checked and assigned per node.

A static port (``static = 8080``) must be free on the node, wherever it lies
(inside the node's dynamic range or not); a dynamic one is picked from the
node's dynamic range (``Node.min_dynamic_port``..``max_dynamic_port``, by
default Nomad's 20000..32000), never one another live allocation on the node
holds, one the node reserves, or one this allocation asks statically. The ports
end up on the allocation (``Allocation.ports``) and in the node's tally, so two
allocations on one node never share a host port, whatever range the node had
when each was placed.

Failures are metrics dimensions, in Nomad's words: ``network: port collision``
(a static port is taken) and ``network: dynamic port selection failed`` (the
dynamic range has too few free ports).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.jobs.model import TaskGroup
from shoal.jobs.structs import AllocatedPort
from shoal.scheduler.usage import PORT_COLLISION, PORTS_EXHAUSTED, NodeTally

__all__ = ["PORT_COLLISION", "PORTS_EXHAUSTED", "PortAsk", "assign_ports", "port_exhausted"]


@dataclass(slots=True, frozen=True)
class PortAsk:
    """The host ports one allocation of a group needs."""

    static: tuple[tuple[str, int, int], ...]  # (label, host port, to)
    dynamic: tuple[tuple[str, int], ...]  # (label, to)
    static_values: frozenset[int]

    @classmethod
    def for_group(cls, group: TaskGroup) -> PortAsk | None:
        """None when the group asks for no ports."""
        static: list[tuple[str, int, int]] = []
        dynamic: list[tuple[str, int]] = []
        for net in group.networks:
            for p in net.ports:
                if p.static > 0:
                    static.append((p.label, p.static, p.to))
                else:
                    dynamic.append((p.label, p.to))
        if not static and not dynamic:
            return None
        return cls(tuple(static), tuple(dynamic), frozenset(v for _, v, _ in static))


def port_exhausted(tally: NodeTally, ask: PortAsk) -> str | None:
    """None when the node can give ``ask`` its ports; else the dimension that failed.
    Static ports inside the node's dynamic range count against it (taken first)."""
    static = ask.static_values
    if static and not static.isdisjoint(tally.ports):
        return PORT_COLLISION
    if len(static) < len(ask.static):
        return PORT_COLLISION  # the group asks one static port twice
    if ask.dynamic:  # inlined (the rank loop calls this for every node it looks at)
        low, high = tally.min_dynamic, tally.max_dynamic
        free = high - low + 1 - tally.dynamic_used
        if static:
            for v in static:
                if low <= v <= high:
                    free -= 1
        if free < len(ask.dynamic):
            return PORTS_EXHAUSTED
    return None


def assign_ports(tally: NodeTally, ask: PortAsk) -> list[AllocatedPort]:
    """Take the ports of ``ask`` on the node (``port_exhausted`` said they fit) and
    return them for the allocation. Dynamic ports are searched from where the
    node's previous search stopped, so a port just freed is not handed out again
    at once."""
    out = [AllocatedPort(label, value, to) for label, value, to in ask.static]
    taken = tally.ports
    if ask.dynamic:
        static = ask.static_values
        low, high = tally.min_dynamic, tally.max_dynamic
        chosen: set[int] = set()
        port = tally.next_dynamic
        for label, to in ask.dynamic:
            for _ in range(high - low + 1):
                if not low <= port <= high:
                    port = low
                if port not in taken and port not in static and port not in chosen:
                    break
                port += 1
            else:  # pragma: no cover - port_exhausted guards against it
                raise RuntimeError("no free dynamic port")
            out.append(AllocatedPort(label, port, to))
            chosen.add(port)
            port += 1
        tally.next_dynamic = port if port <= high else low
    tally.take_ports(p.value for p in out)
    return out
