"""The FSM as a pure state machine: ops in, state and results out, no Raft needed."""

from __future__ import annotations

from shoal import codec
from shoal.jobs.model import Job, Resources, Task, TaskGroup
from shoal.jobs.structs import AllocUpdate, Allocation, Evaluation, Node
from shoal.raft import ops
from shoal.raft.fsm import FSM
from shoal.raft.state import StateStore


def job(jid: str = "web", count: int = 1, image: str = "busybox:latest") -> Job:
    task = Task(name="t", driver="container", config={"image": image}, resources=Resources(cpu=100, memory=64))
    return Job(id=jid, groups=[TaskGroup(name="g", count=count, tasks=[task])])


def apply(fsm: FSM, op: str, payload) -> object:
    return fsm.apply(op, codec.encode(payload))


def test_register_creates_version_and_eval_atomically():
    fsm = FSM()
    r = apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job(), eval=Evaluation(id="e1", job_id="web"), now=1.0))
    assert not r.error and r.index == 1
    s = fsm.store.snapshot()
    assert s.job("default", "web").version == 0
    assert s.eval("e1").job_modify_index == 1
    assert {c.topic for c in r.changes} == {"Job", "Evaluation"}


def test_resubmitting_an_identical_job_keeps_its_version_a_change_bumps_it():
    fsm = FSM()
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job()))
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job()))
    assert fsm.store.snapshot().job("default", "web").version == 0
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job(count=3)))
    s = fsm.store.snapshot()
    assert s.job("default", "web").version == 1
    assert [j.version for j in s.job_versions("default", "web")] == [0, 1]
    assert s.job_version("default", "web", 0).groups[0].count == 1


def test_stop_then_purge():
    fsm = FSM()
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job()))
    apply(fsm, ops.JOB_DEREGISTER, ops.JobDeregister(job_id="web"))
    assert fsm.store.snapshot().job("default", "web").stop
    apply(fsm, ops.JOB_DEREGISTER, ops.JobDeregister(job_id="web", purge=True))
    assert fsm.store.snapshot().job("default", "web") is None


def test_errors_are_values_never_exceptions():
    fsm = FSM()
    r = apply(fsm, ops.JOB_DEREGISTER, ops.JobDeregister(job_id="missing"))
    assert "not found" in r.error
    r = fsm.apply("no.such.op", b"\x80")
    assert "unknown operation" in r.error
    r = fsm.apply(ops.JOB_REGISTER, b"\xc1 not msgpack")
    assert r.error.startswith("internal error")
    assert fsm.store.index == 3  # every entry still advances the index: replicas stay in step


def test_plan_apply_and_client_update():
    fsm = FSM()
    apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=Node(id="n1", name="n1")))
    alloc = Allocation(id="a1", job_id="web", task_group="g", node_id="n1", name="web.g[0]")
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(job_id="web", allocs=[alloc], evals=[Evaluation(id="e1", job_id="web", status="complete")]))
    s = fsm.store.snapshot()
    assert [a.id for a in s.allocs_by_node("n1")] == ["a1"]
    assert s.eval("e1").status == "complete"
    # an update from another node is ignored
    r = apply(fsm, ops.ALLOC_CLIENT_UPDATE, ops.AllocClientUpdate(node_id="other", updates=[AllocUpdate(id="a1", client_status="running")]))
    assert r.value == {"updated": 0, "ignored": 1}
    apply(fsm, ops.ALLOC_CLIENT_UPDATE, ops.AllocClientUpdate(node_id="n1", updates=[AllocUpdate(id="a1", client_status="running")]))
    assert fsm.store.snapshot().alloc("a1").client_status == "running"
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(stops=[ops.AllocStop(id="a1", desired_description="job stopped")]))
    a = fsm.store.snapshot().alloc("a1")
    assert (a.desired_status, a.client_status) == ("stop", "running")


def test_snapshot_is_isolated_from_later_writes():
    fsm = FSM()
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job("a")))
    snap = fsm.store.snapshot()
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job("b")))
    assert [j.id for j in snap.jobs()] == ["a"]
    assert snap.index == 1


def test_dump_and_load_round_trip():
    fsm = FSM()
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job(), eval=Evaluation(id="e1", job_id="web")))
    apply(fsm, ops.JOB_REGISTER, ops.JobRegister(job=job(count=2)))
    apply(fsm, ops.NODE_REGISTER, ops.NodeRegister(node=Node(id="n1", name="n1")))
    apply(fsm, ops.PLAN_APPLY, ops.PlanApply(allocs=[Allocation(id="a1", job_id="web", node_id="n1")]))
    store = StateStore()
    store.load(codec.decode(codec.encode(fsm.store.dump())))
    a, b = fsm.store.snapshot(), store.snapshot()
    assert b.index == a.index == 4
    assert codec.to_plain(b.job("default", "web")) == codec.to_plain(a.job("default", "web"))
    assert [j.version for j in b.job_versions("default", "web")] == [0, 1]
    assert [x.id for x in b.allocs_by_job("default", "web")] == ["a1"]
    assert b.table_index("Allocation") == a.table_index("Allocation")


def test_an_owned_payload_is_applied_as_it_is_and_others_decode_the_same_bytes():
    leader, follower = FSM(), FSM()
    payload = ops.JobRegister(job=job(), eval=Evaluation(id="e1", job_id="web"), now=1.0)
    data = codec.encode_compact(payload)
    leader.own(data, payload)
    assert not leader.apply(ops.JOB_REGISTER, data).error
    assert not follower.apply(ops.JOB_REGISTER, data).error
    mine, theirs = leader.store.snapshot().job("default", "web"), follower.store.snapshot().job("default", "web")
    assert mine is payload.job  # not decoded again on the server that submitted it
    assert theirs is not payload.job and theirs == mine
    assert codec.encode(leader.store.snapshot().eval("e1")) == codec.encode(follower.store.snapshot().eval("e1"))
    # taken once: the same bytes applied again (another write) are decoded
    assert not leader.apply(ops.JOB_REGISTER, data).error
    assert leader.store.snapshot().job("default", "web") is not payload.job


def test_owned_payloads_are_bounded_and_can_be_withdrawn():
    from shoal.raft.fsm import MAX_OWNED

    fsm = FSM()
    for i in range(MAX_OWNED + 10):
        fsm.own(f"entry-{i}".encode(), object())
    assert len(fsm._owned) == MAX_OWNED and b"entry-0" not in fsm._owned
    fsm.disown(f"entry-{MAX_OWNED + 9}".encode())
    assert f"entry-{MAX_OWNED + 9}".encode() not in fsm._owned


def test_a_payload_that_would_not_survive_the_codec_exactly_is_refused_as_owned():
    import pytest

    from shoal.raft.node import _check_round_trip

    exact = ops.JobRegister(job=job(), now=1.5)
    _check_round_trip(ops.JOB_REGISTER, codec.encode_compact(exact))
    inexact = ops.JobRegister(job=job(), now=2)  # an int where replicas would decode a float
    with pytest.raises(AssertionError, match="replicas would differ"):
        _check_round_trip(ops.JOB_REGISTER, codec.encode_compact(inexact))
