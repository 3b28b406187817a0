"""Issue 19's acceptance in the deterministic simulation (gossip_sim.py): the real SWIM core on a
lossy seeded network with a virtual clock. Each run prints one JSON line (``pytest -s``).

The default suite runs 100 members (a second each); the 1,000-member runs are ``slow``
(``pytest -m slow tests/agent/test_swim_sim.py``; bench/gossip_sim.py prints the full table).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gossip_sim", Path(__file__).with_name("gossip_sim.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gossip_sim"] = module
    spec.loader.exec_module(module)
    return module


sim = _load_sim()

# Slow members stall 6-18 s on everything they receive (an overloaded host): comparable to the
# suspicion timeout (8 s at 100 members), the only way a slow member makes plain SWIM declare a
# healthy member dead at this size: a refutation beats any shorter stall (see the bench's sweep).
STALL = (6.0, 18.0)


def _detection(members: int) -> None:
    r = sim.run_detection(members, loss=0.05, seed=1)
    print(json.dumps(r.summary()))
    assert r.undetected == 0, f"{r.undetected} members never declared the killed one dead"
    assert r.detect_max_s <= r.bound_s
    assert r.member_periods >= 10_000
    assert r.false_positives == 0


def test_a_killed_member_is_declared_dead_by_all_100_and_no_live_one_is() -> None:
    _detection(100)


@pytest.mark.slow
def test_a_killed_member_is_declared_dead_by_all_1000_and_no_live_one_is() -> None:
    _detection(1000)


def _lifeguard_against_plain_swim(members: int, stall: tuple[float, float]) -> tuple[object, object]:
    lifeguard = sim.run_slow_members(members, stall, slow_fraction=0.1, loss=0.05, seed=1, lifeguard=True)
    plain = sim.run_slow_members(members, stall, slow_fraction=0.1, loss=0.05, seed=1, lifeguard=False)
    print(json.dumps({
        "members": members, "loss": 0.05, "slow_fraction": 0.1, "slow_delay_s": list(stall),
        "false_positives_lifeguard": lifeguard.false_positives + lifeguard.false_positives_slow,
        "false_positives_plain_swim": plain.false_positives + plain.false_positives_slow,
        "healthy_false_positives_lifeguard": lifeguard.false_positives,
        "healthy_false_positives_plain_swim": plain.false_positives,
        "false_suspicions_lifeguard": lifeguard.false_suspicions,
        "false_suspicions_plain_swim": plain.false_suspicions,
    }))
    assert lifeguard.false_suspicions < plain.false_suspicions
    return lifeguard, plain


def test_lifeguard_spares_healthy_members_that_plain_swim_declares_dead() -> None:
    lifeguard, plain = _lifeguard_against_plain_swim(100, STALL)
    assert plain.false_positives > 0
    assert lifeguard.false_positives < plain.false_positives
    assert (lifeguard.false_positives + lifeguard.false_positives_slow
            < plain.false_positives + plain.false_positives_slow)


def test_members_slower_than_the_probe_timeout_are_suspected_less_with_lifeguard() -> None:
    """Answers 0.6-1 s late (past the probe timeout): at 100 members neither protocol declares
    anyone dead (every refutation beats the 8 s suspicion timeout), but plain SWIM suspects
    about twice as often."""
    lifeguard, plain = _lifeguard_against_plain_swim(100, (0.6, 1.0))
    assert lifeguard.false_positives == plain.false_positives == 0
    assert lifeguard.false_suspicions * 3 < plain.false_suspicions * 2
