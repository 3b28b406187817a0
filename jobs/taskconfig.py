"""The ``config`` each task driver understands, so no option is passed on and silently ignored.

``docker`` tasks run on shoal's ``container`` driver: they share its options.
Keep these tables in step with the drivers in ``shoal.agent.drivers``: an
option listed here is one the driver honours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shoal.jobs.hclfuncs import type_name


@dataclass(frozen=True, slots=True)
class Option:
    kind: str  # "string" | "strings" | "bool" | "count" (a whole number >= 0) | "abs_path"
    required: bool = False
    help: str = ""


_CONTAINER = {
    "image": Option("string", True, 'the image to run, e.g. "busybox:latest"'),
    "command": Option("string", help="the program to run (replaces the image's Cmd)"),
    "args": Option("strings", help="arguments to the command"),
    "entrypoint": Option("strings", help="replaces the image's Entrypoint"),
    "work_dir": Option("abs_path", help="the working directory inside the container"),
    "readonly_rootfs": Option("bool", help="mount the image read-only"),
    "pids_limit": Option("count", help="most processes the container may run; 0 = no limit"),
}
_EXEC = {
    "command": Option("string", True, "the program to run"),
    "args": Option("strings", help="arguments to the command"),
}

OPTIONS: dict[str, dict[str, Option]] = {
    "container": _CONTAINER,
    "docker": _CONTAINER,
    "exec": _EXEC,
    "raw_exec": _EXEC,
}

_MOUNTS = "shoal has no volumes or bind mounts"
_NETWORK = 'networking is set by the group: network { mode = ... port "LABEL" { ... } }'

# Docker options shoal refuses, with the reason (anything else unlisted is simply unknown).
DOCKER_UNSUPPORTED: dict[str, str] = {
    "port_map": 'port_map is Nomad\'s deprecated form: declare network { port "LABEL" { to = PORT } } '
    'in the group and list the label in ports = ["LABEL"]',
    "volumes": _MOUNTS,
    "mount": _MOUNTS,
    "mounts": _MOUNTS,
    "volume_driver": _MOUNTS,
    "network_mode": "containers get their own network namespace; " + _NETWORK,
    "network_aliases": _NETWORK,
    "ipv4_address": _NETWORK,
    "ipv6_address": _NETWORK,
    "dns_servers": _NETWORK,
    "dns_search_domains": _NETWORK,
    "dns_options": _NETWORK,
    "extra_hosts": _NETWORK,
    "hostname": _NETWORK,
    "mac_address": _NETWORK,
    "privileged": "shoal runs no privileged containers",
    "cap_add": "shoal does not change container capabilities",
    "cap_drop": "shoal does not change container capabilities",
    "devices": "shoal passes no devices into containers",
    "security_opt": "shoal has no per-task security options",
    "sysctl": "shoal sets no per-task sysctls",
    "ulimit": "shoal sets no per-task ulimits",
    "shm_size": "shoal gives every container the default /dev/shm",
    "ipc_mode": "shoal has no IPC namespace modes",
    "pid_mode": "shoal has no PID namespace modes",
    "uts_mode": "shoal has no UTS namespace modes",
    "userns_mode": "shoal has no user namespace modes",
    "logging": "shoal keeps task logs itself; there are no logging drivers",
    "labels": "shoal puts no labels on containers",
    "auth": "shoal pulls without registry credentials",
    "force_pull": "shoal has no pull policies",
    "image_pull_timeout": "shoal has no pull policies",
    "load": "shoal does not load images from archives",
    "interactive": "tasks have no stdin",
    "tty": "tasks have no TTY",
    "storage_opt": "shoal has no storage options",
    "runtime": "shoal runs every container with runc",
    "cpu_hard_limit": "CPU limits come from resources { cpu }",
    "cpuset_cpus": "shoal does not pin CPUs",
    "isolation": "shoal has no isolation modes",
}

# Options that change nothing on shoal: accepted with a warning.
_PORTS = "every port of the group's network already reaches the task"
HARMLESS: dict[str, dict[str, str]] = {
    "docker": {
        "auth_soft_fail": "images come from the local store, without registry logins",
        "ports": _PORTS,
    },
    "container": {"ports": _PORTS},
}


@dataclass(frozen=True, slots=True)
class ConfigFinding:
    key: str  # the config option ("" for the config as a whole)
    message: str
    warning: bool = False


def check_config(driver: str, config: dict[str, Any]) -> list[ConfigFinding]:
    """What is wrong with (or ignored in) ``config`` for ``driver``; nothing if the driver is unknown."""
    options = OPTIONS.get(driver)
    if options is None:
        return []
    out: list[ConfigFinding] = []
    for key, opt in options.items():
        if opt.required and key not in config:
            out.append(ConfigFinding("", f"the {driver} driver needs config {{ {key} = ... }} ({opt.help})"))
    for key, value in config.items():
        opt = options.get(key)
        if opt is not None:
            msg = _type_problem(opt.kind, value)
            if msg:
                out.append(ConfigFinding(key, msg))
            elif opt.required and opt.kind == "string" and not value.strip():
                out.append(ConfigFinding(key, f"must not be empty ({opt.help})"))
            continue
        harmless = HARMLESS.get(driver, {}).get(key)
        if harmless:
            out.append(ConfigFinding(key, f"ignored: {harmless}", warning=True))
            continue
        known = ", ".join(options)
        reason = DOCKER_UNSUPPORTED.get(key) if driver in ("docker", "container") else None
        if reason:
            out.append(ConfigFinding(key, f"not supported by the {driver} driver: {reason}"))
        else:
            out.append(ConfigFinding(key, f"unknown option for the {driver} driver (it understands {known})"))
    return out


def _type_problem(kind: str, value: Any) -> str:
    if kind in ("string", "abs_path"):
        if not isinstance(value, str):
            return f"expected a string, got {_show(value)}"
        if kind == "abs_path" and value and not value.startswith("/"):
            return f"expected an absolute path inside the container, got {_show(value)}"
        return ""
    if kind == "bool":
        return "" if isinstance(value, bool) else f"expected true or false, got {_show(value)}"
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"expected a whole number, 0 or more, got {_show(value)}"
        return ""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return f"expected a list of strings, got {_show(value)}"
    return ""


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        bad = next((x for x in v if not isinstance(x, str)), None)
        return f"a list holding {_show(bad)}" if bad is not None or None in v else "a list"
    if v is None or isinstance(v, (bool, int, float)):
        return json.dumps(v)
    return f"a {type_name(v)}"
