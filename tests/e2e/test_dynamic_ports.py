"""A client's dynamic port range (``shoal agent --min-dynamic-port/--max-dynamic-port``) and
reserved ports, end to end: on the node record, bounding the ports its allocations get, and a
full range or a taken static port reported by ``shoal job run`` as a placement failure."""

from __future__ import annotations

import json

import pytest
from support.cluster import DevAgent

from shoal.errors import InvalidRequest
from shoal.rpc.sync import call

pytestmark = pytest.mark.root

JOB = """
job "%s" {
  datacenters = ["*"]
  group "g" {
    count = %d
    network {
      port "http" { %s }
    }
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "exec sleep 3600"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
"""


@pytest.fixture
def ranged_agent(tmp_path, image_dir):
    low = 24310  # a two-port dynamic range
    agent = DevAgent(root=tmp_path / "agent", image_dir=image_dir)
    try:
        yield agent.start("--min-dynamic-port", str(low), "--max-dynamic-port", str(low + 1),
                          "--reserved-ports", "22,8000-8002"), low
    finally:
        agent.stop()


def run(agent: DevAgent, tmp_path, name: str, count: int, port: str):
    path = tmp_path / f"{name}.hcl"
    path.write_text(JOB % (name, count, port))
    return agent.cli("job", "run", "--timeout", "60", str(path))


def test_a_nodes_dynamic_range_bounds_its_ports_and_a_full_one_is_a_placement_failure(ranged_agent, tmp_path):
    agent, low = ranged_agent
    (node,) = json.loads(agent.cli("node", "status", "--json").out)
    got = agent.cli("node", "status", "--json", node["id"]).json()["node"]
    assert (got["min_dynamic_port"], got["max_dynamic_port"]) == (low, low + 1)
    assert got["reserved_ports"] == [22, 8000, 8001, 8002]

    r = run(agent, tmp_path, "web", 3, "")
    assert r.code == 1, r.out + r.err
    assert "Task group 'g': 1 allocation(s) not placed" in r.out, r.out
    assert "Resources exhausted on 1 node(s): network: dynamic port selection failed" in r.out, r.out
    status = agent.cli("job", "status", "web", "--json").json()
    ports = []
    for a in status["allocations"]:
        alloc = agent.cli("alloc", "status", "--json", a["id"]).json()["allocation"]
        ports += [p["value"] for p in alloc["ports"]]
    assert sorted(ports) == [low, low + 1]

    # a static port: one an allocation holds collides, a reserved one too; one outside the range is fine
    r = run(agent, tmp_path, "taken", 1, f"static = {low}")
    assert r.code == 1 and "Resources exhausted on 1 node(s): network: port collision" in r.out, r.out + r.err
    r = run(agent, tmp_path, "reserved", 1, "static = 8001")
    assert r.code == 1 and "network: port collision" in r.out, r.out + r.err
    r = run(agent, tmp_path, "outside", 1, f"static = {low + 2}")
    assert r.code == 0, r.out + r.err
    for job in ("web", "outside"):
        assert agent.cli("job", "stop", job).code == 0

    # the server refuses a node whose range is no range (an agent's flags never send one)
    bad = {"id": "bad-node", "name": "bad", "min_dynamic_port": 80, "max_dynamic_port": 90}
    with pytest.raises(InvalidRequest, match="node bad: min_dynamic_port 80: must be between 1024 and 65535"):
        call(agent.address, "Node.Register", {"node": bad}, timeout=10)
