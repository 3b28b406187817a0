"""The codec's generated encoders and decoders against a plain reference implementation."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import pytest

from shoal import codec
from shoal.jobs.loader import load_job_file
from shoal.jobs.structs import (AllocatedPort, Allocation, Evaluation, Node, NodeResources, PlacementFailure,
                                RescheduleEvent, TaskEvent, TaskState)
from shoal.errors import Problem
from shoal.raft import ops

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "nomad"


def reference(obj):
    """What to_plain must return: the obvious recursive walk."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if dataclasses.is_dataclass(obj):
        return {f.name: reference(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: reference(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [reference(v) for v in obj]
    raise TypeError(type(obj).__name__)


def jobs():
    files = [REPO / "jobs" / "examples" / "example.hcl", *sorted(CORPUS.glob("*"))]
    out = []
    for f in files:
        try:
            out.append(load_job_file(f).job)
        except Exception:
            continue  # refused files are test_corpus's business
    return out


def records():
    alloc = Allocation(id="a1", name="web.g[0]", job_id="web", task_group="g", node_id="n1",
                       ports=[AllocatedPort(label="http", value=20001, to=8080)],
                       task_states={"t": TaskState(state="running", events=[TaskEvent(type="Started", time=1.5)])},
                       reschedule_events=[RescheduleEvent(reschedule_time=3.0, prev_alloc_id="a0", prev_node_id="n0")],
                       checks={"web.http": "passing"}, healthy=True)
    node = Node(id="n1", name="h1", attributes={"kernel.name": "linux"}, meta={"rack": "r1"},
                resources=NodeResources(cpu=4000, memory=8192), drivers=["container", "exec"])
    ev = Evaluation(id="e1", job_id="web", status="blocked",
                    failed_tg_allocs={"g": PlacementFailure(nodes_evaluated=3, constraint_filtered={"${attr.x}": 2})})
    return [alloc, node, ev]


@pytest.mark.parametrize("obj", jobs() + records(), ids=lambda o: f"{type(o).__name__}:{getattr(o, 'id', '')}")
def test_round_trip_matches_the_reference(obj):
    plain = codec.to_plain(obj)
    assert plain == reference(obj)
    assert codec.from_plain(type(obj), plain) == obj
    assert codec.decode(codec.encode(obj), type(obj)) == obj


def test_raft_payloads_round_trip():
    job = jobs()[0]
    payload = ops.JobRegister(job=job, eval=Evaluation(id="e1", job_id=job.id), now=12.5)
    assert codec.decode(codec.encode(payload), ops.JobRegister) == payload
    assert codec.decode(codec.encode_compact(payload), ops.JobRegister) == payload


def compact_reference(obj):
    """What to_compact must return: the plain walk, leaving out dataclass fields equal to their default."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and v == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and v == f.default_factory():
                continue
            out[f.name] = compact_reference(v)
        return out
    if isinstance(obj, dict):
        return {k: compact_reference(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [compact_reference(v) for v in obj]
    return reference(obj)


@pytest.mark.parametrize("obj", jobs() + records(), ids=lambda o: f"{type(o).__name__}:{getattr(o, 'id', '')}")
def test_compact_form_leaves_out_defaults_and_round_trips(obj):
    compact = codec.to_compact(obj)
    assert compact == compact_reference(obj)
    assert codec.from_plain(type(obj), compact) == obj
    assert len(codec.encode_compact(obj)) < len(codec.encode(obj))
    assert codec.encode_compact(codec.decode(codec.encode_compact(obj), type(obj))) == codec.encode_compact(obj)


def test_missing_fields_take_defaults_and_unknown_ones_are_ignored():
    a = codec.from_plain(Allocation, {"id": "a1", "no_such_field": 1})
    assert a.id == "a1" and a.task_states == {} and a.ports == []
    assert codec.from_plain(Allocation, {"id": "a2"}).task_states is not a.task_states  # factories run each time


def test_frozen_classes_decode_through_their_init():
    p = Problem(file="web.hcl", line=3, field="job.group[0].count", message="must be >= 0")
    assert codec.from_plain(Problem, codec.to_plain(p)) == p


def test_unknown_types_are_refused():
    with pytest.raises(TypeError, match="cannot encode object"):
        codec.to_plain(object())


@pytest.mark.parametrize("value", [["id", "a1"], "id", 7])
def test_a_record_that_is_not_a_map_is_refused(value):
    with pytest.raises(TypeError, match="Allocation: expected a map of fields, got"):
        codec.from_plain(Allocation, value)
    with pytest.raises(TypeError, match="Problem: expected a map of fields, got"):
        codec.from_plain(Problem, value)  # a frozen class, decoded through its __init__
