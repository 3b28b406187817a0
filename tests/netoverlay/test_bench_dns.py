"""bench/dns.py end to end at tiny durations: one JSON line with every figure, each one measured
(slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1")]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dns.py"
MEASURED = ("qps", "p50_ms", "p99_ms", "at_rate_p50_ms", "at_rate_p99_ms", "cpu_us_per_query")
SETUP = ("services", "instances_per_service", "srv_every", "outstanding", "at_rate_offered_qps",
         "seconds_per_measurement")


def test_bench_prints_every_figure():
    cluster = os.geteuid() == 0
    res = subprocess.run([sys.executable, str(BENCH), "--seconds", "0.5", "--rate", "2000", "--services", "5",
                          "--samples", "3", *([] if cluster else ["--no-cluster"])],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    for key in (*MEASURED, *(f"floor_{k}" for k in MEASURED), "ratio_to_floor", *SETUP):
        assert figures[key] > 0, (key, figures)
    for key in ("lost_queries", "floor_lost_queries", "cpu_steal_percent"):  # may well be 0
        assert figures[key] >= 0, (key, figures)
    assert "ratio to floor" in res.stdout  # the table came first
    if cluster:  # healthy -> resolvable on every agent of a dev cluster
        assert figures["healthy_to_resolvable_samples"] == 3 and figures["agents"] == 3
        assert 0 < figures["healthy_to_resolvable_p50_seconds"] <= figures["healthy_to_resolvable_p99_seconds"]
