"""An in-memory SchedulerState built from plain records, and builders for tests.

Tests get the builders through the ``kit`` fixture (session-scoped, so
hypothesis tests can use it too).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from shoal.jobs.model import Constraint, Job, Network, Port, Resources, Task, TaskGroup
from shoal.jobs.structs import NODE_READY, Allocation, Evaluation, Node, NodeResources
from shoal.scheduler.usage import UsageIndex


@dataclass
class MemState:
    """The SchedulerState protocol over dicts, as the server's snapshot would answer it, without a usage index."""

    jobs: dict[tuple[str, str], Job] = field(default_factory=dict)
    node_map: dict[str, Node] = field(default_factory=dict)
    allocs: dict[str, Allocation] = field(default_factory=dict)
    versions: dict[tuple[str, str, int], Job] = field(default_factory=dict)  # older job versions

    def job(self, namespace: str, job_id: str) -> Job | None:
        return self.jobs.get((namespace, job_id))

    def job_version(self, namespace: str, job_id: str, version: int) -> Job | None:
        job = self.jobs.get((namespace, job_id))
        if job is not None and job.version == version:
            return job
        return self.versions.get((namespace, job_id, version))

    def nodes(self) -> Iterable[Node]:
        return list(self.node_map.values())

    def node(self, node_id: str) -> Node | None:
        return self.node_map.get(node_id)

    def allocs_by_job(self, namespace: str, job_id: str) -> list[Allocation]:
        return [a for a in self.allocs.values() if a.namespace == namespace and a.job_id == job_id]

    def allocs_by_node(self, node_id: str) -> list[Allocation]:
        return [a for a in self.allocs.values() if a.node_id == node_id]

    def usage_index(self) -> UsageIndex | None:
        return None


@dataclass
class IndexedState(MemState):
    """The same, with a UsageIndex: per-node usage and the best-fit order."""

    index: UsageIndex = field(default_factory=UsageIndex)

    def __post_init__(self) -> None:
        self.index = UsageIndex(self.node_map.values(), self.allocs.values())

    def usage_index(self) -> UsageIndex:
        return self.index


class Kit:
    """Builders with small, readable defaults."""

    MemState = MemState
    IndexedState = IndexedState

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"alloc-{next(self._ids):05d}"

    @staticmethod
    def node(
        node_id: str,
        *,
        cpu: int = 4000,
        memory: int = 8192,
        disk: int = 100_000,
        reserved: NodeResources | None = None,
        status: str = NODE_READY,
        eligible: bool = True,
        drain: bool = False,
        datacenter: str = "dc1",
        pool: str = "default",
        node_class: str = "",
        attributes: dict[str, str] | None = None,
        meta: dict[str, str] | None = None,
        drivers: list[str] | None = None,
    ) -> Node:
        return Node(
            id=node_id,
            name=f"name-{node_id}",
            datacenter=datacenter,
            node_pool=pool,
            node_class=node_class,
            status=status,
            eligible=eligible,
            drain=drain,
            attributes={"kernel.name": "linux"} if attributes is None else attributes,
            meta=meta or {},
            resources=NodeResources(cpu=cpu, memory=memory, disk=disk),
            reserved=reserved or NodeResources(),
            drivers=["exec", "docker"] if drivers is None else drivers,
        )

    @staticmethod
    def group(
        name: str = "web",
        *,
        count: int = 1,
        cpu: int = 500,
        memory: int = 256,
        disk: int = 300,
        driver: str = "exec",
        constraints: list[Constraint] | None = None,
        ports: list[Port] | None = None,
    ) -> TaskGroup:
        task = Task(name="main", driver=driver, resources=Resources(cpu=cpu, memory=memory))
        networks = [Network(ports=list(ports))] if ports else []
        return TaskGroup(
            name=name, count=count, tasks=[task], constraints=constraints or [], ephemeral_disk=disk, networks=networks
        )

    @staticmethod
    def job(
        job_id: str = "app",
        *groups: TaskGroup,
        type: str = "service",
        version: int = 0,
        constraints: list[Constraint] | None = None,
        datacenters: list[str] | None = None,
        pool: str = "default",
        stop: bool = False,
    ) -> Job:
        return Job(
            id=job_id,
            name=job_id,
            type=type,
            version=version,
            groups=list(groups) or [Kit.group()],
            constraints=constraints or [],
            datacenters=datacenters or ["*"],
            node_pool=pool,
            stop=stop,
        )

    @staticmethod
    def alloc(
        job: Job,
        group: str,
        index: int,
        node_id: str,
        *,
        alloc_id: str | None = None,
        version: int | None = None,
        client_status: str = "running",
        desired_status: str = "run",
        resources: Resources | None = None,
    ) -> Allocation:
        tg = job.group(group)
        if resources is None:
            cpu = sum(t.resources.cpu for t in tg.tasks) if tg else 100
            mem = sum(t.resources.memory for t in tg.tasks) if tg else 100
            resources = Resources(cpu=cpu, memory=mem, disk=tg.ephemeral_disk if tg else 0)
        return Allocation(
            id=alloc_id or f"{job.id}-{group}-{index}-{node_id}",
            name=f"{job.id}.{group}[{index}]",
            namespace=job.namespace,
            job_id=job.id,
            job_version=job.version if version is None else version,
            task_group=group,
            index=index,
            node_id=node_id,
            resources=resources,
            desired_status=desired_status,
            client_status=client_status,
        )

    @staticmethod
    def state(
        nodes: Iterable[Node] = (),
        jobs: Iterable[Job] = (),
        allocs: Iterable[Allocation] = (),
        *,
        versions: Iterable[Job] = (),
        indexed: bool = False,
    ) -> MemState:
        cls = IndexedState if indexed else MemState
        return cls(
            jobs={(j.namespace, j.id): j for j in jobs},
            node_map={n.id: n for n in nodes},
            allocs={a.id: a for a in allocs},
            versions={(j.namespace, j.id, j.version): j for j in versions},
        )

    @staticmethod
    def evaluation(job: Job, eval_id: str = "eval-1") -> Evaluation:
        return Evaluation(id=eval_id, namespace=job.namespace, job_id=job.id, type=job.type)


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()
