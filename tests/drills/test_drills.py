"""Failover drills on a real cluster: every host a network namespace on an underlay bridge,
every server and agent a real ``shoal agent`` process (``shoal.devcluster``).

Each drill prints one JSON line of its figures (``make drills`` collects them over three runs
and prints medians). Drills 1, 3 and 6 also run in the default suite (marker ``default_drill``);
the default ``-m`` deselects the others, so run one with ``pytest -m drill -k drill4``.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from drills.helpers import (
    WriteLoad,
    replicas_disagree,
    job_running_on,
    lost_writes,
    node_names,
    report,
    running_instances,
    sleep_job,
    stale_job_ids,
    write_job,
)

from shoal.devcluster import DevCluster
from shoal.devcluster.waiting import wait_for
from shoal.errors import NoLeader, ShoalError, Unavailable
from shoal.rpc.sync import call
from shoal.rpc.transport import RpcClient

pytestmark = [pytest.mark.drill, pytest.mark.root, pytest.mark.timeout(300)]


async def _first_leader(hosts, since: float, timeout: float = 30.0) -> float:
    """Seconds from ``since`` until one of ``hosts`` says it is the Raft leader."""
    conns = [RpcClient(h.api, timeout=2) for h in hosts]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for c in conns:
                try:
                    if (await c.call("Server.Info", {}, timeout=0.5)).get("is_leader"):
                        return time.monotonic() - since
                except ShoalError:
                    pass
            await asyncio.sleep(0.02)
        raise AssertionError(f"no new leader within {timeout}s")
    finally:
        for c in conns:
            await c.close()


def _wait_all_stale(cluster: DevCluster, hosts, acked: list[str], prefix: str, timeout: float = 60.0) -> None:
    want = set(acked)
    for h in hosts:
        wait_for(lambda: (lambda got: got is not None and want <= got)(stale_job_ids(h.api, prefix)), timeout,
                 f"{h.name} to hold every acknowledged write")


def _place(cluster: DevCluster, job_id: str, count: int) -> dict[str, list[str]]:
    cluster.call("Job.Register", {"job": sleep_job(job_id, count)})
    wait_for(lambda: job_running_on(cluster, job_id) == count, 60, f"{count} running instances of {job_id}", interval=0.2)
    return running_instances(cluster, job_id)


# ---------------------------------------------------------------------------------------------- 1
@pytest.mark.default_drill
def test_drill1_leader_killed_under_write_load(make_cluster):
    """Kill the Raft leader host under write load: a new leader, no acknowledged write lost."""
    c = make_cluster(servers=3)
    leader = c.wait_leader()
    survivors = [h for h in c.servers if h is not leader]
    load = WriteLoad(c.server_addresses, total=400, writers=8, prefix="d1")
    marks: dict = {}

    async def on_progress(n: int) -> None:
        if n >= 150 and "kill" not in marks:
            marks["kill"] = c.kill(leader)
            marks["leader"] = asyncio.get_running_loop().create_task(_first_leader(survivors, marks["kill"]))

    async def run() -> None:
        await load.run(on_progress)
        marks["new_leader_s"] = await marks["leader"]

    asyncio.run(run())
    t_kill = marks["kill"]
    after = [acked for sent, acked in load.attempts if sent > t_kill]  # writes sent after the kill
    new_leader = c.wait_leader()
    lost = lost_writes(c, load.acked, "d1")
    c.start_host(leader)  # the old leader comes back and must agree with the others
    disagree = replicas_disagree(c, c.servers, load.acked, "d1")
    report("1-leader-kill", new_leader_s=marks["new_leader_s"],
           write_outage_s=(min(after) - t_kill) if after else None,
           acked=len(load.acked), lost=len(lost), errors=len(load.other_errors), retried=load.retryable_errors,
           replicas_disagreeing=len(disagree))
    assert new_leader is not leader
    assert load.other_errors == []
    assert len(load.acked) == 400
    assert lost == []
    assert disagree == {}
    assert marks["new_leader_s"] <= 10.0


# ---------------------------------------------------------------------------------------------- 2
def test_drill2_follower_killed_then_catches_up(make_cluster):
    """Kill a follower host, write, bring it back: it catches up, and can then carry the majority."""
    c = make_cluster(servers=3)
    leader = c.wait_leader()
    follower = next(h for h in c.servers if h is not leader)
    c.kill(follower)
    load = WriteLoad([h.api for h in c.servers if h is not follower], total=300, writers=4, prefix="d2")
    asyncio.run(load.run())
    assert load.other_errors == [] and len(load.acked) == 300
    t_back = time.monotonic()
    c.start_host(follower)
    _wait_all_stale(c, [follower], load.acked, "d2")
    catch_up = time.monotonic() - t_back
    # The caught-up follower now has to be part of every majority: kill the old leader.
    t_kill = c.kill(leader)
    c.wait_leader(timeout=30)
    new_leader_s = time.monotonic() - t_kill
    lost = lost_writes(c, load.acked, "d2")
    disagree = replicas_disagree(c, [h for h in c.servers if h is not leader], load.acked, "d2")
    report("2-follower-catch-up", catch_up_s=catch_up, writes_while_down=len(load.acked),
           new_leader_s=new_leader_s, lost=len(lost), replicas_disagreeing=len(disagree))
    assert lost == []
    assert disagree == {}


# ---------------------------------------------------------------------------------------------- 3
@pytest.mark.default_drill
def test_drill3_agent_host_killed_allocations_replaced(make_cluster):
    """Kill an agent host (its containers die with it): its allocations are replaced on other hosts."""
    c = make_cluster(servers=3, clients=3)
    count = 4
    placed = _place(c, "d3", count)
    victim = max(placed, key=lambda h: len(placed[h]))
    on_victim = len(placed[victim])
    t_kill = c.kill(victim, containers=True)
    marks: dict = {}

    def replaced() -> bool:
        if "down" not in marks and c.nodes()[victim]["status"] == "down":
            marks["down"] = time.monotonic() - t_kill
        return job_running_on(c, "d3", exclude_host=victim) == count

    wait_for(replaced, 60, "replacements running on the other hosts", interval=0.1)
    replacement_s = time.monotonic() - t_kill
    instances = running_instances(c, "d3")
    names = node_names(c)
    lost = [a for a in c.allocations("d3") if names.get(a["node_id"]) == victim]
    duplicates = sum(len(v) for v in instances.values()) - count
    report("3-agent-host-kill", replacement_s=replacement_s, node_down_s=marks.get("down"),
           allocs_on_victim=on_victim, duplicates=duplicates)
    assert victim not in instances
    assert duplicates == 0
    assert all(a["client_status"] == "lost" and a["desired_status"] != "run" for a in lost), lost


# ---------------------------------------------------------------------------------------------- 4
def test_drill4_agent_host_partitioned_then_healed(make_cluster):
    """Partition an agent host: replacements run while it is away; after healing, its stale
    allocations are stopped, so no more than ``count`` instances run once things settle."""
    c = make_cluster(servers=3, clients=3)
    count = 4
    placed = _place(c, "d4", count)
    victim = max(placed, key=lambda h: len(placed[h]))
    stale = set(placed[victim])
    t_cut = c.partition(victim, mode="nft")
    wait_for(lambda: job_running_on(c, "d4", exclude_host=victim) == count, 60,
             "replacements running while the host is away", interval=0.1)
    replacement_s = time.monotonic() - t_cut
    during = sum(len(v) for v in running_instances(c, "d4").values()) - count
    t_heal = c.heal(victim)

    def settled() -> bool:
        inst = running_instances(c, "d4")
        return (c.nodes()[victim]["status"] == "ready" and sum(len(v) for v in inst.values()) == count
                and not stale & set(inst.get(victim, [])) and job_running_on(c, "d4") == count)

    wait_for(settled, 120, "the healed host to stop its stale allocations", interval=0.2)
    settle_s = time.monotonic() - t_heal
    time.sleep(3)  # and it stays that way
    inst = running_instances(c, "d4")
    duplicates = sum(len(v) for v in inst.values()) - count
    report("4-agent-host-partition", replacement_s=replacement_s, settle_s=settle_s, allocs_on_victim=len(stale),
           duplicates_while_away=during, duplicates=duplicates)
    assert duplicates == 0
    assert job_running_on(c, "d4") == count


# ---------------------------------------------------------------------------------------------- 5
def test_drill5_two_of_three_servers_killed(make_cluster):
    """Kill 2 of 3 server hosts: writes are refused cleanly ("no cluster leader", within 10 s);
    one comes back: service resumes, nothing acknowledged before is lost."""
    c = make_cluster(servers=3)
    leader = c.wait_leader()
    before = WriteLoad(c.server_addresses, total=50, writers=2, prefix="d5")
    asyncio.run(before.run())
    survivor, other = [h for h in c.servers if h is not leader]
    c.kill(leader)
    c.kill(other)
    t0 = time.monotonic()
    with pytest.raises(NoLeader) as refused:
        call(survivor.api, "Job.Register", {"job": write_job(9999, "d5")}, timeout=30)
    refused_s = time.monotonic() - t0
    stale_ok = stale_job_ids(survivor.api, "d5") is not None
    t_back = time.monotonic()
    c.start_host(other)

    def write_once() -> bool:
        try:
            call(survivor.api, "Job.Register", {"job": write_job(10000, "d5")}, timeout=12)
            return True
        except (NoLeader, Unavailable):
            return False

    wait_for(write_once, 60, "a write to succeed once a quorum is back", interval=0.1)
    resume_s = time.monotonic() - t_back
    lost = lost_writes(c, before.acked, "d5")
    report("5-quorum-loss", refused_s=refused_s, refused_with=refused.value.code, stale_reads=stale_ok,
           resume_s=resume_s, lost=len(lost))
    assert "no cluster leader" in str(refused.value)
    assert refused_s <= 11.0
    assert stale_ok
    assert lost == []


# ---------------------------------------------------------------------------------------------- 6
@pytest.mark.default_drill
def test_drill6_whole_cluster_killed_and_restarted(make_cluster):
    """SIGKILL every process of the cluster, restart everything: all state is back and the
    running containers are re-adopted, not restarted (needs issue 6: agent restore)."""
    c = make_cluster(servers=3, clients=2)
    count = 3
    _place(c, "d6", count)
    for i in range(20):
        c.call("Job.Register", {"job": write_job(i, "d6w")})
    jobs_before = {j["id"]: j["version"] for j in c.call("Job.List", {})["jobs"]}
    allocs_before = {a["id"]: (a["name"], a["node_id"]) for a in c.allocations("d6")}
    containers_before = {x["id"]: x["pid"] for x in c.containers() if x["status"] == "running"}
    assert len(containers_before) == count
    for h in c.hosts.values():
        c.kill(h, containers=False)
    assert {x["id"] for x in c.containers() if x["status"] == "running"} == set(containers_before), \
        "containers live in their own namespaces and outlive the agent"
    t0 = time.monotonic()
    for h in c.hosts.values():
        c.start_host(h)
    c.wait_ready(60)
    leader_s = time.monotonic() - t0

    def recovered() -> bool:
        return job_running_on(c, "d6") == count and all(n["status"] == "ready" for n in c.nodes().values())

    wait_for(recovered, 60, "the job's allocations to be running again", interval=0.2)
    recover_s = time.monotonic() - t0
    time.sleep(3)  # a late restart or duplicate would show up now
    jobs_after = {j["id"]: j["version"] for j in c.call("Job.List", {})["jobs"]}
    allocs_after = {a["id"]: (a["name"], a["node_id"]) for a in c.allocations("d6")}
    containers_after = {x["id"]: x["pid"] for x in c.containers() if x["status"] == "running"}
    readopted = sum(1 for cid, pid in containers_before.items() if containers_after.get(cid) == pid)
    restarted = count - readopted
    duplicates = len(containers_after) - count
    report("6-full-restart", leader_s=leader_s, recover_s=recover_s, readopted=readopted, restarted=restarted,
           duplicates=duplicates, jobs_back=len(jobs_after), allocs_replaced=len(set(allocs_after) - set(allocs_before)))
    assert jobs_after == jobs_before
    assert allocs_after == allocs_before, "no allocation was replaced"
    assert duplicates == 0
    assert restarted == 0, f"containers restarted instead of re-adopted: before {containers_before}, after {containers_after}"
    # Re-adopted means managed again: stopping the job stops those very containers.
    c.call("Job.Deregister", {"job_id": "d6"})
    wait_for(lambda: not [x for x in c.containers() if x["status"] == "running"], 60,
             "the re-adopted containers to be stopped with their job", interval=0.2)


# ---------------------------------------------------------------------------------------------- 7
def test_drill7_rolling_restart_under_write_load(make_cluster):
    """Restart every server one by one under write load: no acknowledged write lost, and no
    write fails with anything but a retryable error."""
    c = make_cluster(servers=3)
    c.wait_leader()
    load = WriteLoad(c.server_addresses, total=20000, writers=6, prefix="d7", pause=0.02, retry_for=30)
    restarts: list[dict] = []

    async def roll() -> None:
        await asyncio.sleep(2)
        for h in c.servers:
            was_leader = (await asyncio.to_thread(c.leader)) is h
            t = time.monotonic()
            forced = await asyncio.to_thread(c.stop, h)
            stop_s = time.monotonic() - t
            await asyncio.to_thread(c.start_host, h)

            def back() -> bool:
                i = c.info(h)
                return bool(i and i.get("leader")) and c.leader() is not None

            await asyncio.to_thread(wait_for, back, 60, f"{h.name} to rejoin")
            restarts.append({"host": h.name, "leader": was_leader, "stop_s": round(stop_s, 2), "forced": forced,
                             "s": round(time.monotonic() - t, 2)})
            await asyncio.sleep(1)
        load.stop = True

    async def run() -> None:
        start = time.monotonic()
        await asyncio.gather(load.run(), roll())
        marks["max_gap_s"] = load.max_gap(start)
        marks["elapsed_s"] = time.monotonic() - start

    marks: dict = {}
    asyncio.run(run())
    c.wait_leader()
    lost = lost_writes(c, load.acked, "d7")
    disagree = replicas_disagree(c, c.servers, load.acked, "d7")
    report("7-rolling-restart", acked=len(load.acked), lost=len(lost), errors=len(load.other_errors),
           retried=load.retryable_errors, max_write_gap_s=marks["max_gap_s"], elapsed_s=marks["elapsed_s"],
           replicas_disagreeing=len(disagree), forced_stops=sum(r["forced"] for r in restarts), restarts=restarts)
    assert load.other_errors == [], load.other_errors[:10]
    assert lost == []
    assert disagree == {}, disagree
    assert len(load.acked) > 100
