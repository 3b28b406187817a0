"""Raft commands: one named constant and one payload type per operation.

Every replicated write is ``(op, msgpack payload)``; the FSM dispatches on the
name, so adding an operation never renumbers the journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.jobs.model import Job
from shoal.jobs.structs import AllocUpdate, Allocation, Evaluation, Node, ServerMember, ServiceRegistration

JOB_REGISTER = "job.register"
JOB_DEREGISTER = "job.deregister"
NODE_REGISTER = "node.register"
NODE_STATUS = "node.status"
NODE_ELIGIBILITY = "node.eligibility"
EVAL_UPSERT = "eval.upsert"
PLAN_APPLY = "plan.apply"
ALLOC_CLIENT_UPDATE = "alloc.client_update"
SERVER_UPSERT = "server.upsert"
SERVER_REMOVE = "server.remove"
NETWORK_LEASE = "network.lease"
NODE_PURGE = "node.purge"
SERVICE_SYNC = "service.sync"
NOOP = "noop"
BATCH = "batch"  # several commands committed as one Raft entry (group commit)


@dataclass(slots=True)
class JobRegister:
    job: Job = field(default_factory=Job)
    eval: Evaluation | None = None
    now: float = 0.0


@dataclass(slots=True)
class JobDeregister:
    namespace: str = "default"
    job_id: str = ""
    purge: bool = False
    eval: Evaluation | None = None
    now: float = 0.0


@dataclass(slots=True)
class NodeRegister:
    node: Node = field(default_factory=Node)
    evals: list[Evaluation] = field(default_factory=list)
    now: float = 0.0


@dataclass(slots=True)
class NodeStatus:
    node_id: str = ""
    status: str = ""
    evals: list[Evaluation] = field(default_factory=list)
    now: float = 0.0


@dataclass(slots=True)
class NodeEligibility:
    node_id: str = ""
    eligible: bool = True
    drain: bool = False
    evals: list[Evaluation] = field(default_factory=list)


@dataclass(slots=True)
class EvalUpsert:
    evals: list[Evaluation] = field(default_factory=list)


@dataclass(slots=True)
class AllocStop:
    id: str = ""
    desired_status: str = "stop"
    desired_description: str = ""
    client_status: str = ""  # set to "lost" when the node is gone; empty = unchanged
    preempted_by_allocation: str = ""


@dataclass(slots=True)
class AllocInplace:
    """An allocation that changes without a stop: a new job version, or its follow-up evaluation."""

    id: str = ""
    job_version: int = 0
    eval_id: str = ""
    followup_eval_id: str = ""


@dataclass(slots=True)
class PlanApply:
    eval_id: str = ""
    namespace: str = "default"
    job_id: str = ""
    allocs: list[Allocation] = field(default_factory=list)
    stops: list[AllocStop] = field(default_factory=list)
    inplace: list[AllocInplace] = field(default_factory=list)
    evals: list[Evaluation] = field(default_factory=list)  # the evaluation's new status, plus follow-ups
    now: float = 0.0


@dataclass(slots=True)
class AllocClientUpdate:
    node_id: str = ""
    updates: list[AllocUpdate] = field(default_factory=list)
    evals: list[Evaluation] = field(default_factory=list)
    now: float = 0.0


@dataclass(slots=True)
class ServerUpsert:
    member: ServerMember = field(default_factory=ServerMember)


@dataclass(slots=True)
class ServerRemove:
    raft: str = ""


@dataclass(slots=True)
class NetworkLease:
    """Lease ``node_id`` a subnet of ``network`` (or keep the one it holds, with its new underlay
    address). The FSM picks the subnet from ``cidr`` itself, so concurrent leases never collide."""

    network: str = "default"
    node_id: str = ""
    underlay: str = ""
    cidr: str = ""
    subnet_prefix: int = 24


@dataclass(slots=True)
class NodePurge:
    """Forget a node: its record and its subnet leases; ``evals`` replace its allocations."""

    node_id: str = ""
    evals: list[Evaluation] = field(default_factory=list)
    now: float = 0.0


@dataclass(slots=True)
class AllocServices:
    """The whole set of one allocation's registrations, as its agent wants it now (empty: none)."""

    alloc_id: str = ""
    registrations: list[ServiceRegistration] = field(default_factory=list)


@dataclass(slots=True)
class ServiceSync:
    """A node's agent sets the registrations of some of its allocations. The FSM keeps a set only
    for an allocation of that node that still runs on a ready node, so a late write never brings
    back what a stop or a node going down removed."""

    node_id: str = ""
    allocs: list[AllocServices] = field(default_factory=list)


PAYLOADS: dict[str, type] = {
    SERVER_UPSERT: ServerUpsert,
    SERVER_REMOVE: ServerRemove,
    JOB_REGISTER: JobRegister,
    JOB_DEREGISTER: JobDeregister,
    NODE_REGISTER: NodeRegister,
    NODE_STATUS: NodeStatus,
    NODE_ELIGIBILITY: NodeEligibility,
    EVAL_UPSERT: EvalUpsert,
    PLAN_APPLY: PlanApply,
    ALLOC_CLIENT_UPDATE: AllocClientUpdate,
    NETWORK_LEASE: NetworkLease,
    NODE_PURGE: NodePurge,
    SERVICE_SYNC: ServiceSync,
}
