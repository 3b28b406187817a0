"""Job files that are wrong: every problem names the file, the line and the field."""

from __future__ import annotations

import pytest

from shoal.errors import JobFileError
from shoal.jobs.loader import load_job_text


def problems(text: str, filename: str = "web.hcl", variables: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(JobFileError) as e:
        load_job_text(text, filename, variables)
    for p in e.value.problems:
        assert p.file == filename
    return [str(p) for p in e.value.problems]


def job(group_body: str, task_body: str = 'driver = "exec"\n      config { command = "/bin/true" }') -> str:
    return (
        'job "web" {\n'  # 1
        '  group "cache" {\n'  # 2
        f"    {group_body}\n"  # 3
        '    task "redis" {\n'  # 4
        f"      {task_body}\n"  # 5..
        "    }\n"
        "  }\n"
        "}\n"
    )


def test_unknown_driver():
    assert problems(job("", 'driver = "java"')) == [
        'web.hcl:5: job "web" group "cache" task "redis" driver: unsupported driver "java": '
        'shoal runs "container", "docker", "exec", "raw_exec"'
    ]


@pytest.mark.parametrize("driver", ["qemu", "podman", "java", "firecracker"])
def test_other_nomad_drivers_are_unsupported(driver: str):
    (msg,) = problems(job("", f'driver = "{driver}"'))
    assert msg.startswith(f'web.hcl:5: job "web" group "cache" task "redis" driver: unsupported driver "{driver}"')


def test_missing_driver():
    assert problems(job("", "")) == [
        'web.hcl:4: job "web" group "cache" task "redis" driver: the task needs a driver: driver = "container" '
        "(shoal runs container, docker, exec, raw_exec)"
    ]


def test_negative_count():
    assert problems(job("count = -1")) == ['web.hcl:3: job "web" group "cache" count: count must be 0 or more, got -1']


def test_string_where_a_number_belongs():
    assert problems(job('count = "three"')) == [
        'web.hcl:3: job "web" group "cache" count: expected a number, got "three"'
    ]


def test_memory_lots():
    text = job("", 'driver = "exec"\n      config { command = "x" }\n      resources {\n        memory = "lots"\n      }')
    assert problems(text) == [
        'web.hcl:8: job "web" group "cache" task "redis" resources.memory: expected a number, got "lots"'
    ]


def test_wrong_types():
    text = (
        'job "web" {\n'
        '  datacenters = "dc1"\n'
        "  priority = true\n"
        '  group "g" {\n'
        "    count = 1.5\n"
        '    task "t" {\n'
        "      driver = [\"exec\"]\n"
        '      kill_timeout = 30\n'
        '      leader = "yes"\n'
        "      env = { A = [1] }\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
    assert problems(text) == [
        'web.hcl:2: job "web" datacenters: expected a list of strings, got "dc1"',
        'web.hcl:3: job "web" priority: expected a number, got true',
        'web.hcl:5: job "web" group "g" count: expected a whole number, got 1.5',
        'web.hcl:7: job "web" group "g" task "t" driver: expected a string, got a list',
        'web.hcl:8: job "web" group "g" task "t" kill_timeout: expected a duration such as "30s", "1m30s" or "500ms", '
        "got 30",
        'web.hcl:9: job "web" group "g" task "t" leader: expected true or false, got "yes"',
        'web.hcl:10: job "web" group "g" task "t" env: expected a map of strings, but "A" is a list',
    ]


def test_syntax_error_names_the_line():
    text = 'job "web" {\n  group "g" {\n    count = \n  }\n}\n'
    (msg,) = problems(text)
    assert msg.startswith("web.hcl:3: syntax error: unexpected end of line; expected a value")


def test_unclosed_brace_is_a_syntax_error():
    (msg,) = problems('job "web" {\n  group "g" {\n')
    assert msg.startswith("web.hcl:")
    assert "syntax error: unexpected end of file" in msg


def test_every_problem_is_reported_together():
    text = (
        'job "web" {\n'  # 1
        '  type = "daemon"\n'  # 2
        "  priority = 500\n"  # 3
        "  update {\n"  # 4
        "    canary = 1\n"
        "  }\n"
        '  group "g" {\n'  # 7
        "    count = -2\n"  # 8
        "    cont = 3\n"  # 9
        '    task "t" {\n'  # 10
        '      driver = "qemu"\n'  # 11
        "      resources {\n"  # 12
        '        memory = "lots"\n'  # 13
        "      }\n"
        "      template {\n"  # 15
        '        data = "x"\n'
        "      }\n"
        "    }\n"
        '    task "t" {\n'  # 19
        '      driver = "exec"\n'
        '      config { command = "x" }\n'
        "    }\n"
        "  }\n"
        "}\n"
    )
    assert problems(text) == [
        'web.hcl:2: job "web" type: unknown job type "daemon"; use one of service, batch, system, sysbatch',
        'web.hcl:3: job "web" priority: priority must be between 1 and 100, got 500',
        'web.hcl:4: job "web" update: not supported: shoal has no rolling updates, canaries or deployments; '
        "a changed job replaces its allocations",
        'web.hcl:8: job "web" group "g" count: count must be 0 or more, got -2',
        'web.hcl:9: job "web" group "g" cont: unknown attribute in a group block; did you mean "count"?',
        'web.hcl:11: job "web" group "g" task "t" driver: unsupported driver "qemu": '
        'shoal runs "container", "docker", "exec", "raw_exec"',
        'web.hcl:13: job "web" group "g" task "t" resources.memory: expected a number, got "lots"',
        'web.hcl:15: job "web" group "g" task "t" template: not supported: shoal does not render templates '
        "(consul-template); use env or bake files into the image",
        'web.hcl:19: job "web" group "g" task "t": duplicate task name "t": task names must be unique in a group',
    ]


def test_a_file_of_unsupported_features_lists_them_all():
    text = """job "everything" {
  periodic {
    cron = "@daily"
  }
  parameterized {}
  vault {
    policies = ["x"]
  }
  migrate {}
  group "g" {
    scaling {
      max = 3
    }
    volume "v" {
      type = "host"
    }
    max_client_disconnect = "1h"
    consul {}
    task "t" {
      driver = "docker"
      config {
        image   = "x"
        volumes = ["a:b"]
      }
      artifact {
        source = "http://x"
      }
      identity {}
      volume_mount {
        volume = "v"
      }
      dispatch_payload {
        file = "x"
      }
      resources {
        device "nvidia/gpu" {}
        network {
          mbits = 10
        }
      }
      csi_plugin {}
      service {
        connect {}
      }
    }
  }
}
"""
    fields = [m.split(": ")[1] for m in problems(text, "all.hcl")]
    assert fields == [
        'job "everything" periodic',
        'job "everything" parameterized',
        'job "everything" vault',
        'job "everything" migrate',
        'job "everything" group "g" scaling',
        'job "everything" group "g" volume "v"',
        'job "everything" group "g" max_client_disconnect',
        'job "everything" group "g" consul',
        'job "everything" group "g" task "t" artifact',
        'job "everything" group "g" task "t" identity',
        'job "everything" group "g" task "t" volume_mount',
        'job "everything" group "g" task "t" dispatch_payload',
        'job "everything" group "g" task "t" resources device "nvidia/gpu"',
        'job "everything" group "g" task "t" resources.network',
        'job "everything" group "g" task "t" csi_plugin',
        'job "everything" group "g" task "t" service[0].connect',
    ]
    for m in problems(text, "all.hcl"):
        assert "not supported" in m


def test_unknown_names_get_suggestions():
    assert problems(job("", 'driver = "exec"\n      config { command = "x" }\n      resorces { cpu = 1 }')) == [
        'web.hcl:7: job "web" group "cache" task "redis" resorces: unknown block in a task block; '
        'did you mean "resources"?'
    ]


def test_evaluation_errors_name_the_attribute():
    assert problems(job("count = var.replicas")) == [
        'web.hcl:3: job "web" group "cache" count: no variable named "replicas" is declared (declared: none)'
    ]
    assert problems(job("count = nosuch(1)")) == ['web.hcl:3: job "web" group "cache" count: unknown function nosuch()']
    assert problems(job("count = node.count")) == [
        'web.hcl:3: job "web" group "cache" count: unknown variable "node"; use var.NAME or local.NAME, and quote '
        'runtime values such as "${node...}"'
    ]


def test_attribute_set_twice():
    assert problems(job("count = 1\n    count = 2")) == [
        'web.hcl:4: job "web" group "cache" count: set more than once (first at line 3)'
    ]


def test_attribute_written_as_block_and_block_as_attribute():
    msgs = problems(job("count { }\n    restart = { attempts = 1 }"))
    assert msgs == [
        'web.hcl:3: job "web" group "cache" count: count is an attribute, not a block: write count = ...',
        'web.hcl:4: job "web" group "cache" restart: restart is a block, not an attribute: write restart { ... }',
    ]


def test_single_blocks_may_not_repeat():
    text = job("", 'driver = "exec"\n      config { command = "x" }\n      resources { cpu = 1 }\n      resources { cpu = 2 }')
    assert problems(text) == [
        'web.hcl:8: job "web" group "cache" task "redis" resources: only one resources block is allowed here '
        "(first at line 7)"
    ]


def test_labels_are_checked():
    assert problems('job {\n group "g" {\n task "t" {\n driver = "exec"\n config { command = "x" } } } }\n') == [
        'web.hcl:1: job "": the job id must not be empty'
    ]
    msgs = problems('job "w" {\n group {\n task "t" {\n driver = "exec"\n config { command = "x" } } } }\n')
    assert msgs[0] == 'web.hcl:2: job "w" group[0]: a group block needs one non-empty label: group "NAME" { ... }'


def test_docker_config_is_checked():
    text = job(
        "",
        'driver = "docker"\n      config {\n        command = "x"\n        port_map { http = 80 }\n'
        "        privileged = true\n        frobnicate = 1\n      }",
    )
    assert problems(text) == [
        'web.hcl:6: job "web" group "cache" task "redis" config: the docker driver needs config { image = ... } '
        '(the image to run, e.g. "busybox:latest")',
        'web.hcl:8: job "web" group "cache" task "redis" config.port_map: not supported by the docker driver: '
        'port_map is Nomad\'s deprecated form: declare network { port "LABEL" { to = PORT } } in the group '
        'and list the label in ports = ["LABEL"]',
        'web.hcl:9: job "web" group "cache" task "redis" config.privileged: not supported by the docker driver: '
        "shoal runs no privileged containers",
        'web.hcl:10: job "web" group "cache" task "redis" config.frobnicate: unknown option for the docker driver '
        "(it understands image, command, args, entrypoint, work_dir, volumes, readonly_rootfs, pids_limit, auth, "
        "force_pull, cpu_hard_limit, cap_drop)",
    ]


def test_top_level_problems():
    msgs = problems('foo = 1\nterraform {}\njob "a" {\n group "g" {\n task "t" {\n driver = "exec"\n'
                    ' config { command = "x" } } } }\njob "b" {}\n')
    assert msgs == [
        'web.hcl:1: attribute "foo" is not allowed at the top level; a job file holds a job block, and variable '
        "and locals blocks",
        'web.hcl:2: terraform: unsupported top-level block "terraform"; a job file holds one job block, and '
        "variable and locals blocks",
        "web.hcl:8: job: only one job block is allowed per file",
    ]
    assert problems("# nothing here\n") == ['web.hcl:1: no job block found (expected job "NAME" { ... })']


def test_dynamic_block_errors():
    msgs = problems(job('dynamic "task" {\n      for_each = 3\n      content {}\n    }'))
    assert msgs == ['web.hcl:4: job "web" group "cache" dynamic "task" for_each: cannot iterate over 3: '
                    "expected a list or a map"]


def test_yaml_errors_carry_lines():
    text = (
        "job:\n"  # 1
        "  web:\n"  # 2
        "    group:\n"  # 3
        "      cache:\n"  # 4
        "        count: -1\n"  # 5
        "        task:\n"  # 6
        "          redis:\n"  # 7
        "            driver: java\n"  # 8
        "            resources:\n"  # 9
        "              memory: lots\n"  # 10
        "            template:\n"  # 11
        "              data: x\n"
    )
    assert problems(text, "web.yaml") == [
        'web.yaml:5: job "web" group "cache" count: count must be 0 or more, got -1',
        'web.yaml:8: job "web" group "cache" task "redis" driver: unsupported driver "java": '
        'shoal runs "container", "docker", "exec", "raw_exec"',
        'web.yaml:10: job "web" group "cache" task "redis" resources.memory: expected a number, got "lots"',
        'web.yaml:11: job "web" group "cache" task "redis" template: not supported: shoal does not render templates '
        "(consul-template); use env or bake files into the image",
    ]


def test_yaml_syntax_error():
    (msg,) = problems("job:\n  web:\n    group: [\n", "web.yml")
    assert msg.startswith("web.yml:4: YAML error:")


def test_yaml_duplicate_keys():
    text = "job:\n  web:\n    priority: 1\n    priority: 2\n    group:\n      g:\n        task:\n          t:\n" \
           "            driver: exec\n            config: {command: x}\n"
    assert problems(text, "web.yaml") == ['web.yaml:4: job "web" priority: set more than once (first at line 3)']


def test_json_errors_carry_lines():
    text = '{\n  "job": {\n    "web": {\n      "group": {\n        "g": {\n          "count": "three",\n' \
           '          "task": {"t": {"driver": "exec", "config": {"command": "x"}}}\n        }\n      }\n    }\n  }\n}\n'
    assert problems(text, "web.json") == ['web.json:6: job "web" group "g" count: expected a number, got "three"']
    (msg,) = problems('{\n  "job": {\n    "web": [1,\n  }\n}\n', "web.json")
    assert msg.startswith("web.json:4: JSON error:")


def test_structured_files_refuse_variables():
    text = "job:\n  name: web\n  meta: {a: '${var.x}'}\n  group:\n    - name: g\n      task:\n        - name: t\n" \
           "          driver: exec\n          config: {command: x}\n"
    assert problems(text, "web.yaml", {"x": "1"}) == [
        'web.yaml:3: job "web" meta: ${var.*} and ${local.*} are only evaluated in HCL job files',
        "web.yaml: variables (x) can only be used with HCL job files; this one is YAML",
    ]


def test_not_utf8(tmp_path):
    from shoal.jobs.loader import load_job_file

    f = tmp_path / "bad.hcl"
    f.write_bytes(b'job "x" {\n meta = { a = "\xff" }\n}\n')
    with pytest.raises(JobFileError) as e:
        load_job_file(f)
    assert [str(p) for p in e.value.problems] == [f"{f}:2: the job file is not UTF-8 text"]
    with pytest.raises(JobFileError) as e:
        load_job_file(tmp_path / "missing.hcl")
    assert "cannot read the job file" in str(e.value)
