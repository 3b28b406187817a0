"""The namespace every job, allocation and evaluation command takes: -namespace, then
$SHOAL_NAMESPACE, then "default"; a job file's own namespace wins over both (as in Nomad)."""

from __future__ import annotations

import subprocess

import pytest
from support.cluster import SHOAL

from shoal.cli.common import namespace
from shoal.cli.main import build_parser
from shoal.jobs.loader import load_job_text

COMMANDS = [
    ["job", "run", "j.hcl"], ["job", "plan", "j.hcl"], ["job", "status"], ["job", "status", "web"],
    ["job", "stop", "web"], ["alloc", "status", "a1"], ["alloc", "logs", "a1"], ["alloc", "exec", "a1", "--", "sh"],
    ["alloc", "restart", "a1"], ["alloc", "stop", "a1"], ["eval", "list"], ["eval", "status", "e1"],
]

JOB = """
job "web" {
  %s
  datacenters = ["*"]
  group "g" {
    task "t" {
      driver = "exec"
      config { command = "/bin/true" }
    }
  }
}
"""


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_takes_the_flag_and_the_flag_wins_over_the_environment(argv, monkeypatch):
    parser = build_parser()
    monkeypatch.delenv("SHOAL_NAMESPACE", raising=False)
    assert namespace(parser.parse_args(argv)) == "default"
    monkeypatch.setenv("SHOAL_NAMESPACE", "team-a")
    assert namespace(parser.parse_args(argv)) == "team-a"
    at = 2  # the flag goes after the verb, before the arguments
    assert namespace(parser.parse_args([*argv[:at], "-namespace", "team-b", *argv[at:]])) == "team-b"
    assert namespace(parser.parse_args([*argv[:at], "--namespace=*", *argv[at:]])) == "*"


def test_the_flag_sets_a_jobs_namespace_only_when_its_file_names_none():
    assert load_job_text(JOB % "", "j.hcl", namespace="team-b").job.namespace == "team-b"
    assert load_job_text(JOB % 'namespace = "team-a"', "j.hcl", namespace="team-b").job.namespace == "team-a"
    assert load_job_text(JOB % "", "j.hcl").job.namespace == "default"


def shoal(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a process (in-process runs would leave its logging bound to pytest's captured stderr)."""
    return subprocess.run([SHOAL, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_submitting_to_every_namespace_is_a_usage_error(verb, tmp_path):
    job = tmp_path / "j.hcl"
    job.write_text(JOB % "")
    r = shoal("job", verb, "-namespace", "*", "--address", "127.0.0.1:1", str(job))
    assert r.returncode == 2
    assert "-namespace '*' means every namespace, and a job goes to one" in r.stderr


def test_a_job_file_cannot_name_every_namespace(tmp_path):
    job = tmp_path / "j.hcl"
    job.write_text(JOB % 'namespace = "*"')
    r = shoal("job", "validate", str(job))
    assert r.returncode == 1
    assert 'namespace "*" means every namespace; a job belongs to one' in r.stderr
