"""Issue 18 end to end, on a dev cluster of network-namespace hosts: a `web` service (count 2,
http check) is found by name from a client allocation on another host, through the agent's DNS
server that its /etc/resolv.conf names (busybox nslookup and wget in the container); an
instance whose check fails drops out of the answers within 2 s and comes back when healthy; an
instance whose host is killed drops out within 5 s; `shoal service list|info` show the catalog.

The cluster's servers run with a 3 s heartbeat TTL: until gossip (issue 19) marks a dead host
down sooner, the servers notice a killed host through its missed heartbeats (5 s by default).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from shoal.devcluster import DevCluster
from shoal.devcluster.waiting import wait_for
from support.devhosts import busybox_cluster, host_of, node_id_of, running

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runc") is None
                                                   or shutil.which("dig") is None, reason="needs root, runc and dig")]

HTTPD = ("mkdir -p /www && echo \"hello from $NOMAD_ALLOC_ID\" > /www/index.html && echo ok > /www/health && "
         "exec httpd -f -p 8080 -h /www")


def web_job() -> dict[str, Any]:
    return {
        "id": "web",
        "constraints": [{"operator": "distinct_hosts", "value": "true"}],
        "groups": [{"name": "web", "count": 2,
                    "networks": [{"mode": "bridge", "ports": [{"label": "http", "to": 8080}]}],
                    "services": [{"name": "web", "port": "http", "tags": ["v1"], "checks": [
                        {"name": "alive", "type": "http", "port": "http", "path": "/health", "interval": 0.3,
                         "timeout": 1.0}]}],
                    "tasks": [{"name": "httpd", "driver": "container",
                               "config": {"image": "busybox:latest", "command": "/bin/sh", "args": ["-c", HTTPD]},
                               "resources": {"cpu": 20, "memory": 16}, "kill_timeout": 1.0}]}],
    }


def client_job(node_id: str) -> dict[str, Any]:
    return {
        "id": "client",
        "constraints": [{"attribute": "${node.unique.id}", "operator": "=", "value": node_id}],
        "groups": [{"name": "c", "count": 1, "networks": [{"mode": "bridge"}], "tasks": [{
            "name": "sh", "driver": "container",
            "config": {"image": "busybox:latest", "command": "/bin/sleep", "args": ["3600"]},
            "resources": {"cpu": 20, "memory": 16}, "kill_timeout": 1.0}]}],
    }


def dig(host, *query: str) -> list[str]:
    """``dig +short`` against the agent's DNS server on a host's loopback (port 8600)."""
    out = subprocess.run([*host.nsenter(), "dig", "+short", "+tries=1", "+time=1", "@127.0.0.1", "-p", "8600", *query],
                         capture_output=True, text=True, timeout=10)
    return sorted(line for line in out.stdout.splitlines() if line and not line.startswith(";"))


def exec_in(c: DevCluster, alloc_id: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return c.cli("alloc", "exec", alloc_id, *argv, timeout=30)


def until_answer(host, expected: list[str], deadline: float) -> float:
    """Seconds until ``web.service.shoal`` answers exactly ``expected`` on ``host`` (fails past ``deadline``)."""
    t0 = time.monotonic()
    while True:
        got = dig(host, "web.service.shoal")
        if got == sorted(expected):
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline:
            raise AssertionError(f"web.service.shoal answered {got} after {deadline} s, expected {sorted(expected)}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from busybox_cluster(tmp_path_factory, "discovery", server_flags=["--heartbeat-ttl", "3"])


def test_a_service_is_found_by_name_and_follows_health_and_hosts(cluster: DevCluster):
    c = cluster
    c.call("Job.Register", {"job": web_job()})
    web = wait_for(lambda: running(c, "web", 2), 60, "2 web allocations running")
    used = {a["node_id"] for a in web}
    third = next(h for h in c.clients if node_id_of(c, h) not in used)
    c.call("Job.Register", {"job": client_job(node_id_of(c, third))})
    (client,) = wait_for(lambda: running(c, "client", 1), 60, "the client allocation running")
    addresses = sorted(a["network_status"]["address"] for a in web)
    until_answer(third, addresses, 10)  # both healthy, seen by the third host's agent

    # from inside the client's container: its resolv.conf names the agent on the bridge
    resolv = exec_in(c, client["id"], "cat", "/etc/resolv.conf").stdout
    assert "search service.shoal" in resolv and "nameserver 10." in resolv, resolv
    looked_up = exec_in(c, client["id"], "nslookup", "web.service.shoal")
    assert all(a in looked_up.stdout for a in addresses), looked_up.stdout + looked_up.stderr
    page = exec_in(c, client["id"], "wget", "-q", "-O", "-", "http://web.service.shoal:8080/")
    assert page.stdout.startswith("hello from "), page.stdout + page.stderr
    plain = exec_in(c, client["id"], "wget", "-q", "-O", "-", "http://web:8080/")  # the search domain
    assert plain.stdout.startswith("hello from "), plain.stdout + plain.stderr

    # SRV carries the port; an unknown name is NXDOMAIN
    srv = dig(third, "SRV", "_web._tcp.service.shoal")
    assert len(srv) == 2 and all(r.split()[2] == "8080" for r in srv), srv
    nx = subprocess.run([*third.nsenter(), "dig", "@127.0.0.1", "-p", "8600", "nope.service.shoal"],
                        capture_output=True, text=True, timeout=10).stdout
    assert "status: NXDOMAIN" in nx, nx

    # the catalog through the CLI
    listed = c.cli("service", "list").stdout
    assert "web" in listed and "[v1]" in listed, listed
    info = c.cli("service", "info", "web").stdout
    assert info.count("healthy") == 2 and all(a in info for a in addresses), info

    # one instance's check fails: out within 2 s; healthy again: back
    sick, well = web
    assert exec_in(c, sick["id"], "rm", "/www/health").returncode == 0
    dropped = until_answer(third, [well["network_status"]["address"]], 2.0)
    assert "unhealthy" in c.cli("service", "info", "web").stdout
    assert exec_in(c, sick["id"], "sh", "-c", "echo ok > /www/health").returncode == 0
    back = until_answer(third, addresses, 5.0)

    # the host of an instance is killed: out within 5 s
    c.kill(host_of(c, well["node_id"]))
    gone = until_answer(third, [sick["network_status"]["address"]], 5.0)
    print(f"\ncheck failing -> dropped: {dropped:.2f} s; healthy -> back: {back:.2f} s; host killed -> dropped: "
          f"{gone:.2f} s")
    c.call("Job.Deregister", {"job_id": "client", "purge": True})
    c.call("Job.Deregister", {"job_id": "web", "purge": True})
    wait_for(lambda: not c.call("Service.Catalog", {})["registrations"], 30, "the catalog empty after the jobs stop")
    c.start_host(host_of(c, well["node_id"]))
