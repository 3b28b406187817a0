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
    kind: str  # "string" | "strings" | "bool" | "count" (a whole number >= 0) | "abs_path" | "block"
    required: bool = False
    help: str = ""


_CONTAINER = {
    "image": Option("string", True, 'the image to run, e.g. "busybox:latest"'),
    "command": Option("string", help="the program to run (replaces the image's Cmd)"),
    "args": Option("strings", help="arguments to the command"),
    "entrypoint": Option("strings", help="replaces the image's Entrypoint"),
    "work_dir": Option("abs_path", help="the working directory inside the container"),
    "volumes": Option("strings", help='bind mounts "HOST:CONTAINER[:ro]"; a relative HOST path is in the '
                                      "allocation's directory, an absolute one must be allowed by the agent"),
    "readonly_rootfs": Option("bool", help="mount the image read-only"),
    "pids_limit": Option("count", help="most processes the container may run; 0 = no limit"),
    "auth": Option("block", help="registry credentials: auth { username = ... password = ... }"),
    "force_pull": Option("bool", help="pull the image even when the local store has it"),
    "cpu_hard_limit": Option("bool", help="cap the task at resources.cpu (a CFS quota), not only a share"),
    "cap_drop": Option("strings", help='capabilities to remove from Docker\'s default set, e.g. ["NET_RAW"]'),
}
_EXEC = {
    "command": Option("string", True, "the program to run"),
    "args": Option("strings", help="arguments to the command"),
    "pids_limit": Option("count", help="most processes the task may run; 0 = no limit"),
    "cpu_hard_limit": Option("bool", help="cap the task at resources.cpu (a CFS quota), not only a share"),
    "cap_drop": Option("strings", help="capabilities to remove from Docker's default set"),
}
_RAW_EXEC = {
    "command": Option("string", True, "the program to run"),
    "args": Option("strings", help="arguments to the command"),
}

OPTIONS: dict[str, dict[str, Option]] = {
    "container": _CONTAINER,
    "docker": _CONTAINER,
    "exec": _EXEC,
    "raw_exec": _RAW_EXEC,
}

_MOUNTS = 'data would not be kept: use volumes = ["HOST:CONTAINER[:ro]"]'
_NETWORK = 'networking is set by the group: network { mode = ... port "LABEL" { ... } }'

# Docker options shoal refuses, because running without them would change what the task
# can do or keep (security, data, host namespaces), with the reason.
DOCKER_UNSUPPORTED: dict[str, str] = {
    "port_map": 'port_map is Nomad\'s deprecated form: declare network { port "LABEL" { to = PORT } } '
    'in the group and list the label in ports = ["LABEL"]',
    "mount": _MOUNTS,
    "mounts": _MOUNTS,
    "volume_driver": "shoal has no volume drivers; " + _MOUNTS,
    "privileged": "shoal runs no privileged containers",
    "cap_add": "shoal does not add capabilities beyond Docker's default set",
    "devices": "shoal passes no devices into containers",
    "security_opt": "shoal has no per-task security options",
    "sysctl": "shoal sets no per-task sysctls",
    "ipc_mode": "shoal has no IPC namespace modes",
    "pid_mode": "shoal has no PID namespace modes",
    "uts_mode": "shoal has no UTS namespace modes",
    "userns_mode": "shoal has no user namespace modes",
    "runtime": "shoal runs every container with runc",
}
# network_mode: these values match what a shoal container gets (its own namespace); others are refused.
NETWORK_MODES_OK = ("bridge", "default", "none")

# Options shoal cannot honour but a task runs fine without: accepted with a warning each.
_PORTS = ("every port of the group's network block is published, whether the task lists it or not "
          "(bridge and overlay modes: host port -> the allocation's address; host mode: the task binds it)")
_DOCKER_WARN = {
    "ports": _PORTS,
    "auth_soft_fail": "a failed registry login fails the pull",
    "network_mode": "the group's network { mode = ... } decides the container's network",
    "network_aliases": _NETWORK,
    "ipv4_address": _NETWORK,
    "ipv6_address": _NETWORK,
    "dns_servers": "containers use the image's /etc/resolv.conf",
    "dns_search_domains": "containers use the image's /etc/resolv.conf",
    "dns_options": "containers use the image's /etc/resolv.conf",
    "extra_hosts": "containers use the image's /etc/hosts",
    "hostname": "the container's hostname is the task's name",
    "mac_address": _NETWORK,
    "labels": "shoal puts no labels on containers",
    "logging": "shoal keeps task logs itself (see the task's logs block); there are no logging drivers",
    "image_pull_timeout": "pulls time out per request (30s without progress)",
    "load": "import archives with `shoal image import FILE` on the node",
    "interactive": "tasks have no stdin (use shoal alloc exec -t)",
    "tty": "tasks have no TTY (use shoal alloc exec -t)",
    "shm_size": "every container gets a 64 MB /dev/shm",
    "ulimit": "containers get the agent's open-files limit",
    "storage_opt": "shoal has no storage options",
    "cpuset_cpus": "shoal does not pin CPUs",
    "isolation": "shoal has no isolation modes",
    "oom_score_adj": "shoal leaves the OOM score as is",
    "memory_hard_limit": "the hard limit is resources.memory_max",
    "init": "the command runs as the container's pid 1",
}
HARMLESS: dict[str, dict[str, str]] = {
    "docker": _DOCKER_WARN,
    "container": _DOCKER_WARN,
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
        if key == "network_mode" and driver in ("docker", "container") and value not in NETWORK_MODES_OK:
            out.append(ConfigFinding(key, f"not supported by the {driver} driver: network_mode = {_show(value)}; "
                                          "set the group's network { mode = ... } instead; " + _NETWORK))
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
    if kind == "block":
        block = value[0] if isinstance(value, list) and len(value) == 1 else value
        if not isinstance(block, dict) or not all(isinstance(v, (str, int, float, bool)) for v in block.values()):
            return f"expected a block of settings, got {_show(value)}"
        return ""
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
