"""Three (and more) real server processes on 127.0.0.x: failover, restart, quorum loss, membership."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from support.cluster import ServerCluster, wait_for

from shoal.errors import NoLeader, ShoalError, Unavailable
from shoal.rpc.sync import call
from shoal.rpc.transport import RpcClient

EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "example.hcl"


def job(i: int) -> dict:
    return {
        "id": f"job-{i:04d}",
        "groups": [{"name": "g", "count": 1, "tasks": [
            {"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}, "resources": {"cpu": 10, "memory": 10}}
        ]}],
    }


@pytest.fixture
def cluster(tmp_path):
    c = ServerCluster(tmp_path, 3)
    try:
        yield c.start()
    finally:
        c.stop()


async def _writers(addresses: list[str], total: int, clients: int, acked: list[str], on_progress) -> None:
    """``clients`` concurrent writers registering ``total`` jobs; a write counts only once acknowledged."""
    next_id = iter(range(total))

    async def writer(k: int) -> None:
        conns = [RpcClient(a, timeout=15) for a in addresses]
        try:
            for i in next_id:
                deadline = time.monotonic() + 60
                attempt = k
                while True:
                    try:
                        await conns[attempt % len(conns)].call("Job.Register", {"job": job(i)}, timeout=15)
                        acked.append(f"job-{i:04d}")
                        on_progress(len(acked))
                        break
                    except (NoLeader, Unavailable):  # retryable: try another server
                        attempt += 1
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.05)
        finally:
            for c in conns:
                await c.close()

    await asyncio.gather(*(writer(k) for k in range(clients)))


def test_leader_killed_under_write_load_loses_nothing(cluster):
    leader = cluster.wait_leader()
    acked: list[str] = []
    killed = {}

    def progress(n: int) -> None:
        if n >= 250 and not killed:
            killed["at"] = time.monotonic()
            leader.kill()

    addresses = [s.address for s in cluster.servers]
    asyncio.run(_writers(addresses, 500, 8, acked, progress))
    new_leader = cluster.wait_leader()
    election = time.monotonic() - killed["at"]
    assert new_leader is not leader
    jobs = {j["id"] for j in call(new_leader.address, "Job.List", {})["jobs"]}
    lost = sorted(set(acked) - jobs)
    print(json.dumps({"acknowledged": len(acked), "lost": len(lost), "new_leader_seconds": round(election, 3)}))
    assert len(acked) == 500
    assert lost == []


def test_full_cluster_restart_restores_everything(cluster):
    leader = cluster.wait_leader()
    node = {"id": "node-1", "name": "node-1", "status": "ready", "drivers": ["raw_exec"],
            "resources": {"cpu": 4000, "memory": 8192, "disk": 10000, "cores": 4}}
    call(leader.address, "Node.Register", {"node": node})
    for i in range(20):
        call(leader.address, "Job.Register", {"job": job(i)})
    wait_for(lambda: len(call(leader.address, "Alloc.List", {})["allocations"]) == 20, 30, "20 allocations")

    def state(addr: str) -> dict:
        jobs = {j["id"]: j["version"] for j in call(addr, "Job.List", {})["jobs"]}
        full = {j: call(addr, "Job.Get", {"job_id": j})["job"] for j in jobs}
        allocs = {a["id"]: (a["name"], a["node_id"], a["job_version"]) for a in call(addr, "Alloc.List", {})["allocations"]}
        return {
            "jobs": {j: (v["version"], v["create_index"], v["job_modify_index"]) for j, v in full.items()},
            "allocs": allocs,
        }

    before = state(leader.address)
    before_index = call(leader.address, "Server.Info", {})["index"]
    for s in cluster.servers:
        s.kill()
    for s in cluster.servers:
        s.start()
    leader = cluster.wait_leader()
    wait_for(lambda: call(leader.address, "Server.Info", {})["index"] >= before_index, 30, "the state to be replayed")
    after = state(leader.address)
    assert after["jobs"] == before["jobs"]
    assert after["allocs"] == before["allocs"]
    assert len(after["allocs"]) == 20


def test_without_quorum_writes_fail_fast_then_resume(cluster):
    leader = cluster.wait_leader()
    others = [s for s in cluster.servers if s is not leader]
    survivor, other = others
    leader.kill()
    other.kill()
    t0 = time.monotonic()
    r = survivor.cli("job", "run", "--detach", str(EXAMPLE), timeout=30)
    took = time.monotonic() - t0
    print(json.dumps({"no_leader_seconds": round(took, 2)}))
    assert r.code == 1, r.out + r.err
    assert "no cluster leader" in r.err
    assert took <= 10.0, f"the write failed only after {took:.2f}s"
    other.start()
    cluster.wait_leader(timeout=60)
    r = wait_for(lambda: (lambda r: r if r.code == 0 else None)(survivor.cli("job", "run", "--detach", str(EXAMPLE))),
                 30, "the write to succeed once quorum is back")
    assert "Evaluation ID" in r.out


def test_servers_join_and_leave_a_live_cluster(cluster):
    def peers() -> list[str]:
        r = cluster.servers[0].cli("operator", "raft", "list-peers", "--json")
        assert r.code == 0, r.err
        return sorted(p["address"] for p in json.loads(r.out)["peers"])

    assert len(peers()) == 3
    fourth = cluster.add()
    wait_for(lambda: len(peers()) == 4, 30, "a 4th peer")
    fifth = cluster.add()
    wait_for(lambda: len(peers()) == 5, 30, "a 5th peer")
    # the new servers have caught up and serve consistent reads
    call(cluster.servers[0].address, "Job.Register", {"job": job(1)})
    wait_for(lambda: any(j["id"] == "job-0001" for j in call(fifth.address, "Job.List", {"stale": True})["jobs"]),
             30, "the 5th server to replicate")
    members = json.loads(cluster.servers[0].cli("server", "members", "--json").out)
    assert len(members) == 5
    r = cluster.servers[0].cli("operator", "raft", "remove-peer", fourth.raft)
    assert r.code == 0, r.out + r.err
    fourth.stop()
    wait_for(lambda: fourth.raft not in peers() and len(peers()) == 4, 30, "the 4th peer to be removed")
    assert len(json.loads(cluster.servers[0].cli("server", "members", "--json").out)) == 4
    # the cluster still commits
    call(cluster.servers[1].address, "Job.Register", {"job": job(2)})


def test_any_server_forwards_and_stale_reads_answer_locally(cluster):
    leader = cluster.wait_leader()
    follower = next(s for s in cluster.servers if s is not leader)
    r = follower.cli("job", "run", "--detach", str(EXAMPLE))
    assert r.code == 0, r.err
    assert [j["id"] for j in json.loads(follower.cli("job", "status", "--json").out)] == ["example"]
    wait_for(lambda: json.loads(follower.cli("job", "status", "--json", "--stale").out), 10, "a stale read")
    assert call(follower.address, "Status.Leader", {})["leader_api"] == leader.address


def test_event_stream_reports_committed_changes(cluster):
    leader = cluster.wait_leader()
    follower = next(s for s in cluster.servers if s is not leader)

    async def run() -> list[dict]:
        seen: list[dict] = []
        async with RpcClient(follower.address) as c:
            stream = c.stream("Event.Stream", {"topics": ["Job"]})
            first = await stream.__anext__()  # subscribed
            assert first["events"] == []
            await asyncio.to_thread(call, leader.address, "Job.Register", {"job": job(7)})
            batch = await asyncio.wait_for(stream.__anext__(), 10)
            seen.extend(batch["events"])
            await stream.aclose()
        return seen

    events = asyncio.run(run())
    assert [(e["topic"], e["type"], e["key"]) for e in events] == [("Job", "JobRegistered", "job-0007")]


def test_unreachable_leader_is_not_a_crash():
    with pytest.raises(ShoalError):
        call("127.0.0.1:1", "Job.List", {}, timeout=2)


def test_a_restarted_follower_catches_up(cluster):
    leader = cluster.wait_leader()
    follower = next(s for s in cluster.servers if s is not leader)
    follower.kill()
    for i in range(30):
        call(leader.address, "Job.Register", {"job": job(i)})
    follower.start()

    def caught_up() -> bool:
        try:
            jobs = call(follower.address, "Job.List", {"stale": True}, timeout=2)["jobs"]
        except ShoalError:
            return False
        return len(jobs) == 30

    wait_for(caught_up, 30, "the restarted follower to catch up")
