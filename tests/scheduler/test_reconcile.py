"""Table tests of the reconciler: (job, allocations, tainted nodes) -> places and stops."""

import copy
from dataclasses import dataclass, field

import pytest

from shoal.jobs.model import Constraint, Job, Port, RestartPolicy
from shoal.jobs.structs import NODE_DOWN, Allocation, Node
from shoal.scheduler.reconcile import (
    ALLOC_GROUP_REMOVED,
    ALLOC_JOB_GONE,
    ALLOC_JOB_STOPPED,
    ALLOC_LOST_DESC,
    ALLOC_MIGRATING,
    ALLOC_NOT_NEEDED,
    ALLOC_UPDATING,
    reconcile,
    tasks_updated,
)


@dataclass
class Case:
    job: Job | None
    allocs: list[Allocation]
    tainted: dict[str, Node | None] = field(default_factory=dict)
    # expectations: placements as (name, previous alloc id or None, destructive?)
    place: list[tuple[str, str | None, bool]] = field(default_factory=list)
    # stops as (alloc id, description, client status)
    stop: list[tuple[str, str, str]] = field(default_factory=list)
    versions: dict[int, Job] = field(default_factory=dict)  # older job versions
    inplace: list[str] = field(default_factory=list)  # ids updated in place


def _cases(kit):
    web3 = kit.job("app", kit.group("web", count=3))
    web1 = kit.job("app", kit.group("web", count=1))
    web2v1 = kit.job("app", kit.group("web", count=2), version=1)
    stopped = kit.job("app", kit.group("web", count=3), stop=True)
    batch2 = kit.job("b", kit.group("work", count=2), type="batch")
    down = kit.node("n2", status=NODE_DOWN)
    draining = kit.node("n3", drain=True)
    # version 1 of web2v1 differs from version 0 only in its restart policy (in place),
    # version 0 of "cfg" in the task's config (destructive)
    web2v0_restart = copy.deepcopy(web2v1)
    web2v0_restart.version = 0
    web2v0_restart.groups[0].restart = RestartPolicy(attempts=9)
    web2v0_config = copy.deepcopy(web2v1)
    web2v0_config.version = 0
    web2v0_config.groups[0].tasks[0].config = {"image": "old"}

    def a(job, group, i, node="n1", **kw):
        return kit.alloc(job, group, i, node, alloc_id=f"{group}{i}@{node}", **kw)

    return {
        "place all of a new job": Case(
            web3, [], place=[("app.web[0]", None, False), ("app.web[1]", None, False), ("app.web[2]", None, False)]
        ),
        "place the missing ones at the lowest free index": Case(
            web3, [a(web3, "web", 1)], place=[("app.web[0]", None, False), ("app.web[2]", None, False)]
        ),
        "nothing to do": Case(web3, [a(web3, "web", i) for i in range(3)]),
        "scale down stops the highest index": Case(
            web1,
            [a(web1, "web", i) for i in range(3)],
            stop=[("web2@n1", ALLOC_NOT_NEEDED, "running"), ("web1@n1", ALLOC_NOT_NEEDED, "running")],
        ),
        "scale down prefers a duplicated index": Case(
            kit.job("app", kit.group("web", count=2)),
            [a(web3, "web", 0), a(web3, "web", 1), a(web3, "web", 0, node="n3")],
            stop=[("web0@n3", ALLOC_NOT_NEEDED, "running")],
        ),
        "stop a stopped job": Case(
            stopped,
            [a(stopped, "web", 0), a(stopped, "web", 1, node="n2"), a(stopped, "web", 2, client_status="complete")],
            tainted={"n2": down},
            stop=[("web0@n1", ALLOC_JOB_STOPPED, "running"), ("web1@n2", ALLOC_LOST_DESC, "lost")],
        ),
        "stop a job that is gone": Case(
            None,
            [a(web3, "web", 0), a(web3, "web", 1, desired_status="stop")],
            stop=[("web0@n1", ALLOC_JOB_GONE, "running")],
        ),
        "replace allocations on a down node": Case(
            web3,
            [a(web3, "web", 0), a(web3, "web", 1, node="n2"), a(web3, "web", 2, node="gone")],
            tainted={"n2": down, "gone": None},
            stop=[("web1@n2", ALLOC_LOST_DESC, "lost"), ("web2@gone", ALLOC_LOST_DESC, "lost")],
            place=[("app.web[1]", "web1@n2", False), ("app.web[2]", "web2@gone", False)],
        ),
        "lost and scaled down: stop without replacing": Case(
            web1,
            [a(web1, "web", 0), a(web1, "web", 1, node="n2")],
            tainted={"n2": down},
            stop=[("web1@n2", ALLOC_LOST_DESC, "lost")],
        ),
        "version change is a destructive update": Case(
            web2v1,
            [a(web2v1, "web", 0, version=0), a(web2v1, "web", 1, version=1)],
            stop=[("web0@n1", ALLOC_UPDATING, "running")],
            place=[("app.web[0]", "web0@n1", True)],
        ),
        "completed batch allocations are not replaced": Case(
            batch2,
            [a(batch2, "work", 0, client_status="complete"), a(batch2, "work", 1, client_status="running")],
        ),
        "completed batch allocation on a down node is not lost": Case(
            batch2,
            [a(batch2, "work", 0, node="n2", client_status="complete"), a(batch2, "work", 1)],
            tainted={"n2": down},
        ),
        "completed service allocation gets a new one": Case(
            web1, [a(web1, "web", 0, client_status="complete")], place=[("app.web[0]", None, False)]
        ),
        "a failed service allocation waits for its reschedule delay": Case(
            web1, [a(web1, "web", 0, client_status="failed")]
        ),
        "allocations already told to stop are ignored": Case(
            web1, [a(web1, "web", 0, desired_status="stop")], place=[("app.web[0]", None, False)]
        ),
        "a removed group is stopped": Case(
            web1,
            [a(web1, "web", 0), a(web1, "old", 0)],
            stop=[("old0@n1", ALLOC_GROUP_REMOVED, "running")],
        ),
        "migrate off a draining node": Case(
            web3,
            [a(web3, "web", 0), a(web3, "web", 1, node="n3"), a(web3, "web", 2, node="n3")],
            tainted={"n3": draining},
            stop=[("web1@n3", ALLOC_MIGRATING, "running"), ("web2@n3", ALLOC_MIGRATING, "running")],
            place=[("app.web[1]", "web1@n3", False), ("app.web[2]", "web2@n3", False)],
        ),
        "a completed batch allocation on a draining node stays": Case(
            batch2,
            [a(batch2, "work", 0, node="n3", client_status="complete"), a(batch2, "work", 1)],
            tainted={"n3": draining},
        ),
        "an update of non-task fields is done in place": Case(
            web2v1,
            [a(web2v1, "web", 0, version=0), a(web2v1, "web", 1, version=1)],
            versions={0: web2v0_restart},
            inplace=["web0@n1"],
        ),
        "an update of the task's config is destructive": Case(
            web2v1,
            [a(web2v1, "web", 0, version=0), a(web2v1, "web", 1, version=1)],
            versions={0: web2v0_config},
            stop=[("web0@n1", ALLOC_UPDATING, "running")],
            place=[("app.web[0]", "web0@n1", True)],
        ),
    }


CASE_NAMES = [
    "place all of a new job",
    "place the missing ones at the lowest free index",
    "nothing to do",
    "scale down stops the highest index",
    "scale down prefers a duplicated index",
    "stop a stopped job",
    "stop a job that is gone",
    "replace allocations on a down node",
    "lost and scaled down: stop without replacing",
    "version change is a destructive update",
    "completed batch allocations are not replaced",
    "completed batch allocation on a down node is not lost",
    "completed service allocation gets a new one",
    "a failed service allocation waits for its reschedule delay",
    "allocations already told to stop are ignored",
    "a removed group is stopped",
    "migrate off a draining node",
    "a completed batch allocation on a draining node stays",
    "an update of non-task fields is done in place",
    "an update of the task's config is destructive",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reconcile(kit, name):
    case = _cases(kit)[name]
    result = reconcile(case.job, case.allocs, case.tainted, job_versions=case.versions)
    got_place = sorted(
        (p.name, p.previous.id if p.previous else None, p.stop_previous) for p in result.place
    )
    got_stop = sorted((s.alloc.id, s.description, s.client_status) for s in result.stop)
    assert got_place == sorted(case.place)
    assert got_stop == sorted(case.stop)
    assert sorted(a.id for a in result.inplace) == sorted(case.inplace)


def test_case_table_is_complete(kit):
    assert sorted(_cases(kit)) == sorted(CASE_NAMES)


def test_desired_updates_summary(kit):
    job = kit.job("app", kit.group("web", count=3), version=2)
    down = kit.node("n2", status=NODE_DOWN)
    allocs = [
        kit.alloc(job, "web", 0, "n1", alloc_id="a0", version=1),
        kit.alloc(job, "web", 1, "n2", alloc_id="a1"),
        kit.alloc(job, "web", 5, "n1", alloc_id="a5", desired_status="stop"),
    ]
    result = reconcile(job, allocs, {"n2": down})
    d = result.desired["web"]
    # as in Nomad, destructive updates are counted apart from placements
    assert (d.place, d.stop, d.lost, d.destructive_update, d.ignore) == (2, 1, 1, 1, 1)
    placed = {p.index: p for p in result.place}
    assert sorted(placed) == [0, 1, 2]
    assert placed[2].previous is None


def test_reconcile_is_pure(kit):
    job = kit.job("app", kit.group("web", count=2))
    allocs = [kit.alloc(job, "web", 3, "n1", alloc_id="x")]
    before = [(a.id, a.desired_status, a.client_status) for a in allocs]
    first = reconcile(job, allocs, {})
    second = reconcile(job, allocs, {})
    assert [(p.name, p.index) for p in first.place] == [(p.name, p.index) for p in second.place]
    assert [(a.id, a.desired_status, a.client_status) for a in allocs] == before


def test_scale_down_keeps_the_oldest_holder_of_a_duplicated_name(kit):
    job = kit.job("app", kit.group("web", count=1))
    allocs = [
        kit.alloc(job, "web", 0, "n1", alloc_id="old0"),
        kit.alloc(job, "web", 1, "n1", alloc_id="one"),
        kit.alloc(job, "web", 0, "n2", alloc_id="new0"),
    ]
    allocs[2].create_time = 5.0
    result = reconcile(job, allocs, {})
    assert sorted(s.alloc.id for s in result.stop) == ["new0", "one"]
    assert result.place == []


def test_replacements_of_a_duplicated_name_get_fresh_names(kit):
    job = kit.job("app", kit.group("web", count=3))
    down = kit.node("dead", status=NODE_DOWN)
    allocs = [
        kit.alloc(job, "web", 0, "n1", alloc_id="kept0"),
        kit.alloc(job, "web", 0, "dead", alloc_id="lost0"),
        kit.alloc(job, "web", 1, "dead", alloc_id="lost1"),
    ]
    result = reconcile(job, allocs, {"dead": down})
    assert sorted((p.name, p.previous.id) for p in result.place) == [
        ("app.web[1]", "lost1"),
        ("app.web[2]", "lost0"),
    ]


def _two_versions(kit):
    old = kit.job("app", kit.group("web", ports=[Port("http")]), version=0)
    old.meta = {"team": "a"}
    old.groups[0].tasks[0].config = {"image": "x"}
    return old, copy.deepcopy(old)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda j: setattr(j.groups[0], "count", 9), None),
        (lambda j: setattr(j.groups[0], "restart", RestartPolicy(attempts=7)), None),
        (lambda j: setattr(j, "priority", 80), None),
        (lambda j: setattr(j.groups[0].tasks[0], "kill_timeout", 30.0), None),
        (lambda j: j.groups[0].constraints.append(Constraint("${attr.kernel.name}", "=", "linux")), None),
        (lambda j: setattr(j.groups[0].tasks[0], "driver", "docker"), "task main driver"),
        (lambda j: j.groups[0].tasks[0].config.update(image="y"), "task main config"),
        (lambda j: j.groups[0].tasks[0].env.update(A="1"), "task main env"),
        (lambda j: j.meta.update(team="b"), "task main meta"),  # meta reaches the task: destructive, as Nomad
        (lambda j: setattr(j.groups[0].tasks[0].resources, "memory", 999), "task main resources"),
        (lambda j: j.groups[0].networks[0].ports.append(Port("admin")), "network"),
        (lambda j: setattr(j.groups[0], "ephemeral_disk", 1), "ephemeral disk"),
        (lambda j: j.groups[0].tasks.append(copy.deepcopy(j.groups[0].tasks[0])), "number of tasks"),
    ],
)
def test_tasks_updated(kit, change, why):
    old, new = _two_versions(kit)
    change(new)
    assert tasks_updated(old, new, "web") == why
