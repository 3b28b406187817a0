"""Cluster records the servers keep and agents read: nodes, allocations, evaluations.

Records stored in the state are never mutated in place: a change replaces the
record (``dataclasses.replace``), so a read-only snapshot can share them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shoal.jobs.model import Job, Resources

# Node status
NODE_INIT, NODE_READY, NODE_DOWN = "initializing", "ready", "down"
# Allocation desired status
DESIRED_RUN, DESIRED_STOP, DESIRED_EVICT = "run", "stop", "evict"
# Allocation client status
ALLOC_PENDING, ALLOC_RUNNING, ALLOC_COMPLETE, ALLOC_FAILED, ALLOC_LOST = (
    "pending", "running", "complete", "failed", "lost",
)
CLIENT_TERMINAL = (ALLOC_COMPLETE, ALLOC_FAILED, ALLOC_LOST)
# Evaluation status
EVAL_PENDING, EVAL_COMPLETE, EVAL_FAILED, EVAL_BLOCKED, EVAL_CANCELED = (
    "pending", "complete", "failed", "blocked", "canceled",
)
# Task states
TASK_PENDING, TASK_RUNNING, TASK_DEAD = "pending", "running", "dead"
# A node's dynamic host ports (inclusive), Nomad's client min_dynamic_port/max_dynamic_port and defaults
DEFAULT_MIN_DYNAMIC_PORT, DEFAULT_MAX_DYNAMIC_PORT = 20000, 32000
LOWEST_DYNAMIC_PORT, HIGHEST_PORT = 1024, 65535  # a dynamic range stays clear of the well-known ports


@dataclass(slots=True)
class NodeResources:
    cpu: int = 0  # MHz, total
    memory: int = 0  # MB
    disk: int = 0  # MB
    cores: int = 0


@dataclass(slots=True)
class AllocatedPort:
    """A host port an allocation holds on its node: ``label`` from the group's
    network, ``value`` the host port, ``to`` the port inside the task (0: same)."""

    label: str = ""
    value: int = 0
    to: int = 0


@dataclass(slots=True)
class AllocNetworkStatus:
    """Where an allocation is reachable, as its agent set it up (Nomad's AllocNetworkStatus)."""

    mode: str = ""  # bridge | overlay | host | none
    network: str = ""  # the overlay network ("default" for bridge mode)
    address: str = ""  # the allocation's own address ("" in host and none modes)
    interface: str = ""  # its interface inside the allocation's namespace


@dataclass(slots=True)
class SubnetLease:
    """A node's subnet on an overlay network (flannel's lease), kept by the servers. Held until
    the node is purged: an agent restarted on the same node gets the same subnet back."""

    network: str = "default"
    node_id: str = ""
    subnet: str = ""  # CIDR
    underlay: str = ""  # the node's address that other nodes send its VXLAN traffic to
    create_index: int = 0
    modify_index: int = 0


@dataclass(slots=True)
class RescheduleEvent:
    """One reschedule of a failed allocation (Nomad's RescheduleEvent); the list is
    carried from an allocation to its replacement so attempts add up."""

    reschedule_time: float = 0.0  # when the replacement was placed
    prev_alloc_id: str = ""
    prev_node_id: str = ""
    delay: float = 0.0  # seconds waited after the failure


@dataclass(slots=True)
class Node:
    id: str = ""
    name: str = ""
    datacenter: str = "dc1"
    node_pool: str = "default"
    node_class: str = ""  # ${node.class} in constraints; groups nodes of one kind
    address: str = ""  # the agent's RPC address (host:port)
    status: str = NODE_INIT
    eligible: bool = True
    drain: bool = False
    attributes: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    resources: NodeResources = field(default_factory=NodeResources)
    reserved: NodeResources = field(default_factory=NodeResources)
    drivers: list[str] = field(default_factory=list)
    reserved_ports: list[int] = field(default_factory=list)  # host ports no allocation may take
    min_dynamic_port: int = DEFAULT_MIN_DYNAMIC_PORT  # dynamic ports are picked from min..max (inclusive)
    max_dynamic_port: int = DEFAULT_MAX_DYNAMIC_PORT
    last_heartbeat: float = 0.0
    create_index: int = 0
    modify_index: int = 0

    def schedulable(self) -> bool:
        return self.status == NODE_READY and self.eligible and not self.drain


def dynamic_range_error(
    low: int, high: int, names: tuple[str, str] = ("min_dynamic_port", "max_dynamic_port")
) -> str | None:
    """Why ``low..high`` is not a valid dynamic port range (``LOWEST_DYNAMIC_PORT <= low <= high <=
    HIGHEST_PORT``), naming the setting by ``names``; None when it is valid."""
    for name, value in zip(names, (low, high)):
        if not LOWEST_DYNAMIC_PORT <= value <= HIGHEST_PORT:
            return f"{name} {value}: must be between {LOWEST_DYNAMIC_PORT} and {HIGHEST_PORT}"
    if low > high:
        return f"{names[0]} {low} is above {names[1]} {high}"
    return None


def parse_port_ranges(text: str) -> list[int]:
    """Nomad's port list syntax, ``"22,80,8000-8100"``: the ports, sorted, each once. ValueError
    with the offending part when one is not a port (1..65535) or a range ``LOW-HIGH`` with LOW <= HIGH."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low_s, dash, high_s = part.partition("-")
        try:
            low = int(low_s)
            high = int(high_s) if dash else low
        except ValueError:
            raise ValueError(f"{part!r} is not a port or a range LOW-HIGH") from None
        if not (0 < low <= HIGHEST_PORT and 0 < high <= HIGHEST_PORT):
            raise ValueError(f"{part!r}: ports are 1 to {HIGHEST_PORT}")
        if low > high:
            raise ValueError(f"{part!r}: the range starts above its end")
        ports.update(range(low, high + 1))
    return sorted(ports)


@dataclass(slots=True)
class TaskEvent:
    type: str = ""  # Received, Driver, Started, Terminated, Restarting, OOM Killed, Killed, ...
    time: float = 0.0
    message: str = ""
    exit_code: int | None = None


@dataclass(slots=True)
class TaskState:
    state: str = TASK_PENDING
    failed: bool = False
    restarts: int = 0
    exit_code: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    events: list[TaskEvent] = field(default_factory=list)


@dataclass(slots=True)
class Allocation:
    id: str = ""
    name: str = ""  # job.group[index]
    namespace: str = "default"
    job_id: str = ""
    job_version: int = 0
    task_group: str = ""
    index: int = 0
    node_id: str = ""
    eval_id: str = ""
    resources: Resources = field(default_factory=Resources)
    desired_status: str = DESIRED_RUN
    desired_description: str = ""
    client_status: str = ALLOC_PENDING
    client_description: str = ""
    task_states: dict[str, TaskState] = field(default_factory=dict)
    healthy: bool | None = None  # the agent's view: tasks running and checks passing (None: nothing to check)
    checks: dict[str, str] = field(default_factory=dict)  # "service.check" -> passing | warning | critical
    previous_allocation: str = ""
    ports: list[AllocatedPort] = field(default_factory=list)  # host ports assigned at placement
    network_status: AllocNetworkStatus | None = None  # set by the agent once the network is up
    reschedule_events: list[RescheduleEvent] = field(default_factory=list)
    followup_eval_id: str = ""  # the delayed evaluation that will reschedule this failed allocation
    preempted_by_allocation: str = ""  # set on an allocation evicted to make room for another
    create_time: float = 0.0
    modify_time: float = 0.0
    create_index: int = 0
    modify_index: int = 0
    alloc_modify_index: int = 0

    def terminal(self) -> bool:
        """Done for scheduling purposes: told to stop, or finished on the client."""
        return self.desired_status != DESIRED_RUN or self.client_status in CLIENT_TERMINAL


@dataclass(slots=True)
class AllocUpdate:
    """An agent's report of one allocation's progress."""

    id: str = ""
    client_status: str = ALLOC_PENDING
    client_description: str = ""
    task_states: dict[str, TaskState] = field(default_factory=dict)
    healthy: bool | None = None
    checks: dict[str, str] = field(default_factory=dict)
    network_status: AllocNetworkStatus | None = None


@dataclass(slots=True)
class PlacementFailure:
    """Why a task group could not be (fully) placed: Nomad's AllocMetric."""

    task_group: str = ""
    missing: int = 0  # how many allocations could not be placed
    nodes_evaluated: int = 0
    nodes_available: dict[str, int] = field(default_factory=dict)  # by datacenter
    nodes_filtered: int = 0
    constraint_filtered: dict[str, int] = field(default_factory=dict)
    nodes_exhausted: int = 0
    dimension_exhausted: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # set when the group was not evaluated at all (e.g. an unsupported job type)

    def explain(self) -> list[str]:
        lines = [f"Task group {self.task_group!r}: {self.missing} allocation(s) not placed"]
        if self.reason:
            lines.append(f"  {self.reason}")
            return lines
        if self.nodes_evaluated == 0:
            lines.append("  No nodes were eligible for evaluation")
        else:
            lines.append(
                f"  {self.nodes_evaluated} node(s) evaluated: {self.nodes_filtered} filtered,"
                f" {self.nodes_exhausted} exhausted"
            )
        for why, n in sorted(self.constraint_filtered.items()):
            lines.append(f"  Constraint {why} filtered {n} node(s)")
        for dim, n in sorted(self.dimension_exhausted.items()):
            lines.append(f"  Resources exhausted on {n} node(s): {dim}")
        return lines


@dataclass(slots=True)
class Evaluation:
    id: str = ""
    namespace: str = "default"
    job_id: str = ""
    job_modify_index: int = 0
    type: str = "service"
    priority: int = 50
    triggered_by: str = ""  # job-register, job-deregister, node-update, alloc-failure, ...
    node_id: str = ""
    status: str = EVAL_PENDING
    status_description: str = ""
    failed_tg_allocs: dict[str, PlacementFailure] = field(default_factory=dict)
    blocked_eval: str = ""
    previous_eval: str = ""
    wait_until: float = 0.0  # a delayed evaluation (reschedule follow-up): not run before this time
    create_time: float = 0.0
    modify_time: float = 0.0
    create_index: int = 0
    modify_index: int = 0

    @classmethod
    def for_job(cls, job: Job, eval_id: str, triggered_by: str, now: float, **fields: Any) -> Evaluation:
        """A new (pending) evaluation of ``job``: its namespace, id, type and priority, created ``now``."""
        return cls(id=eval_id, namespace=job.namespace, job_id=job.id, type=job.type, priority=job.priority,
                   triggered_by=triggered_by, create_time=now, modify_time=now, **fields)


@dataclass(slots=True)
class JobSummary:
    """Allocation counts per task group and client status."""

    job_id: str = ""
    groups: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class ServerMember:
    """A server of the Raft group: its Raft address and the API address clients and peers use."""

    raft: str = ""
    api: str = ""
    name: str = ""
    create_index: int = 0
    modify_index: int = 0


SERVICE_NAME = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])$")  # a DNS label (RFC 1123)


def service_name_error(name: str) -> str | None:
    """Why ``name`` cannot be a service's name (it is a DNS label in ``NAME.service.shoal``)."""
    if not SERVICE_NAME.match(name):
        return (f"service name {name!r} must be 1-63 letters, digits and dashes, starting and ending with a "
                "letter or digit")
    return None


@dataclass(slots=True)
class ServiceRegistration:
    """One instance of a service in the catalog (Nomad's ServiceRegistration): where an allocation's
    ``service`` block is reachable, and whether it is healthy. The allocation's agent writes the set
    of its allocation's registrations; the servers drop them when the allocation stops or its node
    goes down."""

    id: str = ""  # "_shoal-<alloc id>-<group|task>-<service>-<port>": unique, stable for an allocation
    service_name: str = ""
    namespace: str = "default"
    node_id: str = ""
    datacenter: str = ""
    job_id: str = ""
    alloc_id: str = ""
    task: str = ""  # "" for a group-level service
    address: str = ""  # the allocation's address (alloc mode) or the node's (host mode)
    port: int = 0
    tags: list[str] = field(default_factory=list)
    healthy: bool = False  # its task runs and every check of the service passes
    checks: dict[str, str] = field(default_factory=dict)  # check name -> passing | warning | critical
    create_index: int = 0
    modify_index: int = 0
