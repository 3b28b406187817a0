"""Namespaces through the CLI against a real dev agent: a job in "team-a" is shown, listed and
stopped only where its namespace is named (-namespace, $SHOAL_NAMESPACE, or '*' for all)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root

JOB = """
job "ns-web" {
  %s
  datacenters = ["*"]
  group "g" {
    task "t" {
      driver = "container"
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "exec sleep 3600"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
"""


def rows(out: str, first: str) -> list[list[str]]:
    """The table rows of ``out`` whose first cell is ``first``, split into cells."""
    return [line.split() for line in out.splitlines() if line.split()[:1] == [first]]


def test_a_job_in_another_namespace_is_shown_listed_and_stopped(dev_agent, tmp_path, monkeypatch):
    monkeypatch.delenv("SHOAL_NAMESPACE", raising=False)
    team_a = tmp_path / "team-a.hcl"
    team_a.write_text(JOB % 'namespace = "team-a"')
    r = dev_agent.cli("job", "run", str(team_a))
    assert r.code == 0, r.out + r.err

    r = dev_agent.cli("job", "status", "-namespace", "team-a", "ns-web")
    assert r.code == 0, r.err
    assert ["Namespace", "=", "team-a"] in [line.split() for line in r.out.splitlines()]
    assert ["Status", "=", "running"] in [line.split() for line in r.out.splitlines()]

    r = dev_agent.cli("job", "status", "ns-web")  # the default namespace has no such job
    assert r.code == 1 and r.out == ""
    assert "no job matches 'ns-web' in namespace 'default'" in r.err

    monkeypatch.setenv("SHOAL_NAMESPACE", "team-a")
    assert dev_agent.cli("job", "status", "ns-web", "--json").json()["job"]["namespace"] == "team-a"
    assert dev_agent.cli("job", "status", "-namespace", "default", "ns-web").code == 1  # the flag wins
    monkeypatch.delenv("SHOAL_NAMESPACE")

    # The same job id in team-b, from a file that names no namespace: the flag places it.
    plain = tmp_path / "plain.hcl"
    plain.write_text(JOB % "")
    r = dev_agent.cli("job", "run", "-detach", "-namespace", "team-b", str(plain))
    assert r.code == 0, r.out + r.err
    assert dev_agent.cli("job", "status", "-namespace", "team-b", "ns-web", "--json").json()["job"]["namespace"] == "team-b"
    # A file that names its namespace keeps it: the plan is for the running team-a job (no change, exit 0).
    r = dev_agent.cli("job", "plan", "-namespace", "team-b", str(team_a))
    assert r.code == 0, r.out + r.err

    r = dev_agent.cli("job", "status")
    assert r.code == 0 and r.out.strip() == "No running jobs"
    r = dev_agent.cli("job", "status", "-namespace", "*")
    assert r.code == 0, r.err
    assert r.out.split()[:3] == ["ID", "Namespace", "Type"]
    assert sorted(row[1] for row in rows(r.out, "ns-web")) == ["team-a", "team-b"]
    r = dev_agent.cli("job", "status", "-namespace", "*", "ns-web")  # one id in two namespaces: ambiguous
    assert r.code == 1
    assert "job 'ns-web' is in 2 namespaces (team-a/ns-web, team-b/ns-web); name one with -namespace" in r.err

    status = dev_agent.cli("job", "status", "-namespace", "team-a", "ns-web", "--json").json()
    (alloc,) = [a["id"] for a in status["allocations"] if a["desired_status"] == "run"]
    r = dev_agent.cli("alloc", "status", "-namespace", "team-a", alloc[:8])
    assert r.code == 0, r.err
    assert ["Namespace", "=", "team-a"] in [line.split() for line in r.out.splitlines()]
    r = dev_agent.cli("alloc", "status", alloc[:8])
    assert r.code == 1 and f"no allocation matches '{alloc[:8]}' in namespace 'default'" in r.err
    assert dev_agent.cli("alloc", "status", "-namespace", "*", alloc, "--json").json()["allocation"]["id"] == alloc

    evals = {e["id"]: e for e in dev_agent.cli("eval", "list", "-namespace", "*", "--json").json()}
    mine = [e for e in evals.values() if e["job_id"] == "ns-web" and e["namespace"] == "team-a"]
    assert mine and all(e["triggered_by"] == "job-register" for e in mine)
    r = dev_agent.cli("eval", "list", "-namespace", "*")
    assert r.code == 0 and r.out.split()[:6] == ["ID", "Priority", "Triggered", "By", "Job", "ID"]
    listed = {row[0]: row for row in (line.split() for line in r.out.splitlines()[1:])}
    assert {e["id"][:8] for e in evals.values()} == set(listed)
    assert "team-a" in listed[mine[0]["id"][:8]] and "team-b" in {row[4] for row in listed.values()}
    r = dev_agent.cli("eval", "list")
    assert r.code == 0 and r.out.strip() == "No evaluations found"
    assert [e["namespace"] for e in dev_agent.cli("eval", "list", "-namespace", "team-b", "--json").json()] == ["team-b"]
    r = dev_agent.cli("eval", "status", "-namespace", "team-a", mine[0]["id"][:8])
    assert r.code == 0, r.err
    assert ["Status", "=", "complete"] in [line.split() for line in r.out.splitlines()]
    assert dev_agent.cli("eval", "status", mine[0]["id"][:8]).code == 1

    r = dev_agent.cli("job", "stop", "ns-web")  # not in the default namespace
    assert r.code == 1 and "in namespace 'default'" in r.err
    r = dev_agent.cli("job", "stop", "-namespace", "team-a", "ns-web")
    assert r.code == 0, r.out + r.err
    final = dev_agent.cli("job", "status", "-namespace", "team-a", "ns-web", "--json").json()
    assert final["status"] == "dead"
    assert all(a["client_status"] == "complete" for a in final["allocations"])
    # team-b's job of the same id is untouched
    assert dev_agent.cli("job", "status", "-namespace", "team-b", "ns-web", "--json").json()["job"]["stop"] is False
