"""Reschedule policies: delays, attempts within an interval, follow-up evaluations, and
the history an allocation carries to its replacement."""

from dataclasses import replace

import pytest

from shoal.jobs.model import ReschedulePolicy
from shoal.jobs.structs import EVAL_PENDING, RescheduleEvent, TaskState
from shoal.scheduler import schedule
from shoal.scheduler.reconcile import (
    ALLOC_RESCHEDULED,
    FOLLOWUP_EVAL_DESC,
    TRIGGER_RETRY_FAILED_ALLOC,
    fail_time,
    followup_evals,
    next_delay,
    next_reschedule_time,
    reconcile,
    reschedule_decision,
    reschedule_events,
)


def events(*delays, start=0.0, step=100.0):
    return [RescheduleEvent(start + i * step, f"p{i}", f"n{i}", d) for i, d in enumerate(delays)]


def failed(kit, job, *, at=1000.0, history=(), alloc_id="f0", node="n1", followup=""):
    a = kit.alloc(job, job.groups[0].name, 0, node, alloc_id=alloc_id, client_status="failed")
    a.task_states = {"main": TaskState(state="dead", failed=True, finished_at=at)}
    a.modify_time = at + 1
    a.reschedule_events = list(history)
    a.followup_eval_id = followup
    return a


EXP = ReschedulePolicy(delay=10, delay_function="exponential", max_delay=100, unlimited=True)
FIB = ReschedulePolicy(delay=5, delay_function="fibonacci", max_delay=50, unlimited=True)
CONST = ReschedulePolicy(delay=7, delay_function="constant", unlimited=True)


@pytest.mark.parametrize(
    ("policy", "history", "expected"),
    [
        (EXP, [], 10),
        (EXP, [10], 20),
        (EXP, [10, 20, 40], 80),
        (EXP, [10, 20, 40, 80], 100),  # capped at max_delay
        (FIB, [], 5),
        (FIB, [5], 5),  # one event: the delay again
        (FIB, [5, 5], 10),
        (FIB, [5, 5, 10, 15], 25),
        (FIB, [5, 10, 20, 30], 50),  # capped
        (FIB, [50, 5], 5),  # a reset series starts again
        (CONST, [7, 7, 7], 7),
    ],
)
def test_next_delay(kit, policy, history, expected):
    job = kit.job("app")
    # failures come right after the last reschedule: no reset of a capped delay
    a = failed(kit, job, at=100.0 * len(history), history=events(*history))
    assert next_delay(a, policy) == expected


def test_capped_delay_resets_after_a_quiet_spell(kit):
    job = kit.job("app")
    a = failed(kit, job, at=10_000.0, history=events(10, 20, 40, 80))  # last reschedule at t=300
    assert next_delay(a, EXP) == 10  # 9,700 s after the last one: more than max_delay


def test_fail_time_is_the_last_task_finish(kit):
    job = kit.job("app")
    a = failed(kit, job, at=500.0)
    a.task_states["side"] = TaskState(finished_at=700.0)
    assert fail_time(a) == 700.0
    a.task_states = {}
    assert fail_time(a) == 501.0  # the last update


@pytest.mark.parametrize(
    ("policy", "history", "eligible"),
    [
        (ReschedulePolicy(attempts=0, unlimited=False), [], False),  # disabled
        (ReschedulePolicy(attempts=2, interval=3600, delay=5, unlimited=False), [], True),
        (ReschedulePolicy(attempts=2, interval=3600, delay=5, delay_function="constant", unlimited=False), [5], True),
        (ReschedulePolicy(attempts=2, interval=3600, delay=5, delay_function="constant", unlimited=False), [5, 5], False),
        # attempts outside the interval do not count
        (ReschedulePolicy(attempts=1, interval=60, delay=5, delay_function="constant", unlimited=False), [5], True),
        (ReschedulePolicy(attempts=0, delay=5, unlimited=True), [5] * 20, True),
    ],
)
def test_eligibility(kit, policy, history, eligible):
    job = kit.job("app")
    a = failed(kit, job, at=1000.0, history=events(*history, start=900.0 if len(history) > 1 else 0.0, step=10.0))
    assert next_reschedule_time(a, policy)[1] is eligible


def test_only_failed_running_allocations_reschedule(kit):
    job = kit.job("app")
    a = failed(kit, job)
    assert next_reschedule_time(replace(a, client_status="complete"), EXP) == (0.0, False)
    assert next_reschedule_time(replace(a, desired_status="stop"), EXP) == (0.0, False)


def test_decision_now_later_or_waiting(kit):
    job = kit.job("app")
    a = failed(kit, job, at=1000.0)
    assert reschedule_decision(a, EXP, now=1000.0) == (False, 1010.0)
    assert reschedule_decision(a, EXP, now=1009.5) == (True, None)  # within the one second window
    waiting = replace(a, followup_eval_id="ev-9")
    assert reschedule_decision(waiting, EXP, now=1000.0) == (False, None)  # a follow-up exists
    assert reschedule_decision(waiting, EXP, now=1000.0, eval_id="ev-9") == (True, None)  # it is this one


def test_history_carried_to_the_replacement(kit):
    job = kit.job("app")
    a = failed(kit, job, at=1000.0, history=events(10, 20, start=900.0, step=50.0))
    got = reschedule_events(a, EXP, now=1040.0)
    assert [e.delay for e in got] == [10, 20, 40]
    assert (got[-1].prev_alloc_id, got[-1].prev_node_id, got[-1].reschedule_time) == ("f0", "n1", 1040.0)
    limited = ReschedulePolicy(attempts=3, interval=100, delay=10, delay_function="exponential", unlimited=False)
    assert [e.delay for e in reschedule_events(a, limited, now=1040.0)] == [20, 40]  # the one at 900 is too old
    many = failed(kit, job, history=events(*([10] * 9)))
    assert len(reschedule_events(many, EXP, now=2000.0)) == 6  # the last five and the new one


def test_followup_evals_batch_within_five_seconds(kit):
    job = kit.job("app")
    job.job_modify_index, job.priority = 7, 60
    a, b, c = (failed(kit, job, alloc_id=x) for x in "abc")
    ids = iter(["e1", "e2"])
    evals, owner = followup_evals(job, [(c, 120.0), (a, 100.0), (b, 103.0)], previous_eval="ev", now=50.0,
                                  new_id=lambda: next(ids))
    assert [(e.id, e.wait_until) for e in evals] == [("e1", 100.0), ("e2", 120.0)]
    assert owner == {"a": "e1", "b": "e1", "c": "e2"}
    e = evals[0]
    assert (e.status, e.triggered_by, e.status_description, e.previous_eval) == (
        EVAL_PENDING, TRIGGER_RETRY_FAILED_ALLOC, FOLLOWUP_EVAL_DESC, "ev")
    assert (e.job_id, e.job_modify_index, e.priority, e.type) == ("app", 7, 60, "service")


def test_reconcile_reschedules_due_failures(kit):
    job = kit.job("app", kit.group("web", count=2))
    job.groups[0].reschedule = CONST
    due = failed(kit, job, at=100.0, alloc_id="due")
    later = replace(failed(kit, job, at=1000.0, alloc_id="later"), index=1)
    result = reconcile(job, [due, later], {}, now=108.0)
    assert [(p.name, p.previous.id, p.reschedule, p.stop_previous) for p in result.place] == [
        ("app.web[0]", "due", True, True)
    ]
    assert [(s.alloc.id, s.description) for s in result.stop] == [("due", ALLOC_RESCHEDULED)]
    assert [(a.id, t) for a, t in result.reschedule_later] == [("later", 1007.0)]
    d = result.desired["web"]
    assert (d.reschedule, d.reschedule_later, d.place) == (1, 1, 1)


def test_exhausted_attempts_keep_the_failed_allocation(kit):
    job = kit.job("app", kit.group("web", count=1))
    job.groups[0].reschedule = ReschedulePolicy(attempts=1, interval=3600, delay=5, delay_function="constant",
                                                unlimited=False)
    a = failed(kit, job, at=1000.0, history=events(5, start=990.0))
    result = reconcile(job, [a], {}, now=2000.0)
    assert result.place == [] and result.stop == [] and result.reschedule_later == []


def test_batch_default_reschedules_once(kit):
    job = kit.job("b", kit.group("work", count=1), type="batch")
    first = failed(kit, job, at=1000.0)
    assert [p.previous.id for p in reconcile(job, [first], {}, now=1006.0).place] == ["f0"]
    second = failed(kit, job, at=2000.0, history=events(5, start=1006.0), alloc_id="f1")
    assert reconcile(job, [second], {}, now=3000.0).place == []


def test_scheduler_replaces_a_failed_allocation_elsewhere_with_its_history(kit):
    job = kit.job("app", kit.group("web", count=1))
    job.groups[0].reschedule = EXP
    a = failed(kit, job, at=1000.0, history=events(10, start=900.0))
    state = kit.state([kit.node("n1"), kit.node("n2")], [job], [a])
    for seed in ("e1", "e2", "e3"):
        plan = schedule(state, kit.evaluation(job, seed), now=1030.0, new_id=lambda: "new")
        (new,) = [x for v in plan.node_allocation.values() for x in v]
        assert new.node_id == "n2"  # the node it failed on is penalized
        assert new.previous_allocation == "f0"
        assert [e.delay for e in new.reschedule_events] == [10, 20]
        assert [(x.id, x.desired_status, x.desired_description) for x in plan.node_update["n1"]] == [
            ("f0", "stop", ALLOC_RESCHEDULED)
        ]


def test_scheduler_makes_a_followup_eval_and_marks_the_allocation(kit):
    job = kit.job("app", kit.group("web", count=1))
    job.groups[0].reschedule = EXP
    a = failed(kit, job, at=1000.0)
    state = kit.state([kit.node("n1")], [job], [a])
    plan = schedule(state, kit.evaluation(job, "ev-1"), now=1000.0, new_id=lambda: "ev-2")
    assert plan.node_allocation == {} and plan.node_update == {}
    (follow,) = plan.followup_evals
    assert (follow.id, follow.wait_until, follow.previous_eval) == ("ev-2", 1010.0, "ev-1")
    assert [(x.id, x.followup_eval_id) for x in plan.node_update_inplace["n1"]] == [("f0", "ev-2")]
    assert not plan.is_noop()
    # the follow-up evaluation, run early, reschedules it all the same
    marked = replace(a, followup_eval_id="ev-2")
    state = kit.state([kit.node("n1"), kit.node("n2")], [job], [marked])
    plan = schedule(state, kit.evaluation(job, "ev-2"), now=1002.0, new_id=lambda: "new")
    assert [x.previous_allocation for v in plan.node_allocation.values() for x in v] == ["f0"]
    # another evaluation before then leaves it waiting
    plan = schedule(state, kit.evaluation(job, "ev-3"), now=1002.0, new_id=lambda: "x")
    assert plan.is_noop() and plan.followup_evals == []
