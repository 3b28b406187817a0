"""HCL2 features a Nomad job file may use, each mapped into the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import JobFileError
from shoal.jobs.durations import format_duration, parse_duration
from shoal.jobs.loader import load_job_file, load_job_text
from shoal.jobs.model import (
    Affinity,
    Check,
    Constraint,
    Lifecycle,
    Network,
    Port,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Service,
    Spread,
    SpreadTarget,
)


def load(text: str, variables: dict[str, str] | None = None, filename: str = "web.hcl"):
    return load_job_text(text, filename, variables).job


def one_task(body: str, driver: str = "exec", config: str = 'command = "/bin/true"') -> str:
    return f'job "web" {{\n group "g" {{\n  task "t" {{\n   driver = "{driver}"\n   config {{ {config} }}\n{body}\n  }}\n }}\n}}\n'


FULL = """
job "web" {
  type        = "service"
  priority    = 70
  namespace   = "prod"
  region      = "eu"
  datacenters = ["dc1", "dc2"]
  node_pool   = "fast"
  meta        = { team = "core", version = 3 }

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  constraint {
    distinct_hosts = true
  }
  affinity {
    attribute = "${node.datacenter}"
    value     = "dc1"
    weight    = -50
  }
  spread {
    attribute = "${node.datacenter}"
    weight    = 100
    target "dc1" {
      percent = 70
    }
    target "dc2" {
      percent = 30
    }
  }
  reschedule {
    delay          = "10s"
    delay_function = "constant"
  }

  group "cache" {
    count = 2
    meta {
      tier = "cache"
    }
    restart {
      attempts = 4
      interval = "10m"
      delay    = "20s"
      mode     = "delay"
    }
    reschedule {
      attempts  = 3
      interval  = "1h"
      unlimited = false
    }
    ephemeral_disk {
      size = 500
    }
    network {
      mode = "bridge"
      port "db" {
        to = 6379
      }
      port "admin" {
        static = 8080
      }
    }
    service {
      name     = "redis"
      port     = "db"
      tags     = ["cache", "v7"]
      provider = "nomad"
      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"
      }
      check {
        name     = "alive"
        type     = "script"
        task     = "redis"
        command  = "redis-cli"
        args     = ["ping"]
        interval = "1m30s"
        timeout  = "500ms"
      }
    }

    task "redis" {
      driver = "docker"
      user   = "redis"
      leader = true
      config {
        image = "redis:7"
        args  = ["--port", 6379]
      }
      env {
        MODE = "cache"
      }
      resources {
        cpu        = 500
        memory     = 256
        memory_max = 512
      }
      restart {
        attempts = 1
      }
      constraint {
        attribute = "${meta.rack}"
        operator  = "regexp"
        value     = "r[0-9]+"
      }
      affinity {
        attribute = "${node.class}"
        operator  = "!="
        value     = "small"
        weight    = 20
      }
      service {
        port = "admin"
        check {
          type = "http"
          path = "/health"
        }
      }
      kill_timeout = "30s"
      kill_signal  = "SIGINT"
      meta = { owner = "ops" }
    }

    task "init" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "echo ${NOMAD_ALLOC_ID}"]
      }
      lifecycle {
        hook    = "prestart"
        sidecar = false
      }
    }
  }
}
"""


def test_every_supported_feature_is_mapped():
    job = load(FULL)
    assert (job.id, job.name, job.type, job.priority) == ("web", "web", "service", 70)
    assert (job.namespace, job.region, job.node_pool) == ("prod", "eu", "fast")
    assert job.datacenters == ["dc1", "dc2"]
    assert job.meta == {"team": "core", "version": "3"}
    assert job.constraints == [
        Constraint("${attr.kernel.name}", "=", "linux"),
        Constraint("", "distinct_hosts", "true"),
    ]
    assert job.affinities == [Affinity("${node.datacenter}", "=", "dc1", -50)]
    assert job.spreads == [Spread("${node.datacenter}", 100, [SpreadTarget("dc1", 70), SpreadTarget("dc2", 30)])]

    (g,) = job.groups
    assert (g.name, g.count, g.meta, g.ephemeral_disk) == ("cache", 2, {"tier": "cache"}, 500)
    assert g.restart == RestartPolicy(attempts=4, interval=600.0, delay=20.0, mode="delay")
    # job-level reschedule merged under the group's, over the service defaults
    assert g.reschedule == ReschedulePolicy(
        attempts=3, interval=3600.0, delay=10.0, delay_function="constant", max_delay=3600.0, unlimited=False
    )
    assert g.networks == [Network("bridge", [Port("db", 0, 6379), Port("admin", 8080, 0)])]
    assert g.services == [
        Service(
            name="redis",
            port="db",
            tags=["cache", "v7"],
            provider="shoal",
            checks=[
                Check(type="tcp", interval=15.0, timeout=3.0),
                Check(name="alive", type="script", command="redis-cli", args=["ping"], interval=90.0,
                      timeout=0.5, task="redis"),
            ],
        )
    ]

    redis, init = g.tasks
    assert redis.driver == "docker"
    assert redis.config == {"image": "redis:7", "args": ["--port", "6379"]}  # HCL turns 6379 into "6379"
    assert redis.env == {"MODE": "cache"}
    assert redis.resources == Resources(cpu=500, memory=256, memory_max=512)
    # a task restart block inherits what it does not set from the group's
    assert redis.restart == RestartPolicy(attempts=1, interval=600.0, delay=20.0, mode="delay")
    assert redis.constraints == [Constraint("${meta.rack}", "regexp", "r[0-9]+")]
    assert redis.affinities == [Affinity("${node.class}", "!=", "small", 20)]
    assert redis.services == [
        Service(name="web-cache-redis", port="admin", checks=[Check(type="http", path="/health")])
    ]
    assert (redis.user, redis.leader, redis.kill_timeout, redis.kill_signal) == ("redis", True, 30.0, "SIGINT")
    assert redis.meta == {"owner": "ops"}
    assert init.lifecycle == Lifecycle("prestart", False)
    assert init.config["args"] == ["-c", "echo ${NOMAD_ALLOC_ID}"]
    assert init.restart is None  # the group's policy applies


def test_defaults_follow_nomad():
    job = load(one_task(""))
    assert (job.type, job.priority, job.namespace, job.region, job.datacenters) == (
        "service", 50, "default", "global", ["*"])
    g = job.groups[0]
    assert (g.count, g.restart, g.reschedule, g.networks, g.ephemeral_disk) == (1, None, None, [], 300)
    t = g.tasks[0]
    assert (t.resources, t.kill_timeout, t.kill_signal, t.restart) == (Resources(), 5.0, "SIGTERM", None)


def test_batch_restart_defaults_are_batch_defaults():
    job = load('job "b" {\n type = "batch"\n group "g" {\n restart { attempts = 0 }\n'
               ' task "t" {\n driver = "exec"\n config { command = "x" } } } }')
    assert job.groups[0].restart == RestartPolicy(attempts=0, interval=86400.0, delay=15.0, mode="fail")


def test_cty_conversions_of_strings_to_numbers_and_bools():
    job = load('job "w" {\n group "g" {\n count = "2"\n network {\n port "p" { static = "8888" } }\n'
               ' reschedule { unlimited = "true" }\n ephemeral_disk { size = "101" }\n'
               ' task "t" {\n driver = "exec"\n config { command = "x" }\n resources { cpu = "250" } } } }')
    g = job.groups[0]
    assert (g.count, g.networks[0].ports[0].static, g.reschedule.unlimited, g.ephemeral_disk) == (2, 8888, True, 101)
    assert g.tasks[0].resources.cpu == 250


def test_variables_defaults_and_overrides():
    text = """
variable "image" {
  type        = string
  default     = "redis:7"
  description = "the image"
}
variable "count" {
  type    = number
  default = 1
}
variable "dcs" {
  type    = list(string)
  default = ["dc1"]
}
job "web" {
  datacenters = var.dcs
  group "g" {
    count = var.count
    task "t" {
      driver = "docker"
      config { image = var.image }
    }
  }
}
"""
    job = load(text)
    assert (job.groups[0].count, job.groups[0].tasks[0].config["image"], job.datacenters) == (1, "redis:7", ["dc1"])
    job = load(text, {"image": "redis:8", "count": "4", "dcs": '["a", "b"]'})
    assert (job.groups[0].count, job.groups[0].tasks[0].config["image"], job.datacenters) == (4, "redis:8", ["a", "b"])


def test_variables_shorthand_block_and_validation():
    text = """
variables {
  size = 3
}
variable "env" {
  default = "dev"
  validation {
    condition     = contains(["dev", "prod"], var.env)
    error_message = "env must be dev or prod"
  }
}
job "web" {
  meta = { env = var.env }
  group "g" {
    count = var.size
    task "t" {
      driver = "exec"
      config { command = "x" }
    }
  }
}
"""
    job = load(text)
    assert (job.groups[0].count, job.meta) == (3, {"env": "dev"})
    with pytest.raises(JobFileError) as e:
        load(text, {"env": "staging"})
    assert [str(p) for p in e.value.problems] == ['web.hcl:5: variable "env": invalid value: env must be dev or prod']


def test_variable_errors():
    text = 'variable "n" {\n  type = number\n}\njob "w" {\n group "g" {\n count = var.n\n task "t" {\n' \
           ' driver = "exec"\n config { command = "x" } } } }'
    with pytest.raises(JobFileError) as e:
        load(text)
    assert [str(p) for p in e.value.problems] == [
        'web.hcl:1: variable "n": no value given and no default set (give it a value when you load the job, '
        "or add a default)"
    ]
    with pytest.raises(JobFileError) as e:
        load(text, {"n": "many", "other": "1"})
    messages = [str(p) for p in e.value.problems]
    assert messages == [
        'web.hcl:1: variable "n": value "many" given for this variable is invalid: "many" is not a number',
        'web.hcl: variable "other": a value was given for a variable the job file does not declare',
    ]


def test_locals_interpolation_and_functions():
    text = """
locals {
  base   = "web"
  name   = "${local.base}-${lower("API")}"
  ports  = { http = 8080, grpc = 9090 }
  labels = sort(keys(local.ports))
  args   = concat(["-v"], [for p in local.labels : format("--%s=%d", p, local.ports[p])])
}
job "web" {
  meta = {
    name    = local.name
    joined  = join(",", split(" ", "a b c"))
    count   = length(local.labels)
    biggest = max(3, 7, 5)
    small   = min(3, 7)
    text    = tostring(12)
    number  = tonumber("42") + 1
    upper   = upper("x")
    cond    = length(local.labels) > 1 ? "many" : "one"
    coalesced = coalesce("", "fallback")
    json    = jsonencode({ a = 1 })
    sub     = substr("hello", 1, 3)
    replaced = replace("a-b-c", "-", "_")
    trimmed = trimspace("  t  ")
  }
  group "g" {
    task "t" {
      driver = "exec"
      config {
        command = "/bin/${local.base}"
        args    = local.args
      }
    }
  }
}
"""
    job = load(text)
    assert job.meta == {
        "name": "web-api", "joined": "a,b,c", "count": "2", "biggest": "7", "small": "3", "text": "12",
        "number": "43", "upper": "X", "cond": "many", "coalesced": "fallback", "json": '{"a":1}', "sub": "ell",
        "replaced": "a_b_c", "trimmed": "t",
    }
    assert job.groups[0].tasks[0].config == {"command": "/bin/web", "args": ["-v", "--grpc=9090", "--http=8080"]}


def test_runtime_interpolations_are_kept_verbatim():
    job = load(one_task(
        'env {\n A = "${NOMAD_ALLOC_ID}"\n B = "${attr.kernel.name}-${node.unique.id}"\n'
        ' C = "${meta.rack}"\n D = "${env["HOME"]}"\n E = "$${escaped}"\n F = "${NOMAD_PORT_http}:${upper("x")}" }'))
    assert job.groups[0].tasks[0].env == {
        "A": "${NOMAD_ALLOC_ID}",
        "B": "${attr.kernel.name}-${node.unique.id}",
        "C": "${meta.rack}",
        "D": '${env["HOME"]}',
        "E": "${escaped}",
        "F": "${NOMAD_PORT_http}:X",
    }


def test_heredocs_plain_and_indented():
    text = one_task("", driver="raw_exec", config='''
      command = "/bin/sh"
      args = ["-c", <<EOF
echo "${NOMAD_TASK_NAME}"
  exit ${1 + 1}
EOF
, <<-EOT
        first
          second ${upper("x")}
        EOT
]''')
    args = load(text).groups[0].tasks[0].config["args"]
    assert args == ["-c", 'echo "${NOMAD_TASK_NAME}"\n  exit 2\n', "first\n  second X\n"]


def test_template_directives():
    job = load(one_task('env {\n A = "%{ for i in [1, 2, 3] }${i},%{ endfor }"\n'
                        ' B = "%{ if 2 > 1 }yes%{ else }no%{ endif }"\n C = "x %{~ if true ~} y %{~ endif ~} z" }'))
    assert job.groups[0].tasks[0].env == {"A": "1,2,3,", "B": "yes", "C": "xyz"}


def test_dynamic_blocks_expand():
    text = """
locals {
  ports = { http = 8080, metrics = 9100 }
  racks = ["r1", "r2"]
}
job "web" {
  dynamic "constraint" {
    for_each = local.racks
    iterator = rack
    content {
      attribute = "${meta.rack}"
      operator  = "!="
      value     = rack.value
    }
  }
  group "g" {
    network {
      dynamic "port" {
        for_each = local.ports
        labels   = [port.key]
        content {
          to = port.value
        }
      }
    }
    dynamic "task" {
      for_each = ["a", "b"]
      labels   = ["task-${task.value}"]
      content {
        driver = "exec"
        config {
          command = "/bin/${task.value}"
        }
      }
    }
  }
}
"""
    job = load(text)
    assert job.constraints == [Constraint("${meta.rack}", "!=", "r1"), Constraint("${meta.rack}", "!=", "r2")]
    g = job.groups[0]
    assert g.networks[0].ports == [Port("http", 0, 8080), Port("metrics", 0, 9100)]
    assert [(t.name, t.config["command"]) for t in g.tasks] == [("task-a", "/bin/a"), ("task-b", "/bin/b")]


def test_file_function_reads_relative_to_the_job_file(tmp_path: Path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "script.sh").write_text("echo hi\n")
    job_file = tmp_path / "web.nomad"
    job_file.write_text(one_task("", driver="raw_exec", config='command = "/bin/sh"\n args = ["-c", file("conf/script.sh")]'))
    job = load_job_file(job_file).job
    assert job.groups[0].tasks[0].config["args"] == ["-c", "echo hi\n"]
    (tmp_path / "conf" / "script.sh").unlink()
    with pytest.raises(JobFileError) as e:
        load_job_file(job_file)
    (p,) = e.value.problems
    assert (p.file, p.line, p.field) == (str(job_file), 6, 'job "web" group "g" task "t" config.args')
    assert "file(): cannot read" in p.message


def test_logs_block_sets_rotation():
    loaded = load_job_text(one_task("logs {\n max_files = 3\n max_file_size = 2\n }"), "web.hcl")
    assert loaded.warnings == []
    logs = loaded.job.groups[0].tasks[0].logs
    assert (logs.max_files, logs.max_file_size, logs.disabled) == (3, 2, False)
    assert load_job_text(one_task(""), "web.hcl").job.groups[0].tasks[0].logs.max_files == 10


def test_docker_ports_and_auth_soft_fail_are_accepted_with_warnings():
    text = ('job "w" {\n group "g" {\n network {\n port "db" { to = 6379 }\n }\n task "t" {\n driver = "docker"\n'
            ' config {\n image = "redis"\n ports = ["db"]\n auth_soft_fail = true\n }\n }\n }\n}\n')
    loaded = load_job_text(text, "w.hcl")
    assert loaded.job.groups[0].tasks[0].config == {"image": "redis", "ports": ["db"], "auth_soft_fail": True}
    assert loaded.warnings == [
        'w.hcl:10: job "w" group "g" task "t" config.ports: ignored: every port of the group\'s network block is '
        "published, whether the task lists it or not (bridge and overlay modes: host port -> the allocation's "
        "address; host mode: the task binds it)",
        'w.hcl:11: job "w" group "g" task "t" config.auth_soft_fail: ignored: a failed registry login fails the pull',
    ]


def test_constraint_shorthands():
    job = load('job "w" {\n constraint { distinct_property = "${meta.rack}" }\n'
               ' constraint {\n attribute = "${attr.os.version}"\n version = ">= 1.2" }\n'
               ' group "g" {\n task "t" {\n driver = "exec"\n config { command = "x" } } } }')
    assert job.constraints == [
        Constraint("${meta.rack}", "distinct_property", ""),
        Constraint("${attr.os.version}", "version", ">= 1.2"),
    ]


def test_name_attribute_sets_the_job_name_not_the_id():
    job = load('job "web-1" {\n name = "Web"\n group "g" {\n task "t" {\n driver = "exec"\n'
               ' config { command = "x" } } } }')
    assert (job.id, job.name) == ("web-1", "Web")


def test_crlf_line_endings():
    job = load(one_task("").replace("\n", "\r\n"))
    assert job.groups[0].tasks[0].config == {"command": "/bin/true"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5h", 5400.0), ("0", 0.0),
     ("2h45m10s", 9910.0), ("10us", 1e-5), ("-5s", -5.0)],
)
def test_durations(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1m 30s", "--1s", "1.2.3s"])
def test_bad_durations(text: str):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.0, 0.5, 30.0, 90.0, 3600.0, 9910.0, 1.25])
def test_format_duration_round_trips(seconds: float):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
