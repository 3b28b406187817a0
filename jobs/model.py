"""The job model: what a user submits (Job -> TaskGroup -> Task), as typed dataclasses.

Durations are seconds (float); memory and disk are MB; cpu is MHz, as in Nomad.
Fields named ``*_index`` and ``version``/``status``/``stop``/``submit_time`` are
set by the servers, never by a job file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JOB_TYPES = ("service", "batch", "system", "sysbatch")
DRIVERS = ("container", "docker", "exec", "raw_exec")
ADDRESS_MODES = ("auto", "host", "alloc")  # a service's address_mode (Nomad's, but "driver")
CONSTRAINT_OPERATORS = (
    "=", "==", "is", "!=", "not", ">", ">=", "<", "<=",
    "regexp", "set_contains", "set_contains_all", "set_contains_any",
    "version", "semver", "is_set", "is_not_set", "distinct_hosts", "distinct_property",
)


@dataclass(slots=True)
class Constraint:
    attribute: str = ""
    operator: str = "="
    value: str = ""


@dataclass(slots=True)
class Affinity:
    attribute: str = ""
    operator: str = "="
    value: str = ""
    weight: int = 50


@dataclass(slots=True)
class SpreadTarget:
    value: str = ""
    percent: int = 0


@dataclass(slots=True)
class Spread:
    attribute: str = ""
    weight: int = 50
    targets: list[SpreadTarget] = field(default_factory=list)


@dataclass(slots=True)
class Port:
    label: str = ""
    static: int = 0  # 0: a dynamic port is chosen at placement
    to: int = 0  # the port inside the task's network namespace; 0 = same as the host port


@dataclass(slots=True)
class Network:
    mode: str = ""  # host | bridge | none | overlay; "": bridge for container and exec tasks, else host
    ports: list[Port] = field(default_factory=list)
    name: str = ""  # overlay mode: the named overlay network ("": the cluster's default one)


@dataclass(slots=True)
class Resources:
    cpu: int = 100  # MHz
    memory: int = 300  # MB
    memory_max: int = 0  # MB; 0 = no oversubscription
    disk: int = 0  # MB


@dataclass(slots=True)
class RestartPolicy:
    attempts: int = 2
    interval: float = 1800.0
    delay: float = 15.0
    mode: str = "fail"  # "fail" | "delay"


@dataclass(slots=True)
class ReschedulePolicy:
    attempts: int = 0
    interval: float = 0.0
    delay: float = 30.0
    delay_function: str = "exponential"  # constant | exponential | fibonacci
    max_delay: float = 3600.0
    unlimited: bool = True


@dataclass(slots=True)
class CheckRestart:
    """Restart a check's task when the check stays unhealthy (Nomad's ``check_restart``).

    After the task starts or restarts, results within ``grace`` seconds are not counted;
    then ``limit`` consecutive unhealthy results (critical, and warning unless
    ``ignore_warnings``) restart the task, a restart counted against its restart policy.
    A passing result resets the count. ``limit`` 0 never restarts.
    """

    limit: int = 0
    grace: float = 1.0  # seconds
    ignore_warnings: bool = False


@dataclass(slots=True)
class Check:
    name: str = ""
    type: str = "tcp"  # tcp | http | script
    port: str = ""
    path: str = ""
    command: str = ""
    args: list[str] = field(default_factory=list)
    interval: float = 10.0
    timeout: float = 2.0
    task: str = ""  # script checks of a group service: the task to run the command in
    # The service's check_restart block merged with the check's own (the check's fields win); None: neither.
    check_restart: CheckRestart | None = None


@dataclass(slots=True)
class Service:
    name: str = ""
    port: str = ""
    tags: list[str] = field(default_factory=list)
    provider: str = "shoal"
    checks: list[Check] = field(default_factory=list)
    address_mode: str = "auto"  # auto | host | alloc: which address and port the catalog gives (agent/services.py)
    # Tags for canary allocations instead of ``tags``. Kept, never applied yet: shoal has no canaries
    # until it has deployments.
    canary_tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Lifecycle:
    hook: str = ""  # prestart | poststart | poststop
    sidecar: bool = False


@dataclass(slots=True)
class LogConfig:
    """Task log rotation: at most ``max_files`` files of ``max_file_size`` MB per stream (stdout, stderr)."""

    max_files: int = 10
    max_file_size: int = 10  # MB
    disabled: bool = False  # nothing is kept


@dataclass(slots=True)
class Task:
    name: str = ""
    driver: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    constraints: list[Constraint] = field(default_factory=list)
    affinities: list[Affinity] = field(default_factory=list)
    restart: RestartPolicy | None = None  # None: the group's policy
    services: list[Service] = field(default_factory=list)
    lifecycle: Lifecycle | None = None
    user: str = ""
    kill_timeout: float = 5.0
    kill_signal: str = "SIGTERM"
    meta: dict[str, str] = field(default_factory=dict)
    leader: bool = False
    logs: LogConfig = field(default_factory=LogConfig)


@dataclass(slots=True)
class TaskGroup:
    name: str = ""
    count: int = 1
    tasks: list[Task] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    affinities: list[Affinity] = field(default_factory=list)
    spreads: list[Spread] = field(default_factory=list)
    restart: RestartPolicy | None = None  # None: the job type's default
    reschedule: ReschedulePolicy | None = None
    networks: list[Network] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    ephemeral_disk: int = 300  # MB
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    id: str = ""
    name: str = ""
    type: str = "service"
    priority: int = 50
    namespace: str = "default"
    region: str = "global"
    datacenters: list[str] = field(default_factory=lambda: ["*"])
    node_pool: str = "default"
    constraints: list[Constraint] = field(default_factory=list)
    affinities: list[Affinity] = field(default_factory=list)
    spreads: list[Spread] = field(default_factory=list)
    groups: list[TaskGroup] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    # Set by the servers.
    version: int = 0
    status: str = "pending"  # pending | running | dead
    stop: bool = False
    submit_time: float = 0.0
    create_index: int = 0
    modify_index: int = 0
    job_modify_index: int = 0

    def group(self, name: str) -> TaskGroup | None:
        return next((g for g in self.groups if g.name == name), None)


def default_restart(job_type: str) -> RestartPolicy:
    """Nomad's defaults: services restart 2 times in 30m, batch jobs 3 times in 24h."""
    if job_type in ("batch", "sysbatch"):
        return RestartPolicy(attempts=3, interval=86400.0, delay=15.0, mode="fail")
    return RestartPolicy(attempts=2, interval=1800.0, delay=15.0, mode="fail")


def default_reschedule(job_type: str) -> ReschedulePolicy:
    """Nomad's defaults: services reschedule forever with exponential backoff; batch once."""
    if job_type == "batch":
        return ReschedulePolicy(attempts=1, interval=86400.0, delay=5.0, delay_function="constant", unlimited=False)
    if job_type in ("system", "sysbatch"):
        return ReschedulePolicy(attempts=0, unlimited=False)
    return ReschedulePolicy(attempts=0, interval=0.0, delay=30.0, delay_function="exponential", max_delay=3600.0, unlimited=True)


def task_restart(job: Job, group: TaskGroup, task: Task) -> RestartPolicy:
    return task.restart or group.restart or default_restart(job.type)


def group_resources(group: TaskGroup) -> Resources:
    """What one allocation of ``group`` asks of a node (sum over its tasks)."""
    cpu = sum(t.resources.cpu for t in group.tasks)
    mem = sum(t.resources.memory for t in group.tasks)
    return Resources(cpu=cpu, memory=mem, disk=group.ephemeral_disk)
