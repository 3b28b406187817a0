"""The example job that `shoal job init` writes and the demo runs."""

from __future__ import annotations

from pathlib import Path

from shoal.jobs.loader import example_job_text, load_job_file, load_job_text
from shoal.jobs.model import Resources


def test_example_job_loads_as_documented():
    text = example_job_text()
    comments = [ln for ln in text.splitlines() if ln.strip().startswith("#")]
    assert len(comments) > 20  # commented like `nomad job init`'s output
    loaded = load_job_text(text, "example.hcl")
    assert loaded.warnings == []
    job = loaded.job
    assert (job.id, job.type, job.datacenters) == ("example", "service", ["*"])
    (g,) = job.groups
    assert (g.name, g.count) == ("web", 3)
    (t,) = g.tasks
    assert (t.name, t.driver) == ("server", "container")
    assert t.config["image"] == "busybox:latest"
    assert t.config["command"] == "/bin/sh"
    script = t.config["args"][-1]
    assert t.config["args"][0] == "-c" and "echo" in script and "sleep" in script
    assert t.resources == Resources(cpu=100, memory=64)


def test_example_job_is_package_data_next_to_the_loader():
    import shoal.jobs

    assert (Path(shoal.jobs.__file__).parent / "examples" / "example.hcl").read_text() == example_job_text()
    assert load_job_file(Path(shoal.jobs.__file__).parent / "examples" / "example.hcl").job.id == "example"
