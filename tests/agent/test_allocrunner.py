"""AllocRunner with raw_exec tasks (fast, no containers): lifecycle order, restart policy, health checks,
re-attaching after a restart, user restarts."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from shoal.agent import names
from shoal.agent.allocrunner import AllocRunner
from shoal.agent.allocstate import load_state
from shoal.agent.checks import CRITICAL, PASSING, http_check, script_check, tcp_check
from shoal import codec
from shoal.agent.drivers.base import TaskHandle
from shoal.agent.drivers.raw_exec import RawExecDriver
from shoal.jobs.loader import load_job_text
from shoal.jobs.structs import AllocUpdate, Allocation


SCRIPTS_DIR: list[Path] = []  # set per test by the fixture below


def _job(body: str, job_type: str = "service"):
    text = f'job "j" {{\n type = "{job_type}"\n group "g" {{\n{body}\n }}\n}}\n'
    scripts = SCRIPTS_DIR[-1]
    for key, script in SCRIPTS.items():
        (scripts / f"{key}.sh").write_text(script + "\n")
    return load_job_text(text.replace("SCRIPTS_DIR", str(scripts)), "j.hcl").job


@pytest.fixture(autouse=True)
def _scripts_dir(tmp_path: Path):
    d = tmp_path / "scripts"
    d.mkdir()
    SCRIPTS.clear()
    SCRIPTS_DIR.append(d)
    yield
    SCRIPTS_DIR.pop()


SCRIPTS: dict[str, str] = {}


def _task(name: str, script: str, extra: str = "") -> str:
    """A raw_exec task running ``script`` (kept in a file next to the job, so any quoting works)."""
    key = f"s{len(SCRIPTS)}"
    SCRIPTS[key] = script
    return (f' task "{name}" {{\n driver = "raw_exec"\n config {{\n command = "/bin/sh"\n'
            f' args = ["-c", "exec /bin/sh $SCRIPTS/{key}.sh"]\n }}\n env {{\n SCRIPTS = "SCRIPTS_DIR"\n }}\n'
            f' kill_timeout = "1s"\n {extra}\n }}\n')


class Updates:
    def __init__(self) -> None:
        self.last: AllocUpdate | None = None
        self.all: list[AllocUpdate] = []

    def __call__(self, u: AllocUpdate) -> None:
        self.last = u
        self.all.append(u)


def _runner(tmp_path: Path, job, updates: Updates, drivers=None, restored=None, alloc_id: str = "a1") -> AllocRunner:
    alloc = Allocation(id=alloc_id, name="j.g[0]", job_id="j", task_group="g")
    drivers = drivers or {"raw_exec": RawExecDriver()}
    return AllocRunner(alloc, job, drivers, tmp_path / "allocs", updates, restored=restored)


def _run_to_end(tmp_path: Path, job, updates: Updates) -> None:
    async def scenario() -> None:
        r = _runner(tmp_path, job, updates)
        r.start()
        await asyncio.wait_for(r.wait(), 20)

    asyncio.run(scenario())


async def _until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_lifecycle_order(tmp_path: Path, subreaper) -> None:
    order = tmp_path / "order"
    job = _job(
        _task("init", f"echo init >> {order}", 'lifecycle {\n hook = "prestart"\n }')
        + _task("side", f"echo side-start >> {order}; trap 'echo side-stop >> {order}; exit 0' TERM; "
                        "while true; do sleep 0.05; done", 'lifecycle {\n hook = "prestart"\n sidecar = true\n }')
        + _task("main", f"test -e {order} && echo main >> {order}; sleep 0.3")
        + _task("post", f"echo poststart >> {order}", 'lifecycle {\n hook = "poststart"\n }')
        + _task("stop", f"echo poststop >> {order}", 'lifecycle {\n hook = "poststop"\n }'),
        job_type="batch",
    )
    updates = Updates()

    _run_to_end(tmp_path, job, updates)
    lines = order.read_text().split()
    assert lines[0] in ("init", "side-start") and set(lines[:2]) == {"init", "side-start"}
    # poststart starts once main has started; which of the two writes its line first is up to the
    # machine's scheduler, so the order is read from the tasks' start times, not from the file
    assert set(lines[2:4]) == {"main", "poststart"}
    states = updates.last.task_states
    assert states["post"].started_at >= states["main"].started_at > 0
    assert lines.index("side-stop") > lines.index("poststart")
    assert lines[-1] == "poststop"
    assert updates.last is not None and updates.last.client_status == "complete"
    assert all(not ts.failed for ts in updates.last.task_states.values())


def test_restart_policy_then_failure(tmp_path: Path, subreaper) -> None:
    job = _job(' restart {\n attempts = 2\n interval = "1m"\n delay = "50ms"\n mode = "fail"\n }\n'
               + _task("t", "echo run; exit 3"))
    updates = Updates()

    _run_to_end(tmp_path, job, updates)
    ts = updates.last.task_states["t"]
    assert updates.last.client_status == "failed" and ts.failed and ts.restarts == 2
    kinds = [e.type for e in ts.events]
    assert kinds.count("Started") == 3 and kinds.count("Restarting") == 2 and kinds[-1] == "Not Restarting"
    assert [e.exit_code for e in ts.events if e.type == "Terminated"] == [3, 3, 3]


async def _run_then_lose_the_agent(tmp_path: Path, job, updates: Updates) -> tuple[AllocRunner, int, dict]:
    """Run task ``t`` until the state file holds its handle, then lose the runner as a killed agent
    would (nothing stopped or destroyed). Returns (the old runner, the task's pid, the state file)."""
    first = _runner(tmp_path, job, updates)
    first.start()
    await _until(lambda: first.tasks[0].running, what="the task to run")
    pid = first.tasks[0].handle.pid
    await _until(lambda: ((load_state(first.dir) or {}).get("tasks") or {}).get("t", {}).get("handle"),
                 what="the state file to hold the handle")  # written shortly after the change
    state = load_state(first.dir)
    assert state["tasks"]["t"]["handle"]["pid"] == pid
    # A new agent process would have a new driver and runner, and only the state file.
    first.tasks[0].handle = None  # the old agent process is gone: it neither stops nor destroys the task
    first._task.cancel()
    return first, pid, state


def test_reattach_after_an_agent_restart(tmp_path: Path, subreaper) -> None:
    job = _job(_task("t", "echo started >> $NOMAD_ALLOC_DIR/runs; exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        first, pid, state = await _run_then_lose_the_agent(tmp_path, job, updates)
        second = _runner(tmp_path, job, updates, drivers={"raw_exec": RawExecDriver()}, restored=state)
        second.start()
        await _until(lambda: second.tasks[0].recovered, what="the re-attached task")
        tr = second.tasks[0]
        assert tr.recovered and tr.handle.pid == pid
        assert (first.dir / "alloc" / "runs").read_text() == "started\n"  # not started twice
        await second.stop("test over")
        assert tr.finished and not tr.state.failed
        assert [e.type for e in tr.state.events][-2:] == ["Killing", "Killed"]

    asyncio.run(scenario())


class ProbingDriver(RawExecDriver):
    """raw_exec that finds a task started by an earlier agent from its own records, as the container
    driver does with runc's state (``probe_handle``)."""

    def __init__(self, handles: dict[tuple[str, str], object]) -> None:
        super().__init__()
        self.handles = handles

    def probe_handle(self, alloc_id: str, task: str):
        return self.handles.get((alloc_id, task))


def test_reattach_a_task_the_earlier_agent_saved_as_starting(tmp_path: Path, subreaper) -> None:
    """The agent died after starting the task but before its state file said so (the file is written
    within a fraction of a second of a change): the task is re-attached, not started again, and its
    events say it started, once (they are what the agent reports to the servers)."""
    job = _job(_task("t", "echo started >> $NOMAD_ALLOC_DIR/runs; exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        first, pid, state = await _run_then_lose_the_agent(tmp_path, job, updates)
        saved = state["tasks"]["t"]
        handle = codec.from_plain(TaskHandle, saved["handle"])
        # the state file as written between "Task Setup" and "Started"
        saved["handle"] = None
        saved["state"]["state"] = "pending"
        saved["state"]["events"] = [e for e in saved["state"]["events"] if e["type"] in ("Received", "Task Setup")]
        second = _runner(tmp_path, job, updates, drivers={"raw_exec": ProbingDriver({("a1", "t"): handle})},
                         restored=state)
        second.start()
        await _until(lambda: second.tasks[0].recovered, what="the re-attached task")
        tr = second.tasks[0]
        assert tr.running and tr.handle.pid == pid
        assert (first.dir / "alloc" / "runs").read_text() == "started\n"  # not started twice
        assert [e.type for e in tr.state.events] == ["Received", "Task Setup", "Started"]
        assert updates.last is not None and updates.last.task_states["t"].state == "running"
        await second.stop("test over")
        assert tr.finished and not tr.state.failed

    asyncio.run(scenario())


def test_reattach_a_task_started_before_the_first_save(tmp_path: Path, subreaper) -> None:
    """The agent died within the save window after the allocation's task started: the state file written
    when the allocation started, before any task, still claims it, and the task is re-attached, not
    started again (without that file its container looked unclaimed and was destroyed)."""
    job = _job(_task("t", "echo started >> $NOMAD_ALLOC_DIR/runs; exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        first = _runner(tmp_path, job, updates)
        first.start()
        written = load_state(first.dir)  # before the event loop ran any of the allocation
        assert written is not None and written["alloc"]["id"] == "a1"
        assert written["tasks"]["t"]["handle"] is None and written["tasks"]["t"]["state"]["events"] == []
        runs = first.dir / "alloc" / "runs"
        await _until(lambda: first.tasks[0].running and runs.exists(), what="the task to run")
        handle = first.tasks[0].handle
        first.tasks[0].handle = None  # the old agent process is gone: it neither stops nor destroys the task
        first._task.cancel()
        second = _runner(tmp_path, job, updates, drivers={"raw_exec": ProbingDriver({("a1", "t"): handle})},
                         restored=written)
        second.start()
        await _until(lambda: second.tasks[0].recovered, what="the re-attached task")
        tr = second.tasks[0]
        assert tr.running and tr.handle.pid == handle.pid
        assert runs.read_text() == "started\n"  # not started twice
        assert [e.type for e in tr.state.events] == ["Received", "Started"]
        await second.stop("test over")
        assert tr.finished and not tr.state.failed

    asyncio.run(scenario())


class SlowRecoverDriver(RawExecDriver):
    """raw_exec whose re-attach waits for a gate: a runc or /proc probe that is slow on a loaded host."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.recovering = asyncio.Event()

    async def recover(self, handle):
        self.recovering.set()
        await self.gate.wait()
        return await super().recover(handle)


def test_stop_while_reattaching_stops_the_task(tmp_path: Path, subreaper) -> None:
    """The servers' stop can reach a restored allocation before its tasks are re-attached: the task must
    still be killed, not marked dead and left running."""
    job = _job(_task("t", "exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        _, pid, state = await _run_then_lose_the_agent(tmp_path, job, updates)
        driver = SlowRecoverDriver()
        second = _runner(tmp_path, job, updates, drivers={"raw_exec": driver}, restored=state)
        second.start()
        await asyncio.wait_for(driver.recovering.wait(), 10)
        stopping = asyncio.create_task(second.stop("stopped while the agent was away"))
        await asyncio.sleep(0.05)
        driver.gate.set()
        await asyncio.wait_for(stopping, 15)
        tr = second.tasks[0]
        assert tr.finished and not tr.state.failed
        assert updates.last is not None and updates.last.client_status == "complete"
        await _until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in _proc_state(pid),
                     what="the re-attached process to be gone")

    asyncio.run(scenario())


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (FileNotFoundError, IndexError):
        return "gone"


def test_user_restart_is_not_a_failure(tmp_path: Path, subreaper) -> None:
    job = _job(' restart {\n attempts = 0\n mode = "fail"\n }\n' + _task("t", "echo run >> $NOMAD_ALLOC_DIR/runs; exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        r = _runner(tmp_path, job, updates)
        r.start()
        # running means the task's process started, not that its shell has got to the echo yet
        await _until(lambda: r.tasks[0].running and ran() == 1, what="the task's echo")
        first_pid = r.tasks[0].handle.pid
        assert await r.restart() == ["t"]
        await _until(lambda: r.tasks[0].running and r.tasks[0].handle.pid != first_pid and ran() == 2,
                     what="the restarted task's echo")
        assert r.tasks[0].state.restarts == 1 and not r.tasks[0].finished
        await r.stop()

    runs = tmp_path / "allocs" / "a1" / "alloc" / "runs"

    def ran() -> int:
        return runs.read_text().count("run") if runs.exists() else 0

    asyncio.run(scenario())
    assert runs.read_text() == "run\nrun\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_checks_report_health(tmp_path: Path, subreaper) -> None:
    port = _free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ok")
    job = _job(
        f' network {{\n port "http" {{\n static = {port}\n }}\n }}\n'
        ' service {\n name = "web"\n port = "http"\n'
        '  check {\n name = "tcp"\n type = "tcp"\n interval = "100ms"\n timeout = "1s"\n }\n'
        '  check {\n name = "http"\n type = "http"\n path = "/index.html"\n interval = "100ms"\n timeout = "1s"\n }\n'
        '  check {\n name = "script"\n type = "script"\n task = "web"\n command = "/bin/sh"\n'
        '   args = ["-c", "test -e ready || exit 2"]\n interval = "100ms"\n timeout = "1s"\n }\n }\n'
        + _task("web", f"exec busybox httpd -f -p 127.0.0.1:{port} -h {www}")
    )
    updates = Updates()

    async def scenario() -> None:
        r = _runner(tmp_path, job, updates)
        r.start()
        await _until(lambda: updates.last is not None and updates.last.checks.get("web.tcp") == PASSING
                     and updates.last.checks.get("web.http") == PASSING, what="tcp and http checks to pass")
        assert updates.last.checks["web.script"] == CRITICAL and updates.last.healthy is False
        (r.dir / "web" / "ready").write_text("")  # the script runs in the task's directory
        await _until(lambda: updates.last.healthy is True, what="the allocation to be healthy")
        await r.stop()

    asyncio.run(scenario())


def test_a_failed_prerun_fails_the_allocation_and_starts_no_task(tmp_path: Path, subreaper) -> None:
    job = _job(_task("t", "echo ran > $SCRIPTS/../ran; exec sleep 30") + _task("u", "exec sleep 30"))
    updates = Updates()
    alloc_dir = names.alloc_dir(tmp_path / "allocs", "a1")
    alloc_dir.mkdir(parents=True)
    names.shared_dir(alloc_dir).write_text("")  # a file where the alloc_dir hook makes the shared directory

    _run_to_end(tmp_path, job, updates)
    u = updates.last
    assert u is not None and u.client_status == "failed"
    assert u.client_description.startswith("failed to set up the allocation: alloc_dir hook: ")
    for ts in u.task_states.values():
        assert ts.state == "dead" and ts.failed and ts.started_at == 0.0
        assert [(e.type, e.message) for e in ts.events] == [("Setup Failure", u.client_description)]
    assert not (tmp_path / "ran").exists()


def test_a_failed_prestart_hook_fails_the_start(tmp_path: Path, subreaper) -> None:
    job = _job(' restart {\n attempts = 0\n mode = "fail"\n }\n' + _task("t", "exit 0"))
    updates = Updates()
    local = names.task_dir(names.alloc_dir(tmp_path / "allocs", "a1"), "t") / "local"
    local.parent.mkdir(parents=True)
    local.write_text("")  # a file where the task_dir hook makes the task's local/

    _run_to_end(tmp_path, job, updates)
    ts = updates.last.task_states["t"]
    assert updates.last.client_status == "failed" and ts.failed and ts.started_at == 0.0
    assert [e.type for e in ts.events] == ["Received", "Task Setup", "Task Hook Failed", "Not Restarting"]
    assert ts.events[2].message.startswith("task_dir hook: ")


def test_tasks_with_awkward_names_stay_inside_their_allocation(tmp_path: Path, subreaper) -> None:
    """Validation lets a task be called ".." or "web server": each still gets its own directory, log files
    and commands inside the allocation (a ".." task's directory was the directory of all allocations)."""
    job = _job(_task("..", 'echo "$NOMAD_TASK_DIR" > "$NOMAD_ALLOC_DIR/dotdot"; exec sleep 30')
               + _task("web server", 'pwd > "$NOMAD_ALLOC_DIR/space"; echo hi; exec sleep 30'))
    updates = Updates()

    async def scenario() -> None:
        r = _runner(tmp_path, job, updates)
        r.start()
        shared = names.shared_dir(r.dir)
        await _until(lambda: all(tr.running for tr in r.tasks) and (shared / "dotdot").exists()
                     and (shared / "space").exists(), what="both tasks to run")
        dotdot, space = names.task_dir(r.dir, ".."), names.task_dir(r.dir, "web server")
        assert dotdot.parent == r.dir == space.parent and dotdot != space
        assert (shared / "dotdot").read_text().strip() == str(dotdot / "local")
        await _until(lambda: (shared / "space").read_text().strip() == str(space), what="the pwd")
        await _until(lambda: names.log_files(r.dir, "web server")[0].read_text() == "hi\n", what="the task's log")
        code, out = await r.by_name["web server"].run_command(["/bin/sh", "-c", "pwd; echo $NOMAD_TASK_NAME"], 5)
        assert (code, out.splitlines()) == (0, [str(space), "web server"])  # in its directory, with its env
        await r.stop()
        await r.destroy()
        assert not r.dir.exists() and sorted(p.name for p in (tmp_path / "allocs").iterdir()) == []

    asyncio.run(scenario())


def test_an_in_place_update_is_kept_for_the_state_file(tmp_path: Path, subreaper) -> None:
    job = _job(_task("t", "exec sleep 30"))
    updates = Updates()

    async def scenario() -> None:
        r = _runner(tmp_path, job, updates)
        r.start()
        await _until(lambda: r.tasks[0].running, what="the task to run")
        pid = r.tasks[0].pid
        await r.update(Allocation(id="a1", name="j.g[0]", job_id="j", task_group="g", job_version=2,
                                  alloc_modify_index=7))
        await _until(lambda: (load_state(r.dir) or {}).get("alloc", {}).get("job_version") == 2,
                     what="the state file to hold the new record")
        assert r.tasks[0].running and r.tasks[0].pid == pid  # no task restarted
        await r.stop()

    asyncio.run(scenario())


def test_check_primitives(tmp_path: Path) -> None:
    async def scenario() -> None:
        closed = _free_port()
        r = await tcp_check(None, closed, 1.0)
        assert r.status == CRITICAL and "refused" in r.output.lower()
        r = await http_check(None, closed, "/", 1.0)
        assert r.status == CRITICAL

        async def run(argv, timeout):
            return (1, "degraded") if argv[0] == "warn" else (None, "")

        assert (await script_check(run, ["warn"], 1.0)).status == "warning"
        r = await script_check(run, ["slow"], 0.5)
        assert r.status == CRITICAL and "timed out" in r.output

    asyncio.run(scenario())


@pytest.fixture
def subreaper():
    from shoal.agent import procwait

    before = procwait.is_subreaper()
    procwait.become_subreaper()
    yield
    procwait.become_subreaper(before)
