"""Properties: no input makes the reader fail any other way than with JobFileError."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import JobFileError
from shoal.jobs.loader import load_job_text

VALID = """variable "n" {
  default = 2
}
locals {
  name = "svc-${var.n}"
}
job "web" {
  datacenters = ["dc1"]
  group "g" {
    count = var.n
    network {
      port "http" {
        to = 8080
      }
    }
    service {
      name = local.name
      port = "http"
    }
    task "t" {
      driver = "docker"
      config {
        image = "busybox"
        args  = ["-c", <<EOF
echo ${NOMAD_ALLOC_ID} %{ if var.n > 1 }many%{ endif }
EOF
        ]
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
"""

HCL_PIECES = ['{', '}', '"', "${", "%{", "=", "[", "]", "\n", "job", "var.n", "local.name", "<<EOF\n", "EOF\n",
              "(", ")", ",", "...", "?", ":", "for", "in", "-", "1e999", "dynamic", "content", "\\", "~}", "null",
              'group "g" {', 'task "t" {', "count = ", "format(", "range(", "#", "/*", "*/"]


def _check(text: str, filename: str) -> None:
    try:
        load_job_text(text, filename)
    except JobFileError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == filename
            assert p.line is None or p.line >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400), st.sampled_from(["x.hcl", "x.yaml", "x.json", "x.job"]))
def test_arbitrary_text_raises_only_job_file_errors(text: str, filename: str):
    _check(text, filename)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 12), st.sampled_from(HCL_PIECES)), max_size=6))
def test_mutated_job_files_raise_only_job_file_errors(edits: list[tuple[int, int, str]]):
    text = VALID
    for pos, cut, piece in edits:
        pos = min(pos, len(text))
        text = text[:pos] + piece + text[pos + cut:]
    _check(text, "m.hcl")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["job", "web", "group", "g", "task", "t", "count", "driver", "config", "image", "resources",
                         "cpu", "memory", "name", "port", "network", "service", "check", "constraint", "meta"]),
        inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_arbitrary_documents_raise_only_job_file_errors(doc: object):
    text = json.dumps(doc)
    _check(text, "d.json")
    _check(text, "d.yaml")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 50), st.integers(1, 4000), st.integers(1, 8192), st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters='"\\$%'), max_size=20))
def test_hcl_and_json_agree(count: int, cpu: int, memory: int, value: str):
    hcl = (f'job "w" {{\n meta = {{ v = {json.dumps(value)} }}\n group "g" {{\n count = {count}\n task "t" {{\n'
           f' driver = "exec"\n config {{ command = {json.dumps(value)} }}\n'
           f" resources {{\n cpu = {cpu}\n memory = {memory}\n }}\n }}\n }}\n}}\n")
    doc = {"job": {"w": {"meta": {"v": value}, "group": {"g": {"count": count, "task": {"t": {
        "driver": "exec", "config": {"command": value}, "resources": {"cpu": cpu, "memory": memory}}}}}}}}
    outcomes = []
    for text, name in ((hcl, "w.hcl"), (json.dumps(doc), "w.json"), (json.dumps(doc), "w.yaml")):
        try:
            outcomes.append(load_job_text(text, name).job)
        except JobFileError as e:
            outcomes.append(sorted((p.field, p.message) for p in e.problems))
    assert outcomes[0] == outcomes[1] == outcomes[2]
