"""The hook runners' order and error rules (hooks/base.py), with hooks that record what they are told."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoal.agent.drivers.base import TaskHandle, TaskSpec
from shoal.agent.hooks.base import AllocHook, AllocHooks, HookError, TaskHook, TaskHooks
from shoal.jobs.model import Resources
from shoal.jobs.structs import Allocation


class Recording(AllocHook, TaskHook):
    """Notes every call in ``calls``; raises in the phases named in ``fail``."""

    def __init__(self, name: str, calls: list[str], fail: tuple[str, ...] = ()):
        self.name = name
        self.calls = calls
        self.fail = fail

    def _note(self, phase: str) -> None:
        self.calls.append(f"{phase}:{self.name}")
        if phase in self.fail:
            raise RuntimeError(f"{self.name} cannot {phase}")

    async def prerun(self) -> None:
        self._note("prerun")

    async def update(self, alloc: Allocation) -> None:
        self._note(f"update({alloc.id})")

    async def postrun(self) -> None:
        self._note("postrun")

    async def destroy(self) -> None:
        self._note("destroy")

    async def shutdown(self) -> None:
        self._note("shutdown")

    async def prestart(self, spec: TaskSpec) -> None:
        spec.env.setdefault("ORDER", "")
        spec.env["ORDER"] += self.name
        self._note("prestart")

    async def poststart(self, handle: TaskHandle) -> None:
        self._note("poststart")

    async def stop(self) -> None:
        self._note("stop")


def _spec(tmp_path: Path) -> TaskSpec:
    return TaskSpec(alloc_id="a", job_id="j", group="g", task="t", config={}, env={}, resources=Resources(),
                    alloc_dir=tmp_path, task_dir=tmp_path / "t")


def test_alloc_hooks_run_forward_then_in_reverse_and_later_errors_do_not_stop_the_others() -> None:
    calls: list[str] = []
    hooks = AllocHooks([Recording("a", calls), Recording("b", calls, fail=("postrun", "destroy", "update(x)")),
                        Recording("c", calls, fail=("shutdown",))], "x")

    async def scenario() -> None:
        await hooks.prerun()
        await hooks.update(Allocation(id="x"))
        await hooks.postrun()
        await hooks.destroy()
        await hooks.shutdown()

    asyncio.run(scenario())
    assert calls == ["prerun:a", "prerun:b", "prerun:c",
                     "update(x):a", "update(x):b", "update(x):c",
                     "postrun:c", "postrun:b", "postrun:a",
                     "destroy:c", "destroy:b", "destroy:a",
                     "shutdown:c", "shutdown:b", "shutdown:a"]


def test_a_failed_prerun_names_its_hook_and_the_hooks_after_it_do_not_run() -> None:
    calls: list[str] = []
    hooks = AllocHooks([Recording("a", calls), Recording("net", calls, fail=("prerun",)), Recording("c", calls)], "x")
    with pytest.raises(HookError, match="^net hook: net cannot prerun$") as err:
        asyncio.run(hooks.prerun())
    assert err.value.hook == "net" and calls == ["prerun:a", "prerun:net"]
    asyncio.run(hooks.postrun())  # every hook's postrun runs after a failed prerun, in reverse
    assert calls[2:] == ["postrun:c", "postrun:net", "postrun:a"]


def test_task_hooks_complete_the_spec_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    calls: list[str] = []
    hooks = TaskHooks([Recording("a", calls), Recording("b", calls, fail=("poststart",)), Recording("c", calls)],
                      "x", "t")
    spec = _spec(tmp_path)
    handle = TaskHandle(driver="raw_exec", id="1", pid=1, started_at=0.0)

    async def scenario() -> list[HookError]:
        await hooks.prestart(spec)
        errors = await hooks.poststart(handle)
        await hooks.stop()
        return errors

    errors = asyncio.run(scenario())
    assert spec.env["ORDER"] == "abc"
    assert [str(e) for e in errors] == ["b hook: b cannot poststart"]
    assert calls == ["prestart:a", "prestart:b", "prestart:c", "poststart:a", "poststart:b", "poststart:c",
                     "stop:c", "stop:b", "stop:a"]
    failing = TaskHooks([Recording("a", []), Recording("b", [], fail=("prestart",)), Recording("c", [])], "x", "t")
    spec = _spec(tmp_path)
    with pytest.raises(HookError, match="^b hook: b cannot prestart$"):
        asyncio.run(failing.prestart(spec))
    assert spec.env["ORDER"] == "ab"
