"""The walking skeleton end to end: CLI -> server (Raft) -> scheduler -> agent -> runc."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.cluster import wait_for, runc_list

from shoal.agent.names import container_id

pytestmark = pytest.mark.root

LOGGING_JOB = """
job "echo" {
  datacenters = ["*"]
  group "g" {
    count = 1
    task "say" {
      driver = "container"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "echo hello-from-shoal $NOMAD_ALLOC_INDEX; echo to-stderr >&2; exec sleep 3600"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
"""


def runc_ids() -> set[str]:
    return set(runc_list("-q").split())


def cgroup_dirs(cid: str) -> list[Path]:
    roots = [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]
    return [p for r in roots for p in (r / "shoal" / cid,) if p.exists()]


def test_job_runs_logs_and_stops_cleanly(dev_agent, tmp_path):
    job_file = tmp_path / "echo.hcl"
    job_file.write_text(LOGGING_JOB)
    r = dev_agent.cli("job", "run", str(job_file))
    assert r.code == 0, r.out + r.err
    assert "running" in r.out

    status = dev_agent.cli("job", "status", "echo", "--json").json()
    assert status["status"] == "running"
    (alloc,) = [a for a in status["allocations"] if a["desired_status"] == "run"]
    cid = container_id(alloc["id"], "say")
    assert cid in runc_ids()
    assert cgroup_dirs(cid), "the container's cgroup should exist while it runs"

    # logs come back through the CLI, by a short id prefix
    out = wait_for(lambda: (lambda r: r.out if "hello-from-shoal 0" in r.out else None)(
        dev_agent.cli("alloc", "logs", alloc["id"][:8])), 10, "the task's stdout")
    assert out.strip() == "hello-from-shoal 0"
    err = dev_agent.cli("alloc", "logs", "--stderr", alloc["id"][:8], "say")
    assert err.code == 0 and err.out.strip() == "to-stderr"

    r = dev_agent.cli("job", "stop", "echo")
    assert r.code == 0, r.out + r.err
    final = dev_agent.cli("job", "status", "echo", "--json").json()
    assert final["status"] == "dead"
    assert all(a["client_status"] == "complete" for a in final["allocations"])

    # the container, its overlay mount and its cgroup are gone
    assert cid not in runc_ids()
    mounts = Path("/proc/mounts").read_text()
    assert alloc["id"] not in mounts
    assert not cgroup_dirs(cid)


def test_example_job_runs_three_containers(dev_agent):
    example = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "example.hcl"
    r = dev_agent.cli("job", "run", str(example))
    if r.code != 0:
        failed = [a for a in dev_agent.cli("job", "status", "example", "--json").json()["allocations"] if a["client_status"] == "failed"]
        details = "".join(dev_agent.cli("alloc", "status", a["id"]).out for a in failed)
        raise AssertionError(r.out + r.err + details)
    status = dev_agent.cli("job", "status", "example", "--json").json()
    running = [a for a in status["allocations"] if a["client_status"] == "running"]
    assert len(running) == 3
    assert sum(c.get("running", 0) for c in status["summary"].values()) == 3
    ids = runc_ids()
    assert all(any(i.startswith(f"shoal-{a['id']}") for i in ids) for a in running)
    nodes = json.loads(dev_agent.cli("node", "status", "--json").out)
    assert nodes[0]["running_allocs"] == 3


@pytest.mark.parametrize(
    "body, line, field",
    [
        ('job "bad" {\n  group "g" {\n    task "t" {\n      driver = "java"\n    }\n  }\n}\n', 4, "driver"),
        ('job "bad" {\n  group "g" {\n    count = -1\n    task "t" {\n      driver = "raw_exec"\n      config { command = "/bin/true" }\n    }\n  }\n}\n', 3, "count"),
        ('job "bad" {\n  group "g" {\n    task "t" {\n      driver = "raw_exec"\n      config { command = "/bin/true" }\n      resources {\n        memory = "lots"\n      }\n    }\n  }\n}\n', 7, "memory"),
    ],
)
def test_bad_job_file_is_refused_with_file_line_and_field(dev_agent, tmp_path, body, line, field):
    f = tmp_path / "bad.hcl"
    f.write_text(body)
    r = dev_agent.cli("job", "run", str(f))
    assert r.code == 1
    assert f"{f}:{line}" in r.err and field in r.err, r.err
    assert "Traceback" not in r.err
    assert dev_agent.cli("job", "status", "--json").json() == []  # nothing was written


def test_unreachable_server_is_a_clear_error(tmp_path):
    from support.cluster import SHOAL, free_port

    env_addr = f"127.0.0.1:{free_port()}"
    p = subprocess.run([SHOAL, "job", "status", "--address", env_addr], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "cannot reach shoal" in p.stderr


def test_unplaceable_job_explains_which_resource_was_exhausted(dev_agent, tmp_path):
    f = tmp_path / "huge.hcl"
    f.write_text(LOGGING_JOB.replace('job "echo"', 'job "huge"').replace("memory = 32", "memory = 100000000"))
    r = dev_agent.cli("job", "run", str(f))
    assert r.code == 1, r.out + r.err
    assert "Resources exhausted on 1 node(s): memory" in r.out
    status = dev_agent.cli("job", "status", "huge")
    assert status.code == 0
    assert "Placement Failure" in status.out
    assert "Resources exhausted on 1 node(s): memory" in status.out
    plan = dev_agent.cli("job", "plan", str(f))
    assert "Resources exhausted on 1 node(s): memory" in plan.out


RAW_JOB = """
job "{name}" {{
  group "g" {{
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "/bin/sleep"
        args    = ["3600"]
      }}
      resources {{
        cpu    = 20
        memory = {memory}
      }}
    }}
  }}
}}
"""


def test_blocked_job_is_placed_when_capacity_frees_up(dev_agent, tmp_path):
    node = dev_agent.cli("node", "status", "--json").json()[0]
    capacity = node["resources"]["memory"] - node["reserved"]["memory"]
    big, waiting = tmp_path / "big.hcl", tmp_path / "waiting.hcl"
    big.write_text(RAW_JOB.format(name="big", memory=int(capacity * 0.7)))
    waiting.write_text(RAW_JOB.format(name="waiting", memory=int(capacity * 0.5)))
    assert dev_agent.cli("job", "run", str(big)).code == 0
    r = dev_agent.cli("job", "run", str(waiting))
    assert r.code == 1 and "memory" in r.out
    assert dev_agent.cli("job", "stop", "big").code == 0

    def waiting_runs():
        s = dev_agent.cli("job", "status", "waiting", "--json").json()
        return s["status"] == "running"

    wait_for(waiting_runs, 30, "the blocked job to be placed once memory was freed")
    dev_agent.cli("job", "stop", "waiting")
