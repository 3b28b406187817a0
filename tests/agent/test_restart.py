"""The restart policy decision, with time as an argument."""

from shoal.agent.restart import COMPLETE, FAIL, RESTART, RestartTracker
from shoal.jobs.model import RestartPolicy


def test_service_restarts_then_fails_within_the_interval():
    t = RestartTracker(RestartPolicy(attempts=2, interval=60, delay=1, mode="fail"), batch=False)
    assert t.decide(now=0, success=False).action == RESTART
    assert t.decide(now=1, success=False).action == RESTART
    d = t.decide(now=2, success=False)
    assert d.action == FAIL and "exceeded 2" in d.reason


def test_the_count_resets_after_the_interval():
    t = RestartTracker(RestartPolicy(attempts=1, interval=10, delay=1, mode="fail"), batch=False)
    assert t.decide(now=0, success=False).action == RESTART
    assert t.decide(now=11, success=False).action == RESTART
    assert t.decide(now=12, success=False).action == FAIL


def test_delay_mode_waits_for_the_interval_to_end():
    t = RestartTracker(RestartPolicy(attempts=1, interval=30, delay=2, mode="delay"), batch=False)
    assert t.decide(now=0, success=False) .delay == 2
    d = t.decide(now=5, success=False)
    assert d.action == RESTART and d.delay == 25


def test_batch_success_completes_service_success_restarts():
    policy = RestartPolicy(attempts=3, interval=60, delay=0)
    assert RestartTracker(policy, batch=True).decide(now=0, success=True).action == COMPLETE
    assert RestartTracker(policy, batch=False).decide(now=0, success=True).action == RESTART


def test_unrecoverable_errors_fail_at_once():
    t = RestartTracker(RestartPolicy(attempts=5), batch=False)
    assert t.decide(now=0, success=False, recoverable=False).action == FAIL
