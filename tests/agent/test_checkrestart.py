"""check_restart: the pure decision (checkrestart.py) with time as an argument; the check runner
feeding it, with a fake task and a fake clock; and allocations of raw_exec tasks whose check fails."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from shoal.agent.allocrunner import AllocRunner
from shoal.agent.checkrestart import CRITICAL, PASSING, WARNING, UnhealthyRestart
from shoal.agent.checks import CheckRunner, CheckTarget
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.jobs.loader import load_job_text
from shoal.jobs.model import Check, CheckRestart, Service
from shoal.jobs.structs import AllocUpdate, Allocation


def _started(limit: int = 3, grace: float = 10.0, ignore_warnings: bool = False, at: float = 0.0) -> UnhealthyRestart:
    d = UnhealthyRestart(CheckRestart(limit=limit, grace=grace, ignore_warnings=ignore_warnings))
    d.task_started(at)
    return d


def test_limit_consecutive_unhealthy_results_after_the_grace_restart():
    d = _started(limit=3, grace=10)
    assert [d.observe(CRITICAL, t) for t in (1, 5, 9)] == [False, False, False]  # within the grace: not counted
    assert [d.observe(CRITICAL, t) for t in (10, 15)] == [False, False]
    assert d.observe(CRITICAL, 20) is True


def test_a_passing_result_resets_the_count_so_a_flapping_check_never_restarts():
    d = _started(limit=2, grace=0)
    for t in range(0, 20, 2):
        assert d.observe(CRITICAL, t) is False
        assert d.observe(PASSING, t + 1) is False


def test_warnings_count_unless_ignored():
    counted = _started(limit=2, grace=0)
    assert (counted.observe(WARNING, 1), counted.observe(CRITICAL, 2)) == (False, True)
    ignored = _started(limit=2, grace=0, ignore_warnings=True)
    assert (ignored.observe(CRITICAL, 1), ignored.observe(WARNING, 2), ignored.observe(CRITICAL, 3)) == \
        (False, False, False)  # an ignored warning is healthy: it resets the count
    assert ignored.observe(CRITICAL, 4) is True


def test_limit_one_restarts_on_the_first_failure_after_the_grace_and_zero_never():
    assert _started(limit=1, grace=5).observe(CRITICAL, 5) is True
    never = _started(limit=0, grace=0)
    assert not never.enabled
    assert not any(never.observe(CRITICAL, t) for t in range(100))


def test_after_a_restart_nothing_counts_until_the_task_starts_again_then_grace_applies_anew():
    d = _started(limit=1, grace=5)
    assert d.observe(CRITICAL, 6) is True
    assert d.observe(CRITICAL, 7) is False  # the restart is under way: the old run's results do not count
    d.task_started(30)
    assert d.observe(CRITICAL, 34) is False  # the new run's grace
    assert d.observe(CRITICAL, 35) is True


def test_nothing_counts_while_the_task_is_not_running():
    d = UnhealthyRestart(CheckRestart(limit=1, grace=0))
    assert d.observe(CRITICAL, 1) is False  # never seen running
    d.task_started(2)
    d.task_stopped()
    assert d.observe(CRITICAL, 3) is False


class FakeTask:
    """What a check runner sees of a task: its pid, and restarts it is asked for."""

    def __init__(self) -> None:
        self.pid = 0
        self.restarts: list[str] = []

    async def restart(self, reason: str) -> None:
        self.restarts.append(reason)
        self.pid = 0  # stopped; the test starts it again


def _runner(task: FakeTask, clock: list[float], check_restart: CheckRestart | None) -> CheckRunner:
    check = Check(name="alive", type="tcp", interval=1.0, check_restart=check_restart)
    target = CheckTarget(pid=lambda: task.pid, host_network=True, run_script=None, restart=task.restart)
    return CheckRunner("web.alive", Service(name="web", checks=[check]), check, 80, target, lambda: None,
                       clock=lambda: clock[0])


def test_the_runner_restarts_its_task_when_the_decision_says_so_and_grace_follows_the_pid():
    task, clock = FakeTask(), [100.0]
    r = _runner(task, clock, CheckRestart(limit=2, grace=3))

    async def result(status: str, at: float) -> bool:
        clock[0] = at
        pid = task.pid
        r.follow_task(pid)  # what the loop does before each run
        return await r.restart_if_unhealthy(pid, status)

    async def scenario() -> None:
        assert await result(CRITICAL, 100) is False  # not running: not counted
        task.pid = 41
        assert [await result(CRITICAL, t) for t in (101, 103)] == [False, False]  # grace from 101 to 104
        assert [await result(CRITICAL, t) for t in (104, 105)] == [False, True]
        assert task.restarts == ['healthcheck: check "alive" unhealthy']
        task.pid = 42  # started again: a new grace
        assert [await result(CRITICAL, t) for t in (106, 108, 109)] == [False, False, False]
        assert await result(CRITICAL, 110) is True
        assert len(task.restarts) == 2

    asyncio.run(scenario())


def test_a_result_from_a_run_that_ended_meanwhile_is_not_counted():
    task, clock = FakeTask(), [0.0]
    r = _runner(task, clock, CheckRestart(limit=1, grace=0))

    async def scenario() -> None:
        task.pid = 7
        r.follow_task(7)
        task.pid = 8  # restarted (by a user, say) while the check ran
        assert await r.restart_if_unhealthy(7, CRITICAL) is False
        assert task.restarts == []

    asyncio.run(scenario())


def test_checks_without_check_restart_or_with_limit_zero_never_restart():
    task, clock = FakeTask(), [0.0]
    for cr in (None, CheckRestart(limit=0, grace=0)):
        r = _runner(task, clock, cr)
        assert r.restarts is None
        task.pid = 5
        r.follow_task(5)
        assert asyncio.run(r.restart_if_unhealthy(5, CRITICAL)) is False
    assert task.restarts == []


# --- end to end: an allocation of raw_exec tasks whose check never passes (nothing listens on its port) ---


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task(name: str, script: str = "exec sleep 30") -> str:
    return (f'  task "{name}" {{\n    driver = "raw_exec"\n    kill_timeout = "1s"\n'
            f'    config {{\n      command = "/bin/sh"\n      args = ["-c", "{script}"]\n    }}\n  SERVICE\n  }}\n')


def _run_to_end(tmp_path: Path, group_body: str) -> AllocUpdate:
    job = load_job_text(f'job "j" {{\n group "g" {{\n{group_body}\n }}\n}}\n', "j.hcl").job
    updates: list[AllocUpdate] = []

    async def scenario() -> None:
        alloc = Allocation(id="a1", name="j.g[0]", job_id="j", task_group="g")
        r = AllocRunner(alloc, job, {"raw_exec": RawExecDriver()}, tmp_path / "allocs", updates.append)
        r.start()
        await asyncio.wait_for(r.wait(), 30)  # the restart policy ends it: no stop from the test

    asyncio.run(scenario())
    return updates[-1]


def _check(limit: int, probe: str = ' type = "tcp"\n') -> str:
    return (f'  check {{\n name = "dead"\n{probe} interval = "50ms"\n timeout = "1s"\n'
            f'  check_restart {{\n limit = {limit}\n grace = "0s"\n }}\n }}\n')


def test_an_unhealthy_check_restarts_its_task_and_the_restart_policy_counts_it(tmp_path: Path, subreaper) -> None:
    port = _closed_port()
    service = f' service {{\n name = "web"\n port = "http"\n{_check(2)} }}\n'
    body = (f' network {{\n port "http" {{\n static = {port}\n }}\n }}\n'
            ' restart {\n attempts = 1\n interval = "1m"\n delay = "50ms"\n mode = "fail"\n }\n'
            + _task("web").replace("SERVICE", service) + _task("other").replace("SERVICE", ""))
    u = _run_to_end(tmp_path, body)

    web = u.task_states["web"]
    assert u.client_status == "failed" and web.failed and web.restarts == 1
    assert [e.type for e in web.events] == [
        "Received", "Task Setup", "Started", "Restart Signaled", "Terminated",
        "Restarting", "Task Setup", "Started", "Restart Signaled", "Terminated", "Not Restarting",
    ]
    signaled = [e.message for e in web.events if e.type == "Restart Signaled"]
    assert signaled == ['healthcheck: check "dead" unhealthy'] * 2
    assert web.events[5].message == "Task restarting in 0.05s (restart 1 of 1 within 60s)"
    assert web.events[-1].message == "exceeded 1 restart(s) in 60s"
    # a task service's check restarts its own task only
    assert "Restart Signaled" not in [e.type for e in u.task_states["other"].events]


def test_a_group_service_check_restarts_every_running_task(tmp_path: Path, subreaper) -> None:
    started = tmp_path / "b-started"  # the check passes until b has started, so both tasks run when it fails
    probe = (' type = "script"\n task = "a"\n command = "/bin/sh"\n'
             f' args = ["-c", "test -e {started} && exit 2; exit 0"]\n')
    body = (' restart {\n attempts = 0\n mode = "fail"\n }\n'
            f' service {{\n name = "web"\n{_check(1, probe)} }}\n'
            + _task("a").replace("SERVICE", "") + _task("b", f"touch {started}; exec sleep 30").replace("SERVICE", ""))
    u = _run_to_end(tmp_path, body)

    assert u.client_status == "failed"
    ended = []
    for name in ("a", "b"):
        ts = u.task_states[name]
        kinds = [e.type for e in ts.events]
        assert kinds[:4] == ["Received", "Task Setup", "Started", "Restart Signaled"], (name, kinds)
        assert ts.events[3].message == 'healthcheck: check "dead" unhealthy' and ts.restarts == 0
        ended.append(kinds[-1])
    # No attempts left: the first task to stop fails; the allocation then kills the other, unless it
    # had failed too
    assert "Not Restarting" in ended and set(ended) <= {"Not Restarting", "Killed"}, ended
