"""The scheduler bench's logic at a small size (default suite) and at full size (slow)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scheduler.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scheduler", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scheduler"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("first_fit", [False, True])
def test_small_bench_places_everything_without_overcommit(bench, first_fit):
    nodes, jobs = bench.workload(60, seed=3)
    o = bench.run(nodes, jobs, first_fit=first_fit)
    assert o.wanted == 60 * bench.ALLOCS_PER_NODE
    assert o.placed == o.wanted and o.refused_nodes == 0
    assert o.overcommitted == 0
    assert 0 < o.lower_bound <= o.nodes_used <= len(nodes)
    if not first_fit:
        assert o.efficiency >= 0.85


def test_lower_bound_counts_the_largest_nodes_first(bench, kit):
    nodes = [kit.node("a", cpu=8000, memory=1000), kit.node("b", cpu=2000, memory=9000), kit.node("c", cpu=1000, memory=1000)]
    job = kit.job("app", kit.group("web"))
    allocs = [kit.alloc(job, "web", 0, "a", resources=bench.Resources(cpu=8500, memory=500))]
    assert bench.lower_bound(nodes, allocs) == 2  # cpu: 8000 + 2000
    allocs = [kit.alloc(job, "web", 0, "a", resources=bench.Resources(cpu=100, memory=9500))]
    assert bench.lower_bound(nodes, allocs) == 2  # memory: 9000 + 1000


def test_overcommit_is_detected(bench, kit):
    job = kit.job("app", kit.group("web"))
    allocs = [kit.alloc(job, "web", i, "a", resources=bench.Resources(cpu=600, memory=10)) for i in range(2)]
    assert bench.overcommitted([kit.node("a", cpu=1000)], allocs) == 1


@pytest.mark.slow
def test_full_bench(bench, capsys):
    figures = bench.main(["--sizes", "500,5000"])
    for size in (500, 5000):
        assert figures[f"nodes_{size}_overcommitted_nodes"] == 0
        assert figures[f"first_fit_{size}_overcommitted_nodes"] == 0
        assert figures[f"nodes_{size}_placed_allocs"] == size * bench.ALLOCS_PER_NODE
    assert figures["nodes_5000_efficiency"] >= 0.95
    print(capsys.readouterr().out)
