"""An allocation's service registrations, as a pure function of what the agent knows of it.

Each ``service`` block of the group (and of its tasks) is one registration (Nomad's
ServiceRegistration), with:

- the address and port it is reached at, by ``address_mode``: ``alloc`` the allocation's own
  address and the port inside it (``to``); ``host`` the node's address and the host port;
  ``auto`` (the default) the allocation's address when it has one (bridge and overlay modes),
  else the host's. A numeric ``port`` is taken as it is; no port registers port 0 (an A record,
  no usable SRV port).
- its health: a task's service is healthy while that task runs and every check of the service
  passes; a group's service while every main task and sidecar runs and its checks pass.
- the allocation's identity variables (``${NOMAD_JOB_NAME}``, ``${NOMAD_GROUP_NAME}``,
  ``${NOMAD_TASK_NAME}``, ``${NOMAD_ALLOC_INDEX}`` …) interpolated in names and tags; a name
  still not a DNS label afterwards is left out, and ``problems`` says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.jobs.model import Job, Service, Task, TaskGroup
from shoal.jobs.network import MODE_BRIDGE, MODE_OVERLAY
from shoal.jobs.structs import AllocNetworkStatus, Allocation, ServiceRegistration, service_name_error

_VAR = re.compile(r"\$\{(?:NOMAD|SHOAL)_([A-Z_]+)\}")


@dataclass(slots=True, frozen=True)
class Owner:
    """Where a service block sits: a task's (``task`` set) or the group's."""

    service: Service
    task: Task | None = None


def owners(group: TaskGroup) -> list[Owner]:
    return [Owner(s) for s in group.services] + [Owner(s, t) for t in group.tasks for s in t.services]


def identity(alloc: Allocation, job: Job, group: TaskGroup, task: Task | None) -> dict[str, str]:
    """The variables a service's name and tags may use (the ones known before any task runs)."""
    values = {"ALLOC_ID": alloc.id, "ALLOC_NAME": alloc.name, "ALLOC_INDEX": str(alloc.index), "JOB_ID": job.id,
              "JOB_NAME": job.name or job.id, "GROUP_NAME": group.name, "NAMESPACE": job.namespace}
    if task is not None:
        values["TASK_NAME"] = task.name
    return values


def interpolate(text: str, values: dict[str, str]) -> str:
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def address_and_port(service: Service, alloc: Allocation, group: TaskGroup, network: AllocNetworkStatus | None,
                     host_ip: str) -> tuple[str, int]:
    own = network.address if network is not None and network.mode in (MODE_BRIDGE, MODE_OVERLAY) else ""
    mode = service.address_mode or "auto"
    in_alloc = mode == "alloc" or (mode == "auto" and bool(own))
    address = (own or host_ip) if in_alloc else host_ip
    label = service.port
    if not label:
        return address, 0
    if label.isdigit():
        return address, int(label)
    for p in alloc.ports:
        if p.label == label:
            return address, (p.to or p.value) if in_alloc else p.value
    for net in group.networks:  # a port with only `to` and no host port (host mode never has one)
        for p in net.ports:
            if p.label == label:
                return address, p.to or p.static
    return address, 0


@dataclass(slots=True)
class Registrations:
    registrations: list[ServiceRegistration] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build(alloc: Allocation, job: Job, group: TaskGroup, network: AllocNetworkStatus | None, host_ip: str,
          datacenter: str, health: Callable[[Owner], tuple[bool, dict[str, str]]]) -> Registrations:
    """Every registration of the allocation; ``health`` says whether one service block is healthy now,
    and the status of each of its checks."""
    out = Registrations()
    for owner in owners(group):
        s = owner.service
        values = identity(alloc, job, group, owner.task)
        name = interpolate(s.name, values)
        why = service_name_error(name)
        if why is not None:
            out.problems.append(why)
            continue
        address, port = address_and_port(s, alloc, group, network, host_ip)
        if not address:
            out.problems.append(f"service {name!r}: the allocation has no address yet")
            continue
        healthy, checks = health(owner)
        where = owner.task.name if owner.task is not None else f"group-{group.name}"
        out.registrations.append(ServiceRegistration(
            id=f"_shoal-{alloc.id}-{where}-{name}-{s.port or 'none'}", service_name=name, namespace=alloc.namespace,
            node_id=alloc.node_id, datacenter=datacenter, job_id=alloc.job_id, alloc_id=alloc.id,
            task=owner.task.name if owner.task is not None else "", address=address, port=port,
            tags=[interpolate(t, values) for t in s.tags], healthy=healthy, checks=checks))
    return out
