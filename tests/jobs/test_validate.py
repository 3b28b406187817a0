"""Semantic validation: what Nomad's Job.Validate refuses, and what shoal cannot run."""

from __future__ import annotations

import pytest

from shoal.errors import JobFileError
from shoal.jobs.loader import load_job_text
from shoal.jobs.model import Job, Network, Port, Resources, Service, Task, TaskGroup
from shoal.jobs.validate import validate_job


def problems(text: str) -> list[str]:
    with pytest.raises(JobFileError) as e:
        load_job_text(text, "v.hcl")
    return [str(p) for p in e.value.problems]


def group(body: str, task: str = "", job_attrs: str = "") -> str:
    return (
        f'job "v" {{\n{job_attrs}\n  group "g" {{\n{body}\n'
        f'    task "t" {{\n      driver = "exec"\n      config {{ command = "x" }}\n{task}\n    }}\n  }}\n}}\n'
    )


def only(text: str) -> str:
    (msg,) = problems(text)
    return msg.split(": ", 1)[1]


def test_valid_minimal_job_has_no_problems():
    job = load_job_text(group(""), "v.hcl").job
    assert validate_job(job) == []


def test_validate_without_a_source_map_has_no_lines():
    job = Job(id="j", name="j", groups=[TaskGroup(name="g", count=-1, tasks=[Task(name="t", driver="exec",
                                                                                   config={"command": "x"})])])
    (p,) = validate_job(job, filename="api")
    assert (p.file, p.line, p.field, p.message) == ("api", None, 'job "j" group "g" count', "count must be 0 or more, got -1")


@pytest.mark.parametrize(
    ("job_attrs", "expected"),
    [
        ('  type = "cron"', 'job "v" type: unknown job type "cron"; use one of service, batch, system, sysbatch'),
        ("  priority = 0", 'job "v" priority: priority must be between 1 and 100, got 0'),
        ("  datacenters = []", 'job "v" datacenters: datacenters must list at least one datacenter (["*"] means all)'),
        ('  namespace = "a b"', 'job "v" namespace: namespace must be a non-empty name without spaces, got "a b"'),
    ],
)
def test_job_fields(job_attrs: str, expected: str):
    assert only(group("", job_attrs=job_attrs)) == expected


def test_job_id_must_be_sane():
    assert only('job "a b" {\n group "g" {\n task "t" {\n driver = "exec"\n config { command = "x" } } } }') == \
        'job "a b": the job id "a b" must not contain spaces or control characters'


def test_job_needs_groups_and_groups_need_tasks():
    assert problems('job "v" {\n}\n') == ['v.hcl:1: job "v": a job needs at least one group: group "NAME" { task "NAME" { ... } }']
    assert problems('job "v" {\n group "g" {\n }\n}\n') == [
        'v.hcl:2: job "v" group "g": a group needs at least one task: task "NAME" { driver = ... }'
    ]


def test_duplicate_groups_name_the_second():
    text = ('job "v" {\n group "g" {\n task "t" {\n driver = "exec"\n config { command = "x" } } }\n'
            ' group "g" {\n task "t" {\n driver = "exec"\n config { command = "x" } } }\n}\n')
    assert problems(text) == ['v.hcl:6: job "v" group "g": duplicate group name "g": group names must be unique in a job']


def test_system_jobs_have_no_count_above_one():
    assert only(group("count = 3", job_attrs='  type = "system"')) == \
        'job "v" group "g" count: a system job runs one allocation per node: count cannot exceed 1 (got 3)'


def test_resources_must_be_positive():
    msgs = problems(group("", task="      resources {\n        cpu = 0\n        memory = -1\n        memory_max = 1\n      }"))
    assert msgs == [
        'v.hcl:9: job "v" group "g" task "t" resources.cpu: cpu must be more than 0 MHz, got 0',
        'v.hcl:10: job "v" group "g" task "t" resources.memory: memory must be more than 0 MB, got -1',
    ]


def test_memory_max_below_memory():
    assert only(group("", task="      resources {\n        memory = 256\n        memory_max = 128\n      }")) == (
        'job "v" group "g" task "t" resources.memory_max: memory_max (128 MB) must be at least memory (256 MB), '
        "or 0 for no limit above it"
    )


def test_constraint_operator_must_be_known():
    assert only(group('constraint {\n attribute = "${attr.x}"\n operator = "~="\n value = "1"\n }')) == (
        'job "v" group "g" constraint[0].operator: unknown constraint operator "~="; use one of '
        "=, ==, is, !=, not, >, >=, <, <=, regexp, set_contains, set_contains_all, set_contains_any, version, "
        "semver, is_set, is_not_set, distinct_hosts, distinct_property"
    )


def test_constraint_regexp_must_compile():
    msg = only(group('constraint {\n attribute = "${attr.x}"\n operator = "regexp"\n value = "("\n }'))
    assert msg.startswith('job "v" group "g" constraint[0].value: invalid regular expression "("')


def test_affinity_weight_range():
    assert only(group('affinity {\n attribute = "${node.class}"\n value = "x"\n weight = 0\n }')) == \
        'job "v" group "g" affinity[0].weight: affinity weight must be from -100 to 100 and not 0, got 0'


def test_spread_targets_add_up():
    text = group('spread {\n attribute = "${node.datacenter}"\n target "a" { percent = 70 }\n'
                 ' target "b" { percent = 40 }\n }')
    assert only(text) == 'job "v" group "g" spread[0]: spread target percentages add up to 110, more than 100'


@pytest.mark.parametrize(
    ("restart", "expected"),
    [
        ('mode = "retry"', 'restart.mode: restart mode must be "fail" or "delay", got "retry"'),
        ('interval = "1s"', "restart.interval: interval must be at least 5s, got 1s"),
        ('attempts = 10\n delay = "1m"\n interval = "5m"',
         "restart: 10 restarts 60s apart cannot fit in an interval of 300s"),
        ('attempts = 0\n mode = "delay"',
         'restart.mode: mode "delay" with 0 attempts is ambiguous; use mode = "fail" or allow attempts'),
    ],
)
def test_restart_policy(restart: str, expected: str):
    assert only(group(f"restart {{\n {restart}\n }}")) == f'job "v" group "g" {expected}'


def test_reschedule_delay_function():
    assert only(group('reschedule {\n delay_function = "linear"\n }')) == (
        'job "v" group "g" reschedule.delay_function: delay_function must be one of constant, exponential, '
        'fibonacci, got "linear"'
    )


def test_port_labels_unique_and_services_reference_them():
    text = group('network {\n port "http" {}\n port "http" { static = 80 }\n }\n'
                 ' service {\n name = "web"\n port = "https"\n }')
    assert problems(text) == [
        'v.hcl:6: job "v" group "g" network port "http": duplicate port label "http": port labels must be unique '
        "in a group",
        'v.hcl:10: job "v" group "g" service[0].port: no port labelled "https" in the group\'s network (ports: "http")',
    ]


def test_static_ports_in_range_and_unique():
    text = group('network {\n port "a" { static = 70000 }\n port "b" { static = 80 }\n port "c" { static = 80 }\n }')
    assert problems(text) == [
        'v.hcl:5: job "v" group "g" network port "a" static: static must be a port number from 1 to 65535, got 70000',
        'v.hcl:7: job "v" group "g" network port "c" static: static port 80 is already taken by port "b"',
    ]


def test_docker_ports_reference_group_labels():
    text = ('job "v" {\n group "g" {\n task "t" {\n driver = "docker"\n config {\n image = "x"\n'
            ' ports = ["http"]\n }\n }\n }\n}\n')
    assert problems(text) == [
        'v.hcl:7: job "v" group "g" task "t" config.ports: no port labelled "http" in the group\'s network (ports: none)'
    ]


def test_checks():
    text = group('network {\n port "p" {}\n }\n service {\n name = "s"\n'
                 ' check {\n type = "http"\n port = "p"\n }\n'
                 ' check {\n type = "script"\n command = "true"\n }\n'
                 ' check {\n type = "grpc"\n }\n'
                 ' check {\n type = "tcp"\n interval = "0s"\n }\n }')
    assert problems(text) == [
        'v.hcl:9: job "v" group "g" service[0].check[0].path: an http check needs a path, e.g. path = "/health"',
        'v.hcl:13: job "v" group "g" service[0].check[1].task: a script check in a group service must name the '
        'task to run in: task = "NAME"',
        'v.hcl:18: job "v" group "g" service[0].check[2].type: not supported check type "grpc"; use one of tcp, '
        "http, script",
        'v.hcl:20: job "v" group "g" service[0].check[3]: a tcp check needs a port: set port on the check or on '
        "the service",
        'v.hcl:22: job "v" group "g" service[0].check[3].interval: interval must be more than 0s',
    ]


def test_consul_provider_is_refused():
    text = group('network {\n port "p" {}\n }\n service {\n name = "s"\n port = "p"\n provider = "consul"\n }')
    assert only(text) == (
        'job "v" group "g" service[0].provider: provider "consul" is not supported: shoal has no Consul '
        'integration; use provider = "nomad" (shoal\'s own service catalog)'
    )


def test_lifecycle_hooks_and_leaders():
    text = ('job "v" {\n group "g" {\n task "a" {\n driver = "exec"\n config { command = "x" }\n leader = true\n'
            ' lifecycle { hook = "prerun" }\n }\n task "b" {\n driver = "exec"\n config { command = "x" }\n'
            ' leader = true\n lifecycle {\n hook = "poststop"\n sidecar = true\n }\n }\n }\n}\n')
    assert problems(text) == [
        'v.hcl:7: job "v" group "g" task "a" lifecycle.hook: lifecycle hook must be one of prestart, poststart, '
        'poststop, got "prerun"',
        'v.hcl:12: job "v" group "g" task "b" leader: only one task of a group may be the leader',
        'v.hcl:15: job "v" group "g" task "b" lifecycle.sidecar: a poststop task cannot be a sidecar',
    ]


def test_kill_signal_must_be_a_signal():
    assert only(group("", task='      kill_signal = "SIGFOO"')) == \
        'job "v" group "g" task "t" kill_signal: unknown signal "SIGFOO"; use a name such as "SIGTERM" or "SIGINT"'


def test_network_mode():
    assert only(group('network {\n mode = "cni/calico"\n }')) == \
        'job "v" group "g" network.mode: CNI networks are not supported "cni/calico"; use one of host, bridge, none, overlay'


def test_overlay_network_names():
    assert only(group('network {\n mode = "bridge"\n name = "front"\n }')) == \
        'job "v" group "g" network.name: name "front" names an overlay network: it needs mode = "overlay"'
    assert only(group('network {\n mode = "overlay"\n name = "front end"\n }')).startswith(
        'job "v" group "g" network.name: overlay network name "front end": letters, digits')
    job = load_job_text(group('network {\n mode = "overlay"\n name = "front-end.v1"\n }'), "v.hcl").job
    assert job.groups[0].networks[0].name == "front-end.v1"


def test_groups_without_a_mode_are_bridged_when_their_tasks_can_join_a_namespace():
    from shoal.jobs.model import Network, Task, TaskGroup
    from shoal.jobs.network import group_network

    def g(*drivers: str, mode: str = "", name: str = "") -> TaskGroup:
        return TaskGroup(name="g", tasks=[Task(name=f"t{i}", driver=d) for i, d in enumerate(drivers)],
                         networks=[Network(mode=mode, name=name)] if mode or name else [])

    assert group_network(g("docker")) == ("bridge", "default")
    assert group_network(g("raw_exec", "exec")) == ("bridge", "default")
    assert group_network(g("raw_exec")) == ("host", "")
    assert group_network(g("docker", mode="host")) == ("host", "")
    assert group_network(g("docker", mode="none")) == ("none", "")
    assert group_network(g("docker", mode="overlay")) == ("overlay", "default")
    assert group_network(g("docker", mode="overlay", name="a")) == ("overlay", "a")


def test_jobs_built_in_code_validate_too():
    job = Job(
        id="api",
        name="api",
        groups=[
            TaskGroup(
                name="g",
                networks=[Network(ports=[Port("http")])],
                services=[Service(name="api", port="http")],
                tasks=[Task(name="t", driver="container", config={"image": "busybox"}, resources=Resources(cpu=10))],
            )
        ],
    )
    assert validate_job(job) == []
