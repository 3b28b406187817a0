"""Acceptance: SIGKILL of the agent does not stop its containers; the restarted agent re-attaches.

With 3 containers running (each with a health check), the agent is SIGKILLed and
started again on the same data directory: the same 3 runc containers, with the
same pids, keep running and healthy, and nothing is started twice. With the
server and the client as separate processes, a client stopped gracefully leaves
its tasks running too, and an allocation stopped while it was away is cleaned up
when it comes back.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cluster import SHOAL, DevAgent, ServerProc, cleanup_allocs, free_port, runc_list, wait_for

from shoal.agent.names import container_id

pytestmark = pytest.mark.root

JOB = """
job "keep" {
  group "web" {
    count = 3
    network {
      port "http" {
        to = 8080
      }
    }
    service {
      name = "keep"
      port = "http"
      check {
        type     = "http"
        path     = "/"
        interval = "500ms"
        timeout  = "1s"
      }
    }
    task "httpd" {
      driver       = "docker"
      kill_timeout = "200ms" # httpd is pid 1: it ignores SIGTERM
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports   = ["http"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
"""


def runc_state() -> dict[str, int]:
    """runc container id -> pid, for shoal's running containers."""
    out = runc_list("--format", "json")
    import json

    return {c["id"]: c["pid"] for c in json.loads(out or "null") or [] if c["status"] == "running"}


def rpc(address: str, method: str, req: dict) -> dict:
    """One call to a server, without the CLI's start-up cost (tests poll with it)."""
    from shoal.rpc.sync import call

    return call(address, method, req, timeout=10)


def allocs(address: str, job: str) -> list[dict]:
    status = rpc(address, "Job.Get", {"job_id": job})
    return [rpc(address, "Alloc.Get", {"alloc_id": a["id"]})["allocation"] for a in status["allocations"]]


def all_healthy(address: str, job: str, n: int) -> list[dict] | None:
    got = [a for a in allocs(address, job) if a["desired_status"] == "run"]
    if len(got) == n and all(a["client_status"] == "running" and a.get("healthy") is True for a in got):
        return got
    return None


class RestartableDevAgent(DevAgent):
    """A dev agent that can be SIGKILLed and started again on the same data directory and ports."""

    def start(self, *extra: str) -> DevAgent:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [SHOAL, "agent", "--dev", "--bind", self.address, "--raft-bind", f"127.0.0.1:{self.raft_port}",
             "--data-dir", str(self.data_dir), "--image-dir", str(self.image_dir), "--log-json",
             "--default-registry", "", "--dns-port", str(self.dns_port), "--gossip-bind", "127.0.0.1:0", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for(self._ready, 30, "the dev agent's node to be ready")
        return self

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()


def test_sigkill_and_restart_reattaches(tmp_path: Path, image_dir: Path) -> None:
    agent = RestartableDevAgent(root=tmp_path / "agent", image_dir=image_dir)
    job = tmp_path / "keep.hcl"
    job.write_text(JOB)
    try:
        _sigkill_and_restart(agent, job)
    except AssertionError:
        log = agent.root / "agent.log"
        print("agent log (tail):\n" + (log.read_text()[-6000:] if log.exists() else "(none)"))
        raise
    finally:
        agent.stop()


def _sigkill_and_restart(agent: RestartableDevAgent, job: Path) -> None:
    agent.start()
    r = agent.cli("job", "run", str(job))
    assert r.code == 0, r.out + r.err
    before_allocs = wait_for(lambda: all_healthy(agent.address, "keep", 3), 30, "3 healthy allocations")
    before = runc_state()
    ours = {cid: pid for cid, pid in before.items() if any(a["id"] in cid for a in before_allocs)}
    assert len(ours) == 3

    agent.sigkill()
    assert {cid: runc_state().get(cid) for cid in ours} == ours  # the containers did not notice

    agent.start()
    after_allocs = wait_for(lambda: all_healthy(agent.address, "keep", 3), 30, "3 healthy allocations after restart")
    after = runc_state()
    assert {cid: after.get(cid) for cid in ours} == ours  # same ids, same pids
    assert len([cid for cid in after if cid.startswith("shoal-") and any(a["id"] in cid for a in after_allocs)]) == 3
    assert {a["id"] for a in after_allocs} == {a["id"] for a in before_allocs}  # no replacement placed
    for a in after_allocs:  # started once, never again
        events = [e["type"] for e in a["task_states"]["httpd"]["events"]]
        assert events.count("Started") == 1 and "Terminated" not in events, events
    logs = (agent.root / "agent.log").read_text()
    assert logs.count("re-attached to a running task") == 3


def _print_diagnostics(root: Path, address: str, job: str) -> None:
    """What a failure needs to be understood: each allocation's state and events, runc's view, the logs."""
    import json

    try:
        for a in allocs(address, job):
            events = [(e["type"], e.get("message", "")) for t in a["task_states"].values() for e in t["events"]]
            print(f"alloc {a['id']}: desired={a['desired_status']} client={a['client_status']} events={events}")
    except Exception as exc:
        print(f"(allocations unavailable: {exc})")
    print("runc list:", json.dumps([(c["id"], c["status"], c["pid"]) for c in json.loads(runc_list("--format", "json") or "null") or []]))
    for name in ("client", "server", "agent"):
        log = root / f"{name}.log"
        print(f"{name} log (tail):\n" + (log.read_text(errors="replace")[-12000:] if log.exists() else "(none)"))


def _spawn(root: Path, name: str, *args: str) -> subprocess.Popen:
    log = open(root / f"{name}.log", "ab")
    try:
        return subprocess.Popen([SHOAL, "agent", "--log-json", *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        log.close()


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_exit(proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Wait for an agent to exit; if it does not, have it print its stacks (SIGUSR1) and fail with them."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        raise AssertionError(f"the agent did not exit within {timeout}s of SIGTERM:\n"
                             + log.read_text(errors="replace")[-20000:]) from None


class ServerAndClient:
    """A server and a client agent as separate processes, the client SIGKILLed and started again at will
    on the same data directory."""

    def __init__(self, root: Path, image_dir: Path, health_interval: str = "200ms") -> None:
        self.root = root
        # on a loaded machine a restarted agent can take more than the default 5 s to be back
        self.server = ServerProc(root, host="127.0.0.1", bootstrap_expect=1, extra=("--heartbeat-ttl", "60"))
        self.address = self.server.address
        self.client_data = root / "client"
        self.job = root / "keep.hcl"
        self.job.write_text(JOB.replace('interval = "500ms"', f'interval = "{health_interval}"'))
        self._client_args = ("--client", "--data-dir", str(self.client_data), "--servers", self.address,
                             "--image-dir", str(image_dir), "--node-name", "c1", "--default-registry", "",
                             "--dns-port", str(free_port()), "--gossip-bind", "127.0.0.1:0")
        self.client: subprocess.Popen | None = None

    def start(self) -> ServerAndClient:
        self.server.start()
        self.start_client()
        wait_for(self._ready, 30, "the client node to be ready")
        return self

    def _ready(self) -> bool:
        try:
            return any(n["status"] == "ready" for n in rpc(self.address, "Node.List", {})["nodes"])
        except Exception:
            return False

    def start_client(self) -> None:
        self.client = _spawn(self.root, "client", *self._client_args)

    def kill_client(self) -> None:
        assert self.client is not None
        self.client.send_signal(signal.SIGKILL)
        self.client.wait()

    def run_job(self) -> dict[str, int]:
        """Runs the 3-container job; returns its allocations' container pids by allocation id."""
        r = self.server.cli("job", "run", str(self.job), timeout=120)
        assert r.code == 0, r.out + r.err
        ids = sorted(a["id"] for a in rpc(self.address, "Job.Get", {"job_id": "keep"})["allocations"])
        states = runc_state()
        return {i: states[container_id(i, "httpd")] for i in ids}

    def stop(self) -> None:
        _stop(self.client)
        self.server.stop()
        cleanup_allocs(self.client_data / "client" / "allocs")  # SIGTERM leaves the tasks running


def test_allocation_stopped_while_the_client_was_away(tmp_path: Path, image_dir: Path) -> None:
    cluster = ServerAndClient(tmp_path, image_dir)
    addr = cluster.address
    try:
        cluster.start()
        pids = cluster.run_job()
        ids = sorted(pids)

        cluster.kill_client()
        gone = ids[0]
        # while the client is away (an RPC rather than the CLI: be back well within the heartbeat TTL)
        assert rpc(addr, "Alloc.Stop", {"alloc_id": gone})["eval_id"]
        cluster.start_client()

        wait_for(lambda: container_id(gone, "httpd") not in runc_state(), 30, "the stopped allocation's container to go")
        states = runc_state()
        for i in ids[1:]:
            assert states.get(container_id(i, "httpd")) == pids[i]  # the others were re-attached, untouched
        stopped = wait_for(lambda: (lambda a: a if a["client_status"] == "complete" else None)(
            rpc(addr, "Alloc.Get", {"alloc_id": gone})["allocation"]), 20, "the stopped allocation to be complete")
        assert stopped["desired_status"] == "stop"

        cluster.client.send_signal(signal.SIGTERM)  # a graceful exit of a client leaves its tasks running too
        _wait_exit(cluster.client, tmp_path / "client.log")
        states = runc_state()
        assert {i: states.get(container_id(i, "httpd")) for i in ids[1:]} == {i: pids[i] for i in ids[1:]}
    except AssertionError:
        _print_diagnostics(tmp_path, addr, "keep")
        raise
    finally:
        cluster.stop()


def test_allocations_whose_state_files_were_lost_start_again(tmp_path: Path, image_dir: Path) -> None:
    """Allocations the restarted client finds no state file for (lost, or unreadable) while the servers
    still place them here: their old containers are destroyed as unclaimed, then they start afresh
    under the same container names. The starts wait for that destruction: racing it, they failed with
    "already running" and the destruction then killed their containers."""
    cluster = ServerAndClient(tmp_path, image_dir)
    try:
        cluster.start()
        pids = cluster.run_job()
        wait_for(lambda: all_healthy(cluster.address, "keep", 3), 30, "3 healthy allocations")
        cluster.kill_client()
        for alloc_id in pids:
            (cluster.client_data / "client" / "allocs" / alloc_id / "state.msgpack").unlink()

        cluster.start_client()

        def started_afresh() -> bool:
            states = runc_state()
            return all(states.get(container_id(i, "httpd")) not in (None, pid) for i, pid in pids.items())

        wait_for(started_afresh, 30, "new containers for the 3 allocations")
        after = wait_for(lambda: all_healthy(cluster.address, "keep", 3), 30, "3 healthy allocations after restart")
        assert {a["id"] for a in after} == set(pids)  # the same allocations, none replaced
        assert started_afresh()
        for a in after:
            events = [e["type"] for e in a["task_states"]["httpd"]["events"]]
            assert "Driver Failure" not in events and events.count("Started") == 1, events
    except AssertionError:
        _print_diagnostics(tmp_path, cluster.address, "keep")
        raise
    finally:
        cluster.stop()
