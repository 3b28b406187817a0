"""The compatibility corpus: every real Nomad job file is accepted, or refused precisely.

Run with ``-s`` to see the totals and every refusal reason.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from shoal.errors import JobFileError
from shoal.jobs.loader import LoadedJob, load_job_file

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "nomad"
FILES = sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []

# A refusal says what is wrong: something unsupported, unknown or invalid.
_REASON = re.compile(
    r"not supported|unsupported|unknown|no port labelled|no value given|must|expected|invalid|cannot|duplicate"
)

pytestmark = pytest.mark.skipif(not FILES, reason=f"corpus not found at {CORPUS}")


def _feature(field: str) -> str:
    """The last name in a field path: 'job "x" group "g" volume "v"' -> 'volume', '... config.ports' -> 'ports'."""
    last = re.sub(r' "[^"]*"$', "", field).rsplit(" ", 1)[-1]
    return last.split(".")[-1].split("[")[0]


def _load(path: Path) -> LoadedJob | JobFileError:
    try:
        return load_job_file(path)
    except JobFileError as e:
        return e


@pytest.fixture(scope="module")
def results() -> dict[Path, LoadedJob | JobFileError]:
    return {path: _load(path) for path in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_file_is_accepted_or_refused_precisely(path: Path):
    outcome = _load(path)  # any exception other than JobFileError fails the test here
    if isinstance(outcome, LoadedJob):
        assert outcome.job.id and outcome.job.groups
        for w in outcome.warnings:
            assert w.startswith(f"{path}:")
        return
    assert outcome.problems
    for p in outcome.problems:
        assert p.file == str(path)
        assert isinstance(p.line, int) and p.line >= 1, str(p)
        assert p.field or p.message.startswith("syntax error"), str(p)
        assert _REASON.search(p.message), str(p)
        assert str(p).startswith(f"{path}:{p.line}: ")


def test_totals_and_reasons(results: dict[Path, LoadedJob | JobFileError]):
    accepted = [p for p, r in results.items() if isinstance(r, LoadedJob)]
    refused = {p: r for p, r in results.items() if isinstance(r, JobFileError)}
    print(f"\ncorpus: {len(accepted)} accepted, {len(refused)} refused")
    reasons: Counter[str] = Counter()  # files refused for each feature
    for path, err in refused.items():
        print(f"  refused {path.name}:")
        for p in err.problems:
            print(f"    line {p.line}: {p.field}: {p.message}")
        reasons.update({_feature(p.field) or p.message for p in err.problems})
    print("  files refused per feature:", ", ".join(f"{k} ({n})" for k, n in reasons.most_common(15)))
    for path in accepted:
        print(f"  accepted {path.name}")
    assert len(accepted) + len(refused) == len(FILES)
    # Simple e2e jobs (raw_exec sleepers, system and sysbatch busybox jobs) must keep working.
    assert len(accepted) >= 5


def test_accepted_docker_jobs_keep_driver_and_image(results: dict[Path, LoadedJob | JobFileError]):
    docker_tasks = 0
    for path, r in results.items():
        if not isinstance(r, LoadedJob):
            continue
        text = path.read_text()
        for g in r.job.groups:
            for t in g.tasks:
                if t.driver == "docker":
                    docker_tasks += 1
                    assert isinstance(t.config.get("image"), str) and t.config["image"], (path.name, t.name)
                    assert f'image = "{t.config["image"]}"' in text or t.config["image"] in text
        if 'driver = "docker"' in text:
            assert any(t.driver == "docker" for g in r.job.groups for t in g.tasks), path.name
    assert docker_tasks >= 2


def test_known_refusals_name_the_feature(results: dict[Path, LoadedJob | JobFileError]):
    def fields(name_part: str) -> list[str]:
        (path,) = [p for p in results if name_part in p.name]
        r = results[path]
        assert isinstance(r, JobFileError), path.name
        return [p.field for p in r.problems]

    assert 'job "periodic" periodic' in fields("periodic__input__simple")
    assert 'job "periodic" parameterized' in fields("parameterized__input__simple")
    assert 'job "example" group "cache" volume "volume0"' in fields("csi__hostpath__redis")
    assert 'job "example" group "cache" task "redis" identity' in fields("command__asset__example-short")
    assert 'variable "nodeID"' in fields("restart-node")


def test_address_mode_and_check_restart_are_taken_the_files_refused_for_what_remains(
        results: dict[Path, LoadedJob | JobFileError]):
    """Three corpus files use address_mode = "host" or check_restart: those now decode; each file is still
    refused, for the features shoal does not have."""

    def refused(name_part: str) -> list[str]:
        (path,) = [p for p in results if name_part in p.name]
        r = results[path]
        assert isinstance(r, JobFileError), path.name
        return [f"{p.line}: {p.field}: {p.message}" for p in r.problems]

    for name in ("dynamic-app-sizing__jobs__example", "on_update_check_restart", "tensorrt-demo"):
        for problem in refused(name):
            assert _feature(problem.split(": ")[1]) not in ("address_mode", "check_restart"), problem
    updates = ("not supported: shoal has no rolling updates, canaries or deployments; a changed job replaces "
               "its allocations")
    assert refused("on_update_check_restart") == [
        f'23: job "test" group "test" update: {updates}',
        f'48: job "test" group "test" service[0].check[1].on_update: {updates}',
        '73: job "test" group "test" task "server" template: not supported: shoal does not render templates '
        "(consul-template); use env or bake files into the image",
    ]
