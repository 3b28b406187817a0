"""Prefix lookups scoped by namespace ("*": all of them), as Nomad's: pure functions over a snapshot."""

from __future__ import annotations

import pytest

from shoal.errors import Ambiguous, NotFound
from shoal.jobs.model import Job
from shoal.jobs.structs import Allocation, Evaluation
from shoal.raft.state import StateSnapshot, StateStore
from shoal.server.lookup import find_alloc, find_eval, find_job, namespaced

A1 = "aaaa1111-0000-4000-8000-000000000001"
A2 = "aaaa2222-0000-4000-8000-000000000002"
E1 = "eeee1111-0000-4000-8000-000000000001"


def snapshot() -> StateSnapshot:
    store = StateStore()
    for ns, job_id in (("default", "web"), ("team-a", "web"), ("team-a", "api"), ("team-a", "api-gw"),
                       ("team-b", "batch")):
        store.put_job(Job(id=job_id, name=job_id, namespace=ns))
    store.put_alloc(Allocation(id=A1, namespace="team-a", job_id="api"))
    store.put_alloc(Allocation(id=A2, namespace="team-b", job_id="batch"))
    store.put_eval(Evaluation(id=E1, namespace="team-a", job_id="api"))
    return store.snapshot()


def key(job: Job) -> tuple[str, str]:
    return job.namespace, job.id


def test_a_job_is_found_only_in_its_namespace():
    s = snapshot()
    assert key(find_job(s, "team-b", "bat")) == ("team-b", "batch")
    with pytest.raises(NotFound, match="no job matches 'batch' in namespace 'default'"):
        find_job(s, "default", "batch")


def test_an_exact_id_wins_over_longer_ids_it_prefixes():
    s = snapshot()
    assert key(find_job(s, "team-a", "api")) == ("team-a", "api")
    with pytest.raises(Ambiguous, match=r"matches 2 jobs \(team-a/api, team-a/api-gw\); give more characters"):
        find_job(s, "team-a", "ap")


def test_the_wildcard_searches_every_namespace_and_an_id_in_two_is_ambiguous():
    s = snapshot()
    assert key(find_job(s, "*", "batch")) == ("team-b", "batch")
    assert key(find_job(s, "*", "api")) == ("team-a", "api")
    with pytest.raises(Ambiguous, match=r"job 'web' is in 2 namespaces \(default/web, team-a/web\); name one with -namespace"):
        find_job(s, "*", "web")
    with pytest.raises(NotFound, match="no job matches 'nope' in any namespace"):
        find_job(s, "*", "nope")


def test_allocations_and_evaluations_are_scoped_by_namespace_even_by_full_id():
    s = snapshot()
    assert find_alloc(s, "team-a", A1).id == A1
    assert find_alloc(s, "team-a", "aaaa").id == A1  # the other "aaaa" is in team-b
    assert find_alloc(s, "*", "aaaa2").id == A2
    with pytest.raises(NotFound, match="in namespace 'default'"):
        find_alloc(s, "default", A1)
    with pytest.raises(Ambiguous, match=r"matches 2 allocations \(team-a/aaaa1111, team-b/aaaa2222\)"):
        find_alloc(s, "*", "aaaa")
    assert find_eval(s, "team-a", "eeee").id == E1
    with pytest.raises(NotFound):
        find_eval(s, "team-b", E1)
    with pytest.raises(NotFound, match="no evaluation id given"):
        find_eval(s, "*", "")


def test_namespaced_keeps_one_namespace_or_all():
    allocs = snapshot().allocs()
    assert [a.id for a in namespaced("team-b", allocs)] == [A2]
    assert sorted(a.id for a in namespaced("*", allocs)) == [A1, A2]
    assert namespaced("default", allocs) == []
