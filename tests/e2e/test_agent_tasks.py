"""Acceptance, end to end through a dev agent: OOM kills, restart-then-fail, rescheduling by the servers, a docker-driver job of the
Nomad corpus run unchanged, and the alloc commands (logs with rotation, exec with and without a tty,
restart, stop)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
from support.cluster import SHOAL, DevAgent, build_busybox_rootfs, wait_for, runc_list

from shoal.agent import cgroups, names

pytestmark = pytest.mark.root

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "nomad"


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    why = None if os.geteuid() == 0 else "needs root"
    if why:
        pytest.skip(why)
    from shoal.agent.imageimport import import_rootfs
    from shoal.agent.imagestore import ImageStore

    root = tmp_path_factory.mktemp("tasks")
    store = ImageStore(root / "images")
    rootfs = build_busybox_rootfs(root / "rootfs")
    import_rootfs(store, rootfs, "busybox:latest")
    import_rootfs(store, rootfs, "busybox:1")  # what the corpus's docker jobs run
    a = DevAgent(root=root / "agent", image_dir=root / "images")
    try:
        yield a.start("--default-registry", "")
    finally:
        a.stop()


def run_job(agent: DevAgent, tmp_path: Path, name: str, text: str):
    f = tmp_path / f"{name}.hcl"
    f.write_text(text)
    return agent.cli("job", "run", str(f))


def alloc_of(agent: DevAgent, job: str) -> dict:
    status = agent.cli("job", "status", job, "--json").json()
    first = min(status["allocations"], key=lambda a: a["create_time"])
    return agent.cli("alloc", "status", first["id"], "--json").json()["allocation"]


def events(alloc: dict, task: str) -> list[str]:
    return [e["type"] for e in alloc["task_states"][task]["events"]]


def test_oom_kill_is_reported(agent: DevAgent, tmp_path: Path) -> None:
    r = run_job(agent, tmp_path, "oom", """
job "oom" {
  type = "batch"
  group "g" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "hog" {
      driver = "docker"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "x=aaaaaaaa; while true; do x=$x$x; done"]
      }
      resources {
        cpu    = 100
        memory = 16
      }
    }
  }
}
""")
    assert "Monitoring evaluation" in r.out, r.err  # it may return as soon as the task runs
    alloc = wait_for(lambda: (lambda a: a if a["client_status"] == "failed" else None)(alloc_of(agent, "oom")),
                     30, "the OOM-killed allocation to fail")
    kinds = events(alloc, "hog")
    assert "OOM Killed" in kinds and kinds[-1] == "Not Restarting", kinds
    term = next(e for e in alloc["task_states"]["hog"]["events"] if e["type"] == "Terminated")
    assert term["exit_code"] == 137 and "Signal: 9" in term["message"]
    text = agent.cli("alloc", "status", alloc["id"]).out
    assert "OOM Killed" in text and "Task was killed by the kernel's OOM killer" in text


def test_restart_then_fail(agent: DevAgent, tmp_path: Path) -> None:
    r = run_job(agent, tmp_path, "flaky", """
job "flaky" {
  group "g" {
    restart {
      attempts = 2
      interval = "1m"
      delay    = "200ms"
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "t" {
      driver = "docker"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "echo attempt; exit 3"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
""")
    alloc = wait_for(lambda: (lambda a: a if a["client_status"] == "failed" else None)(alloc_of(agent, "flaky")),
                     30, "the allocation to fail after its restarts")
    ts = alloc["task_states"]["t"]
    kinds = events(alloc, "t")
    assert ts["failed"] and ts["restarts"] == 2 and ts["exit_code"] == 3
    assert kinds.count("Started") == 3 and kinds.count("Restarting") == 2 and kinds[-1] == "Not Restarting", kinds
    restarting = [e["message"] for e in ts["events"] if e["type"] == "Restarting"]
    assert all(m.startswith("Task restarting in 0.2s") for m in restarting), restarting
    out = agent.cli("alloc", "logs", alloc["id"]).out
    assert out.splitlines() == ["attempt"] * 3
    # the failure reached the servers; rescheduling it is the scheduler's decision (none here: attempts = 0)
    assert agent.cli("job", "status", "flaky", "--json").json()["summary"]["g"].get("failed") == 1


def test_docker_job_from_the_nomad_corpus_runs_unchanged(agent: DevAgent) -> None:
    path = CORPUS / "hashicorp__nomad__e2e__scheduler_system__input__system_job0.nomad"
    if not path.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    v = agent.cli("job", "validate", str(path))
    assert v.code == 0, v.err
    r = agent.cli("job", "run", "--detach", str(path))
    assert r.code == 0, r.out + r.err

    def placed():
        status = agent.cli("job", "status", "system_job", "--json").json()
        for ev in status.get("evaluations") or []:
            for f in (ev.get("failed_tg_allocs") or {}).values():
                if "not supported" in (f.get("reason") or ""):
                    return f["reason"]
        return status["allocations"] or None

    got = wait_for(placed, 20, "the system job to be placed (or refused)")
    if isinstance(got, str):
        agent.cli("job", "stop", "--purge", "system_job")
        pytest.skip(f"the scheduler does not place system jobs yet: {got}")
    alloc = wait_for(lambda: (lambda a: a if a["client_status"] == "running" else None)(alloc_of(agent, "system_job")),
                     30, "the corpus job's allocation to run")
    assert alloc["task_states"]["system_task"]["state"] == "running"
    cid = names.container_id(alloc['id'], "system_task")
    assert cid in runc_list("-q").split()
    env = subprocess.run(["runc", "exec", cid, "sh", "-c", "echo $version"], capture_output=True, text=True).stdout
    assert env.strip() == "1"  # the job's env block
    # sh is pid 1 and ignores SIGTERM: end it with SIGKILL first so that stopping does not wait 5s for it
    subprocess.run(["runc", "kill", cid, "KILL"], capture_output=True)
    assert agent.cli("job", "stop", "system_job").code == 0


def _tty_exec(alloc_id: str, address: str, keys: bytes) -> tuple[bytes, int]:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ["SHOAL_ADDR"] = address
        os.execv(SHOAL, [SHOAL, "alloc", "exec", "-t", alloc_id, "--", "/bin/sh"])
    out = b""

    def pump(seconds: float, until: bytes | None = None) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until in out):
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return

    pump(10, b"# ")
    os.write(fd, keys)
    pump(10, b"exited")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out, os.waitstatus_to_exitcode(status)


def test_alloc_logs_exec_restart_and_stop(agent: DevAgent, tmp_path: Path) -> None:
    r = run_job(agent, tmp_path, "svc", """
job "svc" {
  group "g" {
    task "app" {
      driver       = "docker"
      kill_timeout = "500ms"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "seq 1 300000; echo started >> /alloc/starts; exec sleep 3600"]
      }
      logs {
        max_files     = 3
        max_file_size = 1
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
""")
    assert r.code == 0, r.out + r.err
    alloc = alloc_of(agent, "svc")
    aid = alloc["id"]
    logs_dir = agent.data_dir / "client" / "allocs" / aid / "alloc" / "logs"
    wait_for(lambda: (logs_dir / "app.stdout.1").exists(), 10, "the log to rotate")
    full = agent.cli("alloc", "logs", aid[:8], "app")
    assert full.code == 0 and full.out.split() == [str(i) for i in range(1, 300001)]
    assert agent.cli("alloc", "logs", "--tail", "2", aid[:8]).out.split() == ["299999", "300000"]

    r = subprocess.run([SHOAL, "alloc", "exec", aid[:8], "--", "sh", "-c", "cat; echo to-err >&2; exit 7"],
                       input="from stdin\n", capture_output=True, text=True, timeout=60,
                       env={**os.environ, "SHOAL_ADDR": agent.address})
    assert (r.returncode, r.stdout, r.stderr) == (7, "from stdin\n", "to-err\n")
    out, code = _tty_exec(aid, agent.address, b"tty; stty size; echo exi''ted; exit 5\r")
    assert code == 5 and b"/dev/pts/" in out and b"exited" in out, out

    cid = names.container_id(aid, "app")
    pid_before = _pid(cid)
    r = agent.cli("alloc", "restart", aid[:8])
    assert r.code == 0 and "Restarted app" in r.out, r.err
    wait_for(lambda: _pid(cid) not in (None, pid_before), 15, "the task to run again")
    after = alloc_of(agent, "svc")
    assert "Restart Signaled" in events(after, "app") and after["task_states"]["app"]["restarts"] == 1
    assert (logs_dir.parent / "starts").read_text() == "started\nstarted\n"

    r = agent.cli("alloc", "stop", aid[:8])
    assert r.code == 0, r.err
    status = wait_for(lambda: (lambda s: s if len([a for a in s["allocations"] if a["client_status"] == "running"]) == 1
                               and len(s["allocations"]) == 2 else None)(
        agent.cli("job", "status", "svc", "--json").json()), 20, "a replacement allocation")
    old = next(a for a in status["allocations"] if a["id"] == aid)
    assert old["desired_status"] == "stop" and old["client_status"] == "complete"
    assert _pid(cid) is None
    assert agent.cli("job", "stop", "svc").code == 0


def test_a_task_named_with_a_space_runs_and_stops_cleanly(agent: DevAgent, tmp_path: Path) -> None:
    r = run_job(agent, tmp_path, "spaced", """
job "spaced" {
  group "g" {
    task "web server" {
      driver       = "docker"
      kill_timeout = "500ms"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "echo serving; echo $NOMAD_TASK_NAME > /local/name; exec sleep 3600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
""")
    assert r.code == 0, r.out + r.err
    alloc = wait_for(lambda: (lambda a: a if a["client_status"] == "running" else None)(alloc_of(agent, "spaced")),
                     30, "the allocation to run")
    aid = alloc["id"]
    assert alloc["task_states"]["web server"]["state"] == "running"
    cid = names.container_id(aid, "web server")
    assert cid in runc_list("-q").split()
    alloc_dir = names.alloc_dir(agent.data_dir / "client" / "allocs", aid)
    task_dir = names.task_dir(alloc_dir, "web server")
    wait_for(lambda: (task_dir / "local" / "name").exists(), 10, "the task to write its name")
    assert (task_dir / "local" / "name").read_text() == "web server\n"
    assert cgroups.cgroup_exists(names.cgroup_path(cid)) and _mounts_under(task_dir)
    assert agent.cli("alloc", "logs", aid[:8], "web server").out == "serving\n"

    assert agent.cli("job", "stop", "spaced").code == 0
    stopped = wait_for(lambda: (lambda a: a if a["client_status"] == "complete" else None)(alloc_of(agent, "spaced")),
                       30, "the allocation to stop")
    assert [e["type"] for e in stopped["task_states"]["web server"]["events"]][-2:] == ["Killing", "Killed"]
    assert cid not in runc_list("-q").split()
    assert not cgroups.cgroup_exists(names.cgroup_path(cid))
    assert _mounts_under(task_dir) == []


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].replace("\\040", " ").startswith(prefix)]


def _pid(cid: str) -> int | None:
    r = subprocess.run(["runc", "state", cid], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    import json

    state = json.loads(r.stdout)
    return state["pid"] if state["status"] == "running" else None


def test_failed_allocation_is_rescheduled_per_its_reschedule_stanza(agent: DevAgent, tmp_path: Path) -> None:
    """The agent reports the failure; the servers place a replacement after ``delay``, up to ``attempts``."""
    r = run_job(agent, tmp_path, "resched", """
job "resched" {
  group "g" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts       = 1
      interval       = "1h"
      delay          = "3s"
      delay_function = "constant"
      unlimited      = false
    }
    task "t" {
      driver = "docker"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "exit 4"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
""")

    def allocs() -> list[dict]:
        return agent.cli("job", "status", "resched", "--json").json()["allocations"]

    both = wait_for(lambda: (lambda a: a if len(a) == 2 and all(x["client_status"] == "failed" for x in a) else None)(
        allocs()), 60, "the first allocation and its one replacement to fail")
    first, second = sorted(both, key=lambda a: a["create_time"])
    # placed after the delay (less Nomad's one-second window: a reschedule due that soon is done at once)
    assert second["create_time"] - first["create_time"] >= 2.0
    replacement = agent.cli("alloc", "status", second["id"], "--json").json()["allocation"]
    assert [e["prev_alloc_id"] for e in replacement["reschedule_events"]] == [first["id"]]
    time.sleep(3)  # attempts = 1: no third allocation comes
    assert len(allocs()) == 2
