"""bench/overlay.py end to end at tiny durations: one JSON line with every figure, traffic on
every path, and nothing it made left behind (slow: run with ``pytest -m slow``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3 (make deps)")]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "overlay.py"
THROUGHPUTS = ("shoal_overlay_gbit_per_s", "kernel_vxlan_gbit_per_s", "kernel_vxlan_with_shoal_nftables_gbit_per_s",
               "underlay_gbit_per_s")


def test_bench_prints_every_figure_and_cleans_up():
    tag = uuid.uuid4().hex[:5]
    res = subprocess.run([sys.executable, str(BENCH), "--seconds", "1", "--omit", "0", "--rounds", "1", "--tag", tag],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    for key in THROUGHPUTS:
        assert figures[key] > 0, (key, figures)
    assert figures["ratio_to_raw_vxlan"] > 0 and figures["ratio_to_underlay"] > 0
    assert 0 < figures["join_to_reachable_seconds"] < 10
    assert figures["overlay_mtu"] == 1450
    assert "ratio to raw VXLAN" in res.stdout  # the table came first
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert tag not in namespaces and tag not in links
