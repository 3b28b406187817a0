"""The allocation's service checks (checks.py runs them): which task each probes, and health.

A check of a task's own service probes that task; a group service's check probes
the task it names (``task = "..."``), else the main task that publishes its port,
else the leader, else the first main task. tcp and http checks connect from
inside the task's network namespace unless its driver shares the host's.

The checks run from prerun to postrun (or shutdown); while its task does not
run, a check is critical without probing anything.

A check with ``check_restart`` restarts, when it stays unhealthy, its task (a task's
service) or every running task of the allocation (a group's service, as Nomad restarts
the allocation); each restart counts against that task's restart policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shoal.agent.checks import PASSING, CheckRunner, CheckTarget
from shoal.agent.hooks.base import AllocHook
from shoal.agent.taskrunner import TaskRunner
from shoal.jobs.model import Check, Service, TaskGroup
from shoal.jobs.structs import Allocation


class ChecksHook(AllocHook):
    name = "checks"

    def __init__(self, alloc: Allocation, group: TaskGroup, tasks: list[TaskRunner], on_change: Callable[[], None]):
        self.alloc = alloc
        self.group = group
        self.tasks = tasks
        services: list[tuple[Service, TaskRunner | None]] = [(s, None) for s in group.services]
        services += [(s, tr) for tr in tasks for s in tr.task.services]
        self.checks: list[CheckRunner] = []
        for service, owner in services:
            for i, check in enumerate(service.checks):
                tr = owner or self._check_task(service, check)
                if tr is None:
                    continue
                key = f"{service.name}.{check.name or f'{check.type}-{i}'}"
                target = CheckTarget(pid=lambda tr=tr: tr.pid, host_network=not tr.driver.capabilities.net_isolation,
                                     run_script=tr.run_command, restart=self._restarter(owner))
                self.checks.append(CheckRunner(key, service, check, self._port(check.port or service.port), target,
                                               on_change))

    def _restarter(self, owner: TaskRunner | None) -> Callable[[str], Awaitable[None]]:
        """How an unhealthy check restarts: its task's, or every running task for a group service."""
        targets = [owner] if owner is not None else self.tasks

        async def restart(reason: str) -> None:
            await asyncio.gather(*(tr.restart(reason, failure=True) for tr in targets if tr.running))

        return restart

    def _port(self, label: str) -> int | None:
        if not label:
            return None
        for p in self.alloc.ports:
            if p.label == label:
                return p.to or p.value
        for net in self.group.networks:
            for p in net.ports:
                if p.label == label:
                    return p.to or p.static or None
        return int(label) if label.isdigit() else None

    def _check_task(self, service: Service, check: Check) -> TaskRunner | None:
        if check.task:
            return next((tr for tr in self.tasks if tr.task.name == check.task), None)
        label = check.port or service.port
        main = [tr for tr in self.tasks if not tr.lifecycle_hook]
        for tr in main:  # the task that publishes the port, then the leader, then the first main task
            if label and label in (tr.task.config.get("ports") or ()):
                return tr
        return next((tr for tr in main if tr.task.leader), main[0] if main else None)

    async def prerun(self) -> None:
        for c in self.checks:
            c.start()

    async def postrun(self) -> None:
        await self._stop()

    async def shutdown(self) -> None:
        await self._stop()

    async def _stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.checks), return_exceptions=True)

    def health(self) -> tuple[bool | None, dict[str, str]]:
        """(healthy, status per check): healthy when every main task and sidecar runs and every check
        passes; None when there is nothing to check."""
        statuses = {c.key: c.status for c in self.checks}
        if not self.checks:
            return None, statuses
        relevant = [tr for tr in self.tasks if not tr.lifecycle_hook or tr.sidecar]
        healthy = all(tr.running for tr in relevant) and all(s == PASSING for s in statuses.values())
        return healthy, statuses
