"""The service and check blocks' address_mode, canary_tags and check_restart: decoded, merged as Nomad
merges them, validated, and refused with the file, the line and the field."""

from __future__ import annotations

import pytest

from shoal.errors import JobFileError
from shoal.jobs.loader import load_job_text
from shoal.jobs.model import Check, CheckRestart, Job, Network, Port, Service, Task, TaskGroup
from shoal.jobs.validate import validate_job


def job_text(service: str, driver: str = "exec", network: str = "",
             ports: str = '      port "http" { to = 8080 }\n') -> str:
    return (
        'job "v" {\n'  # 1
        '  group "g" {\n'  # 2
        "    network {\n"  # 3
        f"{network}"
        f"{ports}"
        "    }\n"
        f"{service}"
        '    task "t" {\n'
        f'      driver = "{driver}"\n'
        '      config { command = "x" }\n'
        "    }\n"
        "  }\n"
        "}\n"
    )


def load(text: str):
    return load_job_text(text, "v.hcl")


def problems(text: str) -> list[str]:
    with pytest.raises(JobFileError) as e:
        load(text)
    return [str(p) for p in e.value.problems]


SERVICE = '    service {{\n      name = "web"\n      port = "http"\n{body}    }}\n'


def service(body: str) -> str:
    return SERVICE.format(body=body)


# -- address_mode and canary_tags --


@pytest.mark.parametrize("mode", ["auto", "host", "alloc"])
def test_address_modes_are_kept(mode: str):
    s = load(job_text(service(f'      address_mode = "{mode}"\n'))).job.groups[0].services[0]
    assert s.address_mode == mode


def test_address_mode_defaults_to_auto_and_canary_tags_are_kept():
    s = load(job_text(service('      tags = ["v2"]\n      canary_tags = ["canary", "v2"]\n'))).job.groups[0].services[0]
    assert (s.address_mode, s.tags, s.canary_tags) == ("auto", ["v2"], ["canary", "v2"])


def test_address_mode_driver_is_refused_with_a_way_out():
    assert problems(job_text(service('      address_mode = "driver"\n'))) == [
        'v.hcl:9: job "v" group "g" service[0].address_mode: address_mode "driver" is not supported: shoal\'s '
        'drivers have no addresses of their own; use "alloc" for the allocation\'s address (bridge and overlay '
        "networks)"
    ]


def test_unknown_address_mode():
    assert problems(job_text(service('      address_mode = "public"\n'))) == [
        'v.hcl:9: job "v" group "g" service[0].address_mode: unknown address_mode "public"; use one of auto, '
        "host, alloc"
    ]


def test_alloc_needs_a_bridge_or_overlay_network():
    alloc = service('      address_mode = "alloc"\n')
    assert problems(job_text(alloc, driver="raw_exec")) == [
        'v.hcl:9: job "v" group "g" service[0].address_mode: address_mode "alloc" needs an allocation address, '
        "which only bridge and overlay networks give: the group is on the host's network (no network mode, and "
        'no container or exec task); set network { mode = "bridge" } or use address_mode = "host"'
    ]
    portless = '    service {\n      name = "web"\n      address_mode = "alloc"\n    }\n'
    for mode in ("host", "none"):
        assert problems(job_text(portless, network=f'      mode = "{mode}"\n', ports="")) == [
            'v.hcl:8: job "v" group "g" service[0].address_mode: address_mode "alloc" needs an allocation '
            f'address, which only bridge and overlay networks give: the group\'s network mode is "{mode}"; set '
            'network { mode = "bridge" } or use address_mode = "host"']
    for mode in ("bridge", "overlay"):
        assert load(job_text(alloc, driver="raw_exec", network=f'      mode = "{mode}"\n')).job
    assert load(job_text(alloc, driver="exec")).job  # exec tasks are bridged by default


def test_a_custom_service_address_is_still_refused():
    (msg,) = problems(job_text(service('      address = "10.0.0.1"\n')))
    assert msg == ('v.hcl:9: job "v" group "g" service[0].address: not supported: a service advertises the address '
                   'its address_mode gives ("auto", "host" or "alloc")')


# -- check_restart --

CHECKS = (
    "      check_restart {\n"  # 9
    "        limit = 3\n"  # 10
    '        grace = "90s"\n'  # 11
    "      }\n"
    "      check {\n"  # 13
    '        type = "tcp"\n'
    "      }\n"
    "      check {\n"  # 16
    '        type = "tcp"\n'
    "        check_restart {\n"
    "          limit = 1\n"
    "          ignore_warnings = true\n"
    "        }\n"
    "      }\n"
    "      check {\n"
    '        type = "tcp"\n'
    '        check_restart { grace = "5s" }\n'
    "      }\n"
)


def test_check_restart_of_the_service_is_merged_into_each_check_the_checks_fields_winning():
    (s,) = load(job_text(service(CHECKS))).job.groups[0].services
    assert [c.check_restart for c in s.checks] == [
        CheckRestart(limit=3, grace=90.0, ignore_warnings=False),
        CheckRestart(limit=1, grace=90.0, ignore_warnings=True),
        CheckRestart(limit=3, grace=5.0, ignore_warnings=False),
    ]


def test_check_restart_defaults_follow_nomad_and_checks_without_one_have_none():
    body = ('      check {\n        type = "tcp"\n        check_restart { limit = 2 }\n      }\n'
            '      check {\n        type = "tcp"\n      }\n')
    (s,) = load(job_text(service(body))).job.groups[0].services
    assert [c.check_restart for c in s.checks] == [CheckRestart(limit=2, grace=1.0, ignore_warnings=False), None]


def test_check_restart_values_are_checked_where_they_are_written():
    text = job_text(service(CHECKS.replace("limit = 3", "limit = -1").replace('grace = "5s"', 'grace = "-5s"')))
    assert problems(text) == [
        'v.hcl:10: job "v" group "g" service[0].check_restart.limit: limit must be 0 or more (0 never restarts '
        "the task), got -1",
        'v.hcl:25: job "v" group "g" service[0].check[2].check_restart.grace: grace must not be negative',
    ]


def test_check_restart_mistakes_name_the_field():
    body = ('      check_restart {\n        limt = 2\n      }\n'
            '      check {\n        type = "tcp"\n        check_restart {\n          grace = 30\n'
            '          ignore_warnings = "maybe"\n        }\n      }\n'
            '      check {\n        type = "tcp"\n        check_restart = { limit = 1 }\n      }\n')
    assert problems(job_text(service(body))) == [
        'v.hcl:10: job "v" group "g" service[0].check_restart.limt: unknown attribute in a check_restart block; '
        'did you mean "limit"?',
        'v.hcl:15: job "v" group "g" service[0].check[0].check_restart.grace: expected a duration such as "30s", '
        '"1m30s" or "500ms", got 30',
        'v.hcl:16: job "v" group "g" service[0].check[0].check_restart.ignore_warnings: expected true or false, '
        'got "maybe"',
        'v.hcl:21: job "v" group "g" service[0].check[1].check_restart: check_restart is a block, not an '
        "attribute: write check_restart { ... }",
    ]


def test_check_restart_on_a_service_without_checks_is_a_warning():
    loaded = load(job_text(service("      check_restart {\n        limit = 2\n      }\n")))
    assert loaded.warnings == [
        'v.hcl:9: job "v" group "g" service[0].check_restart: check_restart has no effect: the service has no checks'
    ]


def test_jobs_built_in_code_are_validated_without_lines():
    check = Check(type="tcp", port="http", check_restart=CheckRestart(limit=-2, grace=-1.0))
    job = Job(id="v", name="v", groups=[TaskGroup(
        name="g", networks=[Network(ports=[Port("http")])],
        services=[Service(name="web", address_mode="driver", checks=[check])],
        tasks=[Task(name="t", driver="raw_exec", config={"command": "x"})])])
    assert [(p.line, p.field, p.message.split(":")[0]) for p in validate_job(job, filename="api")] == [
        (None, 'job "v" group "g" service[0].address_mode', 'address_mode "driver" is not supported'),
        (None, 'job "v" group "g" service[0].check[0].check_restart.limit', "limit must be 0 or more (0 never "
                                                                            "restarts the task), got -2"),
        (None, 'job "v" group "g" service[0].check[0].check_restart.grace', "grace must not be negative"),
    ]


# -- a numeric port --


def test_a_numeric_service_port_is_advertised_as_it_is():
    text = job_text('    service {\n      name = "metrics"\n      port = "9100"\n    }\n')
    assert load(text).job.groups[0].services[0].port == "9100"


@pytest.mark.parametrize(("body", "says"), [
    ('      port = "70000"\n', "port 70000 is not 1-65535"),
    ('      port = "9100"\n      address_mode = "host"\n', 'address_mode "host" advertises a host port'),
])
def test_a_numeric_port_out_of_range_or_with_host_mode_is_refused(body: str, says: str):
    text = job_text(f'    service {{\n      name = "metrics"\n{body}    }}\n')
    (problem,) = problems(text)
    assert "v.hcl:" in problem and "port" in problem and says in problem
