"""The allocation's services in the catalog (Nomad's group and task services hooks).

From prerun (once the network hook knows the allocation's address) the hook keeps the
allocation's registrations up to date: the runner calls ``refresh`` on every change of a
task or a check, the registrations are rebuilt (``agent/services.py``, pure) and handed to
the agent's ``ServiceSyncer``, which writes only what changed. postrun and destroy
deregister; an agent exiting with the tasks still running (shutdown) leaves them registered.
The servers also drop them by themselves when the allocation stops or its node goes down.
"""

from __future__ import annotations

import structlog

from shoal.agent import services
from shoal.agent.catalog import ServiceSyncer
from shoal.agent.checks import PASSING
from shoal.agent.hooks.base import AllocHook
from shoal.agent.hooks.checks import ChecksHook
from shoal.agent.hooks.network import NetworkHook
from shoal.agent.taskrunner import TaskRunner
from shoal.jobs.model import Job, TaskGroup
from shoal.jobs.structs import Allocation

log = structlog.get_logger("shoal.agent.services")


class ServicesHook(AllocHook):
    name = "services"

    def __init__(self, alloc: Allocation, job: Job, group: TaskGroup, tasks: list[TaskRunner], network: NetworkHook,
                 checks: ChecksHook, syncer: ServiceSyncer, datacenter: str):
        self.alloc = alloc
        self.job = job
        self.group = group
        self.tasks = {tr.task.name: tr for tr in tasks}
        self.network = network
        self.checks = checks
        self.syncer = syncer
        self.datacenter = datacenter
        self._active = False
        self._registered = False  # a set was handed on since the last deregistration
        self._problems: list[str] = []

    def _health(self, owner: services.Owner) -> tuple[bool, dict[str, str]]:
        statuses = {c.key: c.status for c in self.checks.checks if c.service is owner.service}
        if owner.task is not None:
            tr = self.tasks.get(owner.task.name)
            running = tr is not None and tr.running
        else:
            running = all(tr.running for tr in self.tasks.values() if not tr.lifecycle_hook or tr.sidecar)
        return running and all(s == PASSING for s in statuses.values()), statuses

    def refresh(self) -> None:
        """Rebuild the registrations from the allocation's current state and hand them on (never raises)."""
        if not self._active or not (self.group.services or any(t.services for t in self.group.tasks)):
            return
        host_ip = self.network.networking.host_ip if self.network.networking is not None else ""
        try:
            built = services.build(self.alloc, self.job, self.group, self.network.status, host_ip, self.datacenter,
                                   self._health)
        except Exception:  # called on every change of the allocation: never let it break the runner
            log.exception("building the allocation's service registrations failed", alloc_id=self.alloc.id)
            return
        if built.problems != self._problems:
            for why in built.problems:
                log.warning("a service is not registered", alloc_id=self.alloc.id, reason=why)
            self._problems = built.problems
        self.syncer.set(self.alloc.id, built.registrations)
        self._registered = True

    async def prerun(self) -> None:
        self._active = True
        self.refresh()

    async def update(self, alloc: Allocation) -> None:
        self.alloc = alloc
        self.refresh()

    async def postrun(self) -> None:
        self._active = False
        self._deregister()

    async def destroy(self) -> None:
        self._deregister()

    def _deregister(self) -> None:
        if self._registered:
            self.syncer.set(self.alloc.id, [])
            self._registered = False

    async def shutdown(self) -> None:
        self._active = False  # the tasks keep running: so do their registrations
