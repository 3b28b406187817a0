"""YAML and JSON job files: the HCL structure as data, giving the same Job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.jobs.loader import detect_format, load_job_file, load_job_text
from shoal.jobs.model import CheckRestart

HCL = """
job "web" {
  type        = "service"
  datacenters = ["dc1"]
  meta        = { team = "core" }
  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  spread {
    attribute = "${node.datacenter}"
    weight    = 50
    target "dc1" {
      percent = 100
    }
  }
  group "cache" {
    count = 3
    restart {
      attempts = 3
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }
    network {
      port "db" {
        to = 6379
      }
      port "ui" {
        static = 8080
      }
    }
    service {
      name         = "redis"
      port         = "db"
      tags         = ["a", "b"]
      canary_tags  = ["canary"]
      address_mode = "alloc"
      check_restart {
        limit = 3
        grace = "30s"
      }
      check {
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
        check_restart {
          ignore_warnings = true
        }
      }
    }
    task "redis" {
      driver = "docker"
      config {
        image = "redis:7"
        args  = ["--appendonly", "yes"]
      }
      env {
        MODE = "${NOMAD_ALLOC_ID}"
      }
      resources {
        cpu    = 500
        memory = 256
      }
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }
      kill_timeout = "20s"
    }
    task "app" {
      driver = "exec"
      config {
        command = "/bin/app"
      }
    }
  }
}
"""

# HCL's JSON shape: labels as keys.
JSON_DOC = {
    "job": {
        "web": {
            "type": "service",
            "datacenters": ["dc1"],
            "meta": {"team": "core"},
            "constraint": [{"attribute": "${attr.kernel.name}", "value": "linux"}],
            "spread": {"attribute": "${node.datacenter}", "weight": 50, "target": {"dc1": {"percent": 100}}},
            "group": {
                "cache": {
                    "count": 3,
                    "restart": {"attempts": 3, "interval": "5m", "delay": "10s", "mode": "delay"},
                    "network": {"port": {"db": {"to": 6379}, "ui": {"static": 8080}}},
                    "service": [
                        {
                            "name": "redis",
                            "port": "db",
                            "tags": ["a", "b"],
                            "canary_tags": ["canary"],
                            "address_mode": "alloc",
                            "check_restart": {"limit": 3, "grace": "30s"},
                            "check": {"type": "tcp", "interval": "10s", "timeout": "2s",
                                      "check_restart": {"ignore_warnings": True}},
                        }
                    ],
                    "task": {
                        "redis": {
                            "driver": "docker",
                            "config": {"image": "redis:7", "args": ["--appendonly", "yes"]},
                            "env": {"MODE": "${NOMAD_ALLOC_ID}"},
                            "resources": {"cpu": 500, "memory": 256},
                            "lifecycle": {"hook": "prestart", "sidecar": True},
                            "kill_timeout": "20s",
                        },
                        "app": {"driver": "exec", "config": {"command": "/bin/app"}},
                    },
                }
            },
        }
    }
}

# The natural list form: labels as fields.
YAML_LIST = """
job:
  name: web
  type: service
  datacenters: [dc1]
  meta:
    team: core
  constraint:
    - attribute: ${attr.kernel.name}
      value: linux
  spread:
    - attribute: ${node.datacenter}
      weight: 50
      target:
        - value: dc1
          percent: 100
  group:
    - name: cache
      count: 3
      restart:
        attempts: 3
        interval: 5m
        delay: 10s
        mode: delay
      network:
        port:
          - label: db
            to: 6379
          - label: ui
            static: 8080
      service:
        - name: redis
          port: db
          tags: [a, b]
          canary_tags: [canary]
          address_mode: alloc
          check_restart:
            limit: 3
            grace: 30s
          check:
            - type: tcp
              interval: 10s
              timeout: 2s
              check_restart:
                ignore_warnings: true
      task:
        - name: redis
          driver: docker
          config:
            image: redis:7
            args: [--appendonly, "yes"]
          env:
            MODE: ${NOMAD_ALLOC_ID}
          resources:
            cpu: 500
            memory: 256
          lifecycle:
            hook: prestart
            sidecar: true
          kill_timeout: 20s
        - name: app
          driver: exec
          config:
            command: /bin/app
"""


def test_hcl_json_and_yaml_give_equal_jobs():
    from_hcl = load_job_text(HCL, "web.hcl").job
    from_json = load_job_text(json.dumps(JSON_DOC, indent=2), "web.json").job
    from_yaml_list = load_job_text(YAML_LIST, "web.yaml").job
    from_yaml_map = load_job_text(json.dumps(JSON_DOC), "web.yml").job  # JSON is YAML too
    assert from_hcl == from_json == from_yaml_list == from_yaml_map
    g = from_hcl.groups[0]
    assert [t.name for t in g.tasks] == ["redis", "app"]
    (s,) = g.services
    assert (s.address_mode, s.canary_tags) == ("alloc", ["canary"])
    assert s.checks[0].check_restart == CheckRestart(limit=3, grace=30.0, ignore_warnings=True)
    assert g.tasks[0].config == {"image": "redis:7", "args": ["--appendonly", "yes"]}


def test_files_are_read_by_extension_and_sniffed_otherwise(tmp_path: Path):
    expected = load_job_text(HCL, "web.hcl").job
    for name, text in [
        ("web.nomad", HCL),
        ("web.yaml", YAML_LIST),
        ("web.json", json.dumps(JSON_DOC)),
        ("web.job", HCL),
        ("web-json.job", json.dumps(JSON_DOC)),
        ("web-yaml.job", YAML_LIST),
    ]:
        f = tmp_path / name
        f.write_text(text)
        assert load_job_file(f).job == expected, name


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('# comment\njob "x" {\n}\n', "hcl"),
        ('variable "a" {}\n', "hcl"),
        ("// c\nlocals {\n}\n", "hcl"),
        ('{"job": {}}', "json"),
        ("job:\n  name: x\n", "yaml"),
        ("---\njob: {}\n", "yaml"),
    ],
)
def test_sniffing(text: str, fmt: str):
    assert detect_format("jobfile", text) == fmt


def test_yaml_anchors_and_merge_keys():
    text = """
defaults: &res
  cpu: 100
job:
  name: web
  group:
    - name: g
      task:
        - name: t
          driver: exec
          config: {command: x}
          resources:
            <<: *res
            memory: 64
"""
    # an unknown top-level key is refused, even one used only for anchors
    from shoal.errors import JobFileError

    with pytest.raises(JobFileError) as e:
        load_job_text(text, "web.yaml")
    assert [str(p) for p in e.value.problems] == ['web.yaml:2: defaults: unknown top-level key; a job file holds "job"']
    text = text.replace("defaults: &res\n  cpu: 100\njob:\n  name: web\n", "job:\n  name: web\n  meta: &res\n    cpu: 100\n")
    job = load_job_text(text, "web.yaml").job
    assert (job.groups[0].tasks[0].resources.cpu, job.groups[0].tasks[0].resources.memory) == (100, 64)


def test_yaml_scalars_convert_like_hcl():
    text = "job:\n  web:\n    meta: {a: 1, b: true, c: 1.5}\n    group:\n      g:\n        count: '2'\n" \
           "        task:\n          t:\n            driver: raw_exec\n            config: {command: x, args: [1, yes]}\n"
    job = load_job_text(text, "web.yaml").job
    assert job.meta == {"a": "1", "b": "true", "c": "1.5"}
    assert job.groups[0].count == 2
    assert job.groups[0].tasks[0].config["args"] == ["1", "true"]
