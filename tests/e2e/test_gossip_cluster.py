"""Issue 19 end to end: 5 agents gossip on real sockets in a dev cluster (3 servers, 5 client
hosts). Every agent sees every member; a keyring rotation through `shoal operator gossip
keyring` loses none; a killed host is found dead by the others' SWIM, reported, and its node
marked down by the servers (once its own heartbeats confirm the silence), its allocations
replaced elsewhere. Prints the seconds from kill to node down and to replacements running."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from typing import Any

import pytest

from shoal.devcluster import DevCluster
from shoal.devcluster.waiting import wait_for
from support.devhosts import busybox_cluster

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None,
                                                   reason="needs root and runc")]

COUNT = 4
ROUNDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from busybox_cluster(tmp_path_factory, "gossip", clients=5)


def members(c: DevCluster, host) -> dict[str, str]:
    """Member node name -> state, as ``host``'s agent sees them (through the CLI)."""
    r = c.cli("agent", "members", "-node", host.name, "--json")
    assert r.returncode == 0, r.stderr
    return {m["meta"].get("name", m["name"]): m["state"] for m in json.loads(r.stdout)}


def all_alive(c: DevCluster) -> bool:
    names = {h.name for h in c.clients}
    return all({n for n, s in members(c, h).items() if s == "alive"} >= names for h in c.clients)


def test_every_agent_sees_every_member_and_a_key_rotation_loses_none(cluster: DevCluster):
    c = cluster
    wait_for(lambda: all_alive(c), 30, "every agent seeing all 5 members alive")
    status = c.cli("node", "status").stdout  # the servers' view and, beside it, the gossip's
    assert "Gossip" in status and status.count("alive") == 5, status
    listed = c.cli("operator", "gossip", "keyring", "-list", "--json")
    old = {k.split()[0] for keys in json.loads(listed.stdout).values() for k in keys}
    assert len(old) == 1, listed.stdout  # one cluster key
    new = c.cli("operator", "gossip", "keyring", "-generate").stdout.strip()
    for step in (["-install", new], ["-use", new], ["-remove", old.pop()]):
        r = c.cli("operator", "gossip", "keyring", *step)
        assert r.returncode == 0, r.stdout + r.stderr
        time.sleep(1.0)  # gossip goes on under the changed keyrings (probes every 0.5 s)
        assert all_alive(c), f"a member was lost after keyring {step[0]}"
    final = json.loads(c.cli("operator", "gossip", "keyring", "-list", "--json").stdout)
    assert all(keys == [f"{new} (primary)"] for keys in final.values()), final
    logs = "".join(h.log_path("client").read_text() for h in c.clients)
    assert "reported a dead member" not in logs


def job() -> dict[str, Any]:
    return {"id": "g", "groups": [{"name": "g", "count": COUNT, "tasks": [{
        "name": "sleep", "driver": "container",
        "config": {"image": "busybox:latest", "command": "/bin/sleep", "args": ["3600"]},
        "resources": {"cpu": 20, "memory": 16}, "kill_timeout": 1.0}]}]}


def running_on(c: DevCluster) -> dict[str, int]:
    names = {n["id"]: name for name, n in c.nodes().items()}
    out: dict[str, int] = {}
    for a in c.allocations("g"):
        if a["client_status"] == "running" and a["desired_status"] == "run":
            out[names[a["node_id"]]] = out.get(names[a["node_id"]], 0) + 1
    return out


def test_a_killed_host_is_marked_down_by_gossip_and_its_allocations_replaced(cluster: DevCluster):
    c = cluster
    c.call("Job.Register", {"job": job()})
    wait_for(lambda: sum(running_on(c).values()) == COUNT, 60, f"{COUNT} allocations running")
    down_s, replaced_s = [], []
    for _ in range(ROUNDS):
        wait_for(lambda: all_alive(c), 30, "every member alive before the kill")
        placed = running_on(c)
        victim = c.host(max(placed, key=placed.__getitem__))
        t_kill = c.kill(victim, containers=True)
        marks: dict[str, float] = {}

        def replaced() -> bool:
            if "down" not in marks and c.nodes()[victim.name]["status"] == "down":
                marks["down"] = time.monotonic() - t_kill
            now = running_on(c)
            return "down" in marks and victim.name not in now and sum(now.values()) == COUNT

        wait_for(replaced, 60, "the victim down and its allocations replaced", interval=0.05)
        down_s.append(marks["down"])
        replaced_s.append(time.monotonic() - t_kill)
        logs = "".join(h.log_path("client").read_text() for h in c.clients if h is not victim)
        assert "reported a dead member" in logs  # the servers heard it from gossip
        c.start_host(victim)
        wait_for(lambda: c.nodes()[victim.name]["status"] == "ready", 60, "the victim's node ready again")
    figures = {"rounds": ROUNDS, "node_down_seconds": [round(s, 2) for s in down_s],
               "replacement_running_seconds": [round(s, 2) for s in replaced_s],
               "node_down_median_seconds": round(statistics.median(down_s), 2),
               "replacement_running_median_seconds": round(statistics.median(replaced_s), 2)}
    print("\n" + json.dumps(figures))
    c.call("Job.Deregister", {"job_id": "g", "purge": True})
