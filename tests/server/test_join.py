"""How a new server joins: plan_join over the Server.Info answers of the servers it was told to join."""

from __future__ import annotations

from shoal.server.server import AskLeader, StartWith, plan_join

ME = "127.0.0.2:7001"


def info(raft: str, *, leader: str | None = None, peers: tuple[str, ...] = ()) -> dict:
    return {"raft": raft, "api": raft.replace(":70", ":40"), "leader": leader, "peers": list(peers)}


def test_servers_that_have_not_started_wait_for_bootstrap_expect_then_start_together():
    one = info("127.0.0.1:7001")
    assert plan_join([one], ME, want=2) is None
    assert plan_join([one, info("127.0.0.3:7001")], ME, want=2) == StartWith(["127.0.0.1:7001", "127.0.0.3:7001"])


def test_a_cluster_with_a_leader_is_asked_to_add_this_server():
    cluster = ("127.0.0.1:7001", "127.0.0.3:7001", "127.0.0.4:7001")
    assert plan_join([info("127.0.0.1:7001", leader="127.0.0.1:7001", peers=cluster)], ME, want=2) == \
        AskLeader("127.0.0.1:4001")


def test_a_cluster_that_counts_this_server_in_is_started_with_even_without_a_leader():
    """The race tests/raft/test_cluster.py hit once: servers 1 and 3 formed a cluster with server 2
    in it while server 2 still waited to hear from server 1 (its first call came before server 1
    listened). Both then died and server 3 came back alone: it cannot elect a leader without server
    2's vote, and server 2, hearing only from server 3, would have waited for a second answer forever."""
    cluster = ("127.0.0.1:7001", ME, "127.0.0.3:7001")
    restarted = info("127.0.0.3:7001", leader=None, peers=cluster)
    assert plan_join([restarted], ME, want=2) == StartWith(["127.0.0.1:7001", "127.0.0.3:7001"])
    led = info("127.0.0.3:7001", leader="127.0.0.3:7001", peers=cluster)
    assert plan_join([led], ME, want=2) == StartWith(["127.0.0.1:7001", "127.0.0.3:7001"])
