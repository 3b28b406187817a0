"""Allocation runner hooks and task runner hooks: where each per-allocation concern plugs in.

Modelled on Nomad's client/allocrunner hooks (alloc_runner_hooks.go: prerun, update,
postrun, destroy) and taskrunner hooks (prestart, poststart, stop): one hook per
concern (the directories, the logs, the checks; later the network, services,
volumes, templates), each in its own file beside its peers. The order is fixed::

    prerun      every alloc hook, in list order; the first error fails the allocation:
                no task starts and every task gets a "Setup Failure" event saying why
      each task runner, in its lifecycle phase:
        prestart    its task hooks, in order, before every start of the task (restarts
                    too) and when a restarted agent re-attaches to it
        poststart   its task hooks, in order, after every start and re-attach
        stop        its task hooks, in reverse, once, when the task runner ends
    postrun     every alloc hook, in reverse, once every task has ended (also after a
                failed prerun); errors are logged and do not stop the others
    update      every alloc hook, in order, when the servers change the running allocation
    destroy     every alloc hook, in reverse, when the agent forgets the allocation
    shutdown    every alloc hook, in reverse, when the agent exits and leaves the tasks
                running (instead of postrun: nothing the tasks use may go)

Sharing: an alloc hook publishes what its prerun made (a directory, a network
namespace's path) as its own typed attributes; a task hook built with a reference
to that alloc hook reads them in prestart, which never runs before every alloc
hook's prerun has returned, and adds them to the ``TaskSpec`` (env, mounts, or a
field the driver reads). Every method runs on the agent's event loop; the methods
of one hook never run concurrently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

import structlog

from shoal.agent.drivers.base import TaskHandle, TaskSpec
from shoal.jobs.structs import Allocation

log = structlog.get_logger("shoal.agent.hooks")


class AllocHook:
    """One concern of an allocation. Every method has a no-op default; a hook overrides what it needs."""

    name: str = ""

    async def prerun(self) -> None:
        """Before any task starts: make what the allocation's tasks need on the host (directories, a
        network namespace, mounts) and publish it for task hooks. Runs again when a restarted agent
        restores the allocation (its tasks may still run): it must be idempotent. Raising fails the
        allocation with the error's message."""

    async def update(self, alloc: Allocation) -> None:
        """The servers changed the allocation while it runs (an in-place update: no task changes). Must
        not restart tasks. Errors are logged."""

    async def postrun(self) -> None:
        """Every task has ended, or none started (a prerun failed, perhaps this hook's, perhaps before
        this hook's prerun ran: tolerate that). Release what prerun made for the running tasks; keep what
        outlives them (files, logs) for ``destroy``. Errors are logged."""

    async def destroy(self) -> None:
        """The agent forgets the allocation (after postrun): remove what is left of it. Errors are logged."""

    async def shutdown(self) -> None:
        """The agent exits and leaves the tasks running for the next agent process: stop what this hook
        runs inside the agent (loops, timers) and keep everything the tasks use. Errors are logged."""


class TaskHook:
    """One concern of a task. Every method has a no-op default; a hook overrides what it needs."""

    name: str = ""

    async def prestart(self, spec: TaskSpec) -> None:
        """Before every start of the task, and when a restarted agent re-attaches to it (then nothing
        starts): complete ``spec`` (env, mounts, log paths) and make what it names on the host. Idempotent.
        Raising fails this start as a driver error that is not retried (the restart policy decides)."""

    async def poststart(self, handle: TaskHandle) -> None:
        """The task runs (``handle``), started or re-attached. Errors become a task event."""

    async def stop(self) -> None:
        """The task runner has ended (the task is dead and runs no more). Not called when the agent
        exits leaving the task running. Errors are logged."""


class HookError(Exception):
    """A hook's prerun or prestart failed; the message names the hook."""

    def __init__(self, hook: str, error: BaseException):
        super().__init__(f"{hook} hook: {error}")
        self.hook = hook


async def _until_error(hooks: Iterable[AllocHook | TaskHook], phase: str, call: Callable[..., Awaitable[None]],
                       **context: str) -> None:
    """Call each hook in turn (``call(hook)``); the first error stops the rest and is raised as a ``HookError``."""
    for hook in hooks:
        try:
            await call(hook)
        except Exception as exc:
            log.warning(f"{phase} hook failed", hook=hook.name, error=str(exc), **context)
            raise HookError(hook.name, exc) from exc


async def _each(hooks: Iterable[AllocHook | TaskHook], phase: str, call: Callable[..., Awaitable[None]],
                **context: str) -> list[HookError]:
    """Call every hook (``call(hook)``); an error is logged, kept and the others still run."""
    errors = []
    for hook in hooks:
        try:
            await call(hook)
        except Exception as exc:
            log.warning(f"{phase} hook failed", hook=hook.name, error=str(exc), **context)
            errors.append(HookError(hook.name, exc))
    return errors


class AllocHooks:
    """An allocation's hooks, run in the fixed order and by the error rules above."""

    def __init__(self, hooks: Sequence[AllocHook], alloc_id: str):
        self.hooks = list(hooks)
        self.alloc_id = alloc_id

    async def prerun(self) -> None:
        """Raises ``HookError`` for the first hook that fails; the hooks after it do not run."""
        await _until_error(self.hooks, "prerun", lambda h: h.prerun(), alloc_id=self.alloc_id)

    async def update(self, alloc: Allocation) -> None:
        await _each(self.hooks, "update", lambda h: h.update(alloc), alloc_id=self.alloc_id)

    async def postrun(self) -> None:
        await _each(reversed(self.hooks), "postrun", lambda h: h.postrun(), alloc_id=self.alloc_id)

    async def destroy(self) -> None:
        await _each(reversed(self.hooks), "destroy", lambda h: h.destroy(), alloc_id=self.alloc_id)

    async def shutdown(self) -> None:
        await _each(reversed(self.hooks), "shutdown", lambda h: h.shutdown(), alloc_id=self.alloc_id)


class TaskHooks:
    """A task's hooks, run in the fixed order and by the error rules above."""

    def __init__(self, hooks: Sequence[TaskHook], alloc_id: str, task: str):
        self.hooks = list(hooks)
        self.context = {"alloc_id": alloc_id, "task": task}

    async def prestart(self, spec: TaskSpec) -> None:
        """Raises ``HookError`` for the first hook that fails; the hooks after it do not run."""
        await _until_error(self.hooks, "prestart", lambda h: h.prestart(spec), **self.context)

    async def poststart(self, handle: TaskHandle) -> list[HookError]:
        return await _each(self.hooks, "poststart", lambda h: h.poststart(handle), **self.context)

    async def stop(self) -> None:
        await _each(reversed(self.hooks), "stop", lambda h: h.stop(), **self.context)
