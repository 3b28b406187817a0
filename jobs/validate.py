"""Semantic validation of a Job: what Nomad's ``Job.Validate`` checks, plus what shoal cannot run.

Pure: takes a Job (and, when it came from a file, the ``SourceMap`` of where
each field was written) and returns every problem found, each naming the line
and the field. Jobs submitted without a file validate the same way, with no
lines.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field

from shoal.errors import Problem
from shoal.ids import ALL_NAMESPACES
from shoal.jobs.model import (
    ADDRESS_MODES,
    CONSTRAINT_OPERATORS,
    DRIVERS,
    JOB_TYPES,
    Affinity,
    Check,
    CheckRestart,
    Constraint,
    Job,
    ReschedulePolicy,
    RestartPolicy,
    Service,
    Spread,
    Task,
    TaskGroup,
)
from shoal.jobs.network import MODE_BRIDGE, MODE_OVERLAY, NETWORK_MODES, group_network, valid_network_name
from shoal.jobs.paths import FieldPath, Seg, SourceMap, child, render
from shoal.jobs.taskconfig import check_config

MAX_ID = 128
LIFECYCLE_HOOKS = ("prestart", "poststart", "poststop")
CHECK_TYPES = ("tcp", "http", "script")
DELAY_FUNCTIONS = ("constant", "exponential", "fibonacci")
RESTART_MODES = ("fail", "delay")
MIN_RESTART_INTERVAL = 5.0  # seconds, as Nomad
VALUE_OPTIONAL = ("distinct_hosts", "distinct_property", "is_set", "is_not_set")
AFFINITY_OPERATORS = tuple(o for o in CONSTRAINT_OPERATORS if o not in VALUE_OPTIONAL)
SIGNALS = frozenset(s.name for s in signal.Signals)

_PORT_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")
_SERVICE_NAME = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]")


_NO_SOURCE = SourceMap()  # a job that came without a file: no lines (the validator only reads it)


@dataclass(slots=True)
class Findings:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def validate_job(job: Job, source: SourceMap | None = None, filename: str = "") -> list[Problem]:
    """Every problem with ``job`` (empty if it is valid)."""
    return check_job(job, source, filename).problems


def check_job(job: Job, source: SourceMap | None = None, filename: str = "") -> Findings:
    """Problems, and warnings about settings that have no effect on shoal."""
    v = _Validator(source or _NO_SOURCE, filename)
    v.job(job)
    return v.out


def _text(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class _Validator:
    def __init__(self, source: SourceMap, filename: str):
        self.source = source
        self.filename = filename
        self.out = Findings()

    def bad(self, path: FieldPath, message: str, occurrence: int = 0) -> None:
        self.out.problems.append(Problem(self.filename, self.source.line(path, occurrence), render(path), message))

    def warn(self, path: FieldPath, message: str) -> None:
        self.out.warnings.append(Problem(self.filename, self.source.line(path), render(path), message))

    # -- job --

    def job(self, job: Job) -> None:
        path: FieldPath = (Seg("job", job.id),)
        self.identifier(path, job.id, "job id")
        if not job.name.strip() and job.id.strip():
            self.bad(child(path, "name"), "the job name must not be empty")
        if job.type not in JOB_TYPES:
            self.bad(child(path, "type"), f"unknown job type {_text(job.type)}; use one of {', '.join(JOB_TYPES)}")
        if not 1 <= job.priority <= 100:
            self.bad(child(path, "priority"), f"priority must be between 1 and 100, got {job.priority}")
        for name in ("namespace", "region", "node_pool"):
            value = getattr(job, name)
            if not value or value != value.strip() or _CONTROL.search(value) or " " in value:
                self.bad(child(path, name), f"{name} must be a non-empty name without spaces, got {_text(value)}")
        if job.namespace == ALL_NAMESPACES:
            self.bad(child(path, "namespace"), 'namespace "*" means every namespace; a job belongs to one')
        if not job.datacenters:
            self.bad(child(path, "datacenters"), 'datacenters must list at least one datacenter (["*"] means all)')
        for dc in job.datacenters:
            if not dc.strip():
                self.bad(child(path, "datacenters"), "datacenter names must not be empty")
        self.constraints(path, job.constraints)
        self.affinities(path, job.affinities)
        self.spreads(path, job.spreads)
        if not job.groups:
            self.bad(path, 'a job needs at least one group: group "NAME" { task "NAME" { ... } }')
        seen: dict[str, int] = {}
        for g in job.groups:
            gpath = child(path, "group", g.name)
            n = seen.get(g.name, 0)
            seen[g.name] = n + 1
            if n:
                self.bad(gpath, f"duplicate group name {_text(g.name)}: group names must be unique in a job", n)
                continue
            self.group(job, g, gpath)

    def identifier(self, path: FieldPath, value: str, what: str) -> None:
        if not value.strip():
            self.bad(path, f"the {what} must not be empty")
        elif len(value) > MAX_ID:
            self.bad(path, f"the {what} is too long ({len(value)} characters; at most {MAX_ID})")
        elif _SPACE_OR_CONTROL.search(value):
            self.bad(path, f"the {what} {_text(value)} must not contain spaces or control characters")

    # -- group --

    def group(self, job: Job, g: TaskGroup, path: FieldPath) -> None:
        self.name(path, g.name, "group")
        if g.count < 0:
            self.bad(child(path, "count"), f"count must be 0 or more, got {g.count}")
        if job.type in ("system", "sysbatch") and g.count > 1:
            self.bad(child(path, "count"),
                     f"a {job.type} job runs one allocation per node: count cannot exceed 1 (got {g.count})")
        if job.type in ("system", "sysbatch") and g.reschedule is not None and g.reschedule.attempts > 0:
            self.bad(child(path, "reschedule"), f"{job.type} jobs are not rescheduled; remove the reschedule block")
        self.constraints(path, g.constraints)
        self.affinities(path, g.affinities)
        self.spreads(path, g.spreads)
        if g.restart is not None:
            self.restart(child(path, "restart"), g.restart)
        if g.reschedule is not None:
            self.reschedule(child(path, "reschedule"), g.reschedule)
        if g.ephemeral_disk <= 0:
            self.bad(child(child(path, "ephemeral_disk"), "size"), f"size must be more than 0 MB, got {g.ephemeral_disk}")
        labels = self.networks(path, g)
        for i, s in enumerate(g.services):
            self.service(child(path, "service", index=i), s, labels, g, group_level=True)
        if not g.tasks:
            self.bad(path, 'a group needs at least one task: task "NAME" { driver = ... }')
        seen: dict[str, int] = {}
        leaders = 0
        for t in g.tasks:
            tpath = child(path, "task", t.name)
            n = seen.get(t.name, 0)
            seen[t.name] = n + 1
            if n:
                self.bad(tpath, f"duplicate task name {_text(t.name)}: task names must be unique in a group", n)
                continue
            if t.leader:
                leaders += 1
                if leaders == 2:
                    self.bad(child(tpath, "leader"), "only one task of a group may be the leader")
            self.task(g, t, tpath, labels)

    def name(self, path: FieldPath, value: str, what: str) -> None:
        if not value.strip():
            self.bad(path, f"the {what} name must not be empty")
        elif "/" in value or "\\" in value or _CONTROL.search(value):
            self.bad(path, f"the {what} name {_text(value)} must not contain slashes or control characters")
        elif len(value) > MAX_ID:
            self.bad(path, f"the {what} name is too long ({len(value)} characters; at most {MAX_ID})")

    def networks(self, path: FieldPath, g: TaskGroup) -> set[str]:
        labels: set[str] = set()
        if len(g.networks) > 1:
            self.bad(child(path, "network"), "only one network block is allowed per group")
        statics: dict[int, str] = {}
        seen: dict[str, int] = {}
        for n in g.networks:
            npath = child(path, "network")
            if n.mode and n.mode not in NETWORK_MODES:
                why = "CNI networks are not supported" if n.mode.startswith("cni/") else "unknown network mode"
                self.bad(child(npath, "mode"), f"{why} {_text(n.mode)}; use one of {', '.join(NETWORK_MODES)}")
            if n.name and n.mode != MODE_OVERLAY:
                self.bad(child(npath, "name"), f'name {_text(n.name)} names an overlay network: it needs mode = "overlay"')
            elif n.name and not valid_network_name(n.name):
                self.bad(child(npath, "name"), f"overlay network name {_text(n.name)}: letters, digits, '.', '_' and "
                                               "'-' only (at most 64, starting with a letter or digit)")
            for p in n.ports:
                ppath = child(npath, "port", p.label)
                n_seen = seen.get(p.label, 0)
                seen[p.label] = n_seen + 1
                if n_seen:
                    self.bad(ppath, f"duplicate port label {_text(p.label)}: port labels must be unique in a group", n_seen)
                    continue
                labels.add(p.label)
                if not _PORT_LABEL.match(p.label):
                    self.bad(ppath, f"port label {_text(p.label)} may hold only letters, digits, _ and -")
                for name in ("static", "to"):
                    value = getattr(p, name)
                    if not 0 <= value <= 65535:
                        self.bad(child(ppath, name), f"{name} must be a port number from 1 to 65535, got {value}")
                if p.static:
                    if p.static in statics:
                        self.bad(child(ppath, "static"),
                                 f"static port {p.static} is already taken by port {_text(statics[p.static])}")
                    statics[p.static] = p.label
                if n.mode == "none" and (p.static or p.to):
                    self.bad(ppath, 'ports need a network: mode "none" has none')
        return labels

    # -- task --

    def task(self, g: TaskGroup, t: Task, path: FieldPath, labels: set[str]) -> None:
        self.name(path, t.name, "task")
        # Paths are built only for what is reported: every job submitted passes through here.
        if not t.driver:
            self.bad(child(path, "driver"),
                     f'the task needs a driver: driver = "container" (shoal runs {", ".join(DRIVERS)})')
        elif t.driver not in DRIVERS:
            self.bad(child(path, "driver"),
                     f"unsupported driver {_text(t.driver)}: shoal runs {', '.join(_text(d) for d in DRIVERS)}")
        else:
            for f in check_config(t.driver, t.config):
                cpath = child(path, "config")
                (self.warn if f.warning else self.bad)(child(cpath, f.key) if f.key else cpath, f.message)
            ports = t.config.get("ports") if t.driver in ("docker", "container") else None
            if isinstance(ports, list):
                for label in ports:
                    if isinstance(label, str) and label not in labels:
                        self.bad(child(child(path, "config"), "ports"), self.no_port(label, labels))
        r = t.resources
        if r.cpu <= 0:
            self.bad(child(child(path, "resources"), "cpu"), f"cpu must be more than 0 MHz, got {r.cpu}")
        if r.memory <= 0:
            self.bad(child(child(path, "resources"), "memory"), f"memory must be more than 0 MB, got {r.memory}")
        if r.memory_max and r.memory_max < r.memory:
            self.bad(child(child(path, "resources"), "memory_max"),
                     f"memory_max ({r.memory_max} MB) must be at least memory ({r.memory} MB), or 0 for no limit above it")
        if t.kill_timeout < 0:
            self.bad(child(path, "kill_timeout"), "kill_timeout must not be negative")
        if t.kill_signal not in SIGNALS:
            self.bad(child(path, "kill_signal"), f"unknown signal {_text(t.kill_signal)}; use a name such as \"SIGTERM\" or \"SIGINT\"")
        for key in t.env:
            if not key or "=" in key or "\x00" in key:
                self.bad(child(path, "env"), f"invalid environment variable name {_text(key)}")
        if t.lifecycle is not None:
            lpath = child(path, "lifecycle")
            if t.lifecycle.hook not in LIFECYCLE_HOOKS:
                self.bad(child(lpath, "hook"),
                         f"lifecycle hook must be one of {', '.join(LIFECYCLE_HOOKS)}, got {_text(t.lifecycle.hook)}")
            elif t.lifecycle.sidecar and t.lifecycle.hook == "poststop":
                self.bad(child(lpath, "sidecar"), "a poststop task cannot be a sidecar")
        if t.restart is not None:
            self.restart(child(path, "restart"), t.restart)
        self.constraints(path, t.constraints)
        self.affinities(path, t.affinities)
        for i, s in enumerate(t.services):
            self.service(child(path, "service", index=i), s, labels, g, group_level=False)

    # -- services and checks --

    def no_port(self, label: str, labels: set[str]) -> str:
        have = ", ".join(_text(x) for x in sorted(labels)) if labels else "none"
        hint = ""
        if label.isdigit():
            hint = f'; numeric ports are not supported: declare port "NAME" {{ to = {label} }} and use its label'
        return f"no port labelled {_text(label)} in the group's network (ports: {have}){hint}"

    def service(self, path: FieldPath, s: Service, labels: set[str], g: TaskGroup, group_level: bool) -> None:
        if not s.name:
            self.bad(child(path, "name"), "the service needs a name")
        elif "${" not in s.name and not _SERVICE_NAME.match(s.name):
            self.bad(child(path, "name"), f"service name {_text(s.name)} must be 1-63 letters, digits and dashes, "
                     "starting and ending with a letter or digit")
        if s.port.isdigit():  # a number is advertised as it is: the allocation's own port
            if not 1 <= int(s.port) <= 65535:
                self.bad(child(path, "port"), f"port {s.port} is not 1-65535")
            elif s.address_mode == "host":
                self.bad(child(path, "port"), f'address_mode "host" advertises a host port: port must name one of '
                                              f'the group\'s network ports, not the number {s.port}')
        elif s.port and s.port not in labels:
            self.bad(child(path, "port"), self.no_port(s.port, labels))
        self.address_mode(child(path, "address_mode"), s.address_mode, g)
        for j, c in enumerate(s.checks):
            self.check(child(path, "check", index=j), c, s, labels, g, group_level)
            if c.check_restart is not None:
                self.check_restart(path, child(path, "check", index=j), c.check_restart)

    def address_mode(self, path: FieldPath, mode: str, g: TaskGroup) -> None:
        if mode == "driver":
            self.bad(path, 'address_mode "driver" is not supported: shoal\'s drivers have no addresses of their own; '
                           'use "alloc" for the allocation\'s address (bridge and overlay networks)')
        elif mode not in ADDRESS_MODES:
            self.bad(path, f"unknown address_mode {_text(mode)}; use one of {', '.join(ADDRESS_MODES)}")
        elif mode == "alloc":
            net, _ = group_network(g)
            if net in NETWORK_MODES and net not in (MODE_BRIDGE, MODE_OVERLAY):
                why = (f"the group's network mode is {_text(net)}" if g.networks and g.networks[0].mode else
                       "the group is on the host's network (no network mode, and no container or exec task)")
                self.bad(path, f'address_mode "alloc" needs an allocation address, which only bridge and overlay '
                               f'networks give: {why}; set network {{ mode = "bridge" }} or use address_mode = "host"')

    def check_restart(self, spath: FieldPath, cpath: FieldPath, cr: CheckRestart) -> None:
        """A check's check_restart (the service's merged with its own): a problem names where the value
        was written, the check's block, else the service's."""

        def where(name: str) -> FieldPath:
            own = child(child(cpath, "check_restart"), name)
            inherited = child(child(spath, "check_restart"), name)
            return inherited if own not in self.source.lines and inherited in self.source.lines else own

        if cr.limit < 0:
            self.bad(where("limit"), f"limit must be 0 or more (0 never restarts the task), got {cr.limit}")
        if cr.grace < 0:
            self.bad(where("grace"), "grace must not be negative")

    def check(self, path: FieldPath, c: Check, s: Service, labels: set[str], g: TaskGroup, group_level: bool) -> None:
        if c.type not in CHECK_TYPES:
            why = "not supported" if c.type == "grpc" else "unknown"
            self.bad(child(path, "type"), f"{why} check type {_text(c.type)}; use one of {', '.join(CHECK_TYPES)}")
            return
        if c.interval <= 0:
            self.bad(child(path, "interval"), "interval must be more than 0s")
        if c.timeout <= 0:
            self.bad(child(path, "timeout"), "timeout must be more than 0s")
        if c.type in ("tcp", "http"):
            if c.port and c.port not in labels:
                self.bad(child(path, "port"), self.no_port(c.port, labels))
            elif not c.port and not s.port:
                self.bad(path, f"a {c.type} check needs a port: set port on the check or on the service")
            if c.command or c.args:
                self.bad(child(path, "command"), f"command and args belong to script checks, not {c.type} checks")
        if c.type == "http" and not c.path:
            self.bad(child(path, "path"), 'an http check needs a path, e.g. path = "/health"')
        if c.type == "script":
            if not c.command:
                self.bad(child(path, "command"), "a script check needs a command")
            if group_level and not c.task:
                self.bad(child(path, "task"), "a script check in a group service must name the task to run in: task = \"NAME\"")
            if c.task and c.task not in {t.name for t in g.tasks}:
                self.bad(child(path, "task"), f"no task named {_text(c.task)} in the group")
            if c.task and not group_level:
                self.bad(child(path, "task"), "task is only for checks of group services (a task's checks run in that task)")
        elif c.task:
            self.bad(child(path, "task"), "task is only for script checks")

    # -- placement --

    def constraints(self, path: FieldPath, items: list[Constraint]) -> None:
        for i, c in enumerate(items):
            cpath = child(path, "constraint", index=i)
            if c.operator not in CONSTRAINT_OPERATORS:
                self.bad(child(cpath, "operator"),
                         f"unknown constraint operator {_text(c.operator)}; use one of {', '.join(CONSTRAINT_OPERATORS)}")
                continue
            self.placement(cpath, c.attribute, c.operator, c.value)

    def placement(self, path: FieldPath, attribute: str, operator: str, value: str) -> None:
        if not attribute and operator != "distinct_hosts":
            self.bad(child(path, "attribute"), f'operator {_text(operator)} needs an attribute, e.g. "${{attr.kernel.name}}"')
        if operator not in VALUE_OPTIONAL and value == "":
            self.bad(child(path, "value"), f"operator {_text(operator)} needs a value")
        if operator == "regexp" and value:
            try:
                re.compile(value)
            except re.error as e:
                self.bad(child(path, "value"), f"invalid regular expression {_text(value)}: {e}")
        if operator == "distinct_hosts" and value not in ("", "true", "false"):
            self.bad(child(path, "value"), f"distinct_hosts takes true or false, got {_text(value)}")

    def affinities(self, path: FieldPath, items: list[Affinity]) -> None:
        for i, a in enumerate(items):
            apath = child(path, "affinity", index=i)
            if a.operator not in AFFINITY_OPERATORS:
                self.bad(child(apath, "operator"),
                         f"operator {_text(a.operator)} cannot be used in an affinity; use one of {', '.join(AFFINITY_OPERATORS)}")
            else:
                self.placement(apath, a.attribute, a.operator, a.value)
            if not -100 <= a.weight <= 100 or a.weight == 0:
                self.bad(child(apath, "weight"), f"affinity weight must be from -100 to 100 and not 0, got {a.weight}")

    def spreads(self, path: FieldPath, items: list[Spread]) -> None:
        for i, s in enumerate(items):
            spath = child(path, "spread", index=i)
            if not s.attribute:
                self.bad(child(spath, "attribute"), 'a spread needs an attribute, e.g. "${node.datacenter}"')
            if not 0 < s.weight <= 100:
                self.bad(child(spath, "weight"), f"spread weight must be from 1 to 100, got {s.weight}")
            total = 0
            seen: set[str] = set()
            for t in s.targets:
                tpath = child(spath, "target", t.value)
                if t.value in seen:
                    self.bad(tpath, f"duplicate spread target {_text(t.value)}", 1)
                seen.add(t.value)
                if not 0 <= t.percent <= 100:
                    self.bad(child(tpath, "percent"), f"percent must be from 0 to 100, got {t.percent}")
                total += t.percent
            if total > 100:
                self.bad(spath, f"spread target percentages add up to {total}, more than 100")

    # -- policies --

    def restart(self, path: FieldPath, r: RestartPolicy) -> None:
        if r.mode not in RESTART_MODES:
            self.bad(child(path, "mode"), f"restart mode must be \"fail\" or \"delay\", got {_text(r.mode)}")
        if r.attempts < 0:
            self.bad(child(path, "attempts"), f"attempts must be 0 or more, got {r.attempts}")
        if r.delay < 0:
            self.bad(child(path, "delay"), "delay must not be negative")
        if r.interval < MIN_RESTART_INTERVAL:
            self.bad(child(path, "interval"), f"interval must be at least 5s, got {r.interval:g}s")
        elif r.attempts * r.delay > r.interval:
            self.bad(path, f"{r.attempts} restarts {r.delay:g}s apart cannot fit in an interval of {r.interval:g}s")
        if r.attempts == 0 and r.mode == "delay":
            self.bad(child(path, "mode"), 'mode "delay" with 0 attempts is ambiguous; use mode = "fail" or allow attempts')

    def reschedule(self, path: FieldPath, r: ReschedulePolicy) -> None:
        if r.delay_function not in DELAY_FUNCTIONS:
            self.bad(child(path, "delay_function"),
                     f"delay_function must be one of {', '.join(DELAY_FUNCTIONS)}, got {_text(r.delay_function)}")
        if r.attempts < 0:
            self.bad(child(path, "attempts"), f"attempts must be 0 or more, got {r.attempts}")
        if r.delay < 0:
            self.bad(child(path, "delay"), "delay must not be negative")
        if r.interval < 0:
            self.bad(child(path, "interval"), "interval must not be negative")
        if r.delay_function != "constant" and (r.unlimited or r.attempts > 0) and r.max_delay < r.delay:
            self.bad(child(path, "max_delay"), f"max_delay ({r.max_delay:g}s) must be at least delay ({r.delay:g}s)")
