"""Mapping the format-neutral ``Block`` tree of a job file onto the job model.

Every attribute and block is taken by a decoder below or, when the body is
finished, reported as unsupported (with the reason from ``schema``) or unknown.
Every field decoded is recorded in a ``SourceMap`` so that later checks
(``validate``) can name the line.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from shoal.errors import Problem
from shoal.jobs import schema
from shoal.jobs.body import INVALID, Attribute, Block
from shoal.jobs.convert import (
    ConvertError,
    show,
    to_bool,
    to_duration,
    to_int,
    to_str,
    to_str_list,
    to_str_map,
)
from shoal.jobs.model import (
    Affinity,
    Check,
    CheckRestart,
    Constraint,
    Job,
    Lifecycle,
    LogConfig,
    Network,
    Port,
    Resources,
    RestartPolicy,
    Service,
    Spread,
    SpreadTarget,
    Task,
    TaskGroup,
    default_reschedule,
    default_restart,
)
from shoal.jobs.paths import FieldPath, Seg, SourceMap, child, render
from shoal.jobs.taskconfig import OPTIONS

T = TypeVar("T")

# Shorthand constraint attributes: `distinct_hosts = true` means operator "distinct_hosts".
CONSTRAINT_SHORTHANDS = (
    "distinct_hosts", "distinct_property", "regexp", "version", "semver",
    "set_contains", "set_contains_all", "set_contains_any",
)


@dataclass(slots=True)
class Decoded:
    job: Job
    source: SourceMap
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)  # fields whose value could not be evaluated


def decode_job(block: Block, filename: str, namespace: str = "default") -> Decoded:
    """Decode one ``job`` block; ``namespace`` is the job's when the block names none."""
    d = _Decoder(filename)
    job = d.job(block, namespace)
    return Decoded(job, d.source, d.problems, d.warnings, d.invalid)


class _Decoder:
    def __init__(self, filename: str):
        self.filename = filename
        self.source = SourceMap()
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.invalid: set[str] = set()

    def problem(self, line: int | None, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(self.filename, line, render(path), message))

    def warn(self, line: int | None, path: FieldPath, message: str) -> None:
        self.warnings.append(Problem(self.filename, line, render(path), message))

    # -- job --

    def job(self, blk: Block, namespace: str) -> Job:
        if len(blk.labels) > 1:
            self.problem(blk.line, (Seg("job", blk.labels[0]),), 'a job block takes one label: job "ID" { ... }')
        label = self.label(blk)
        path: FieldPath = (Seg("job", label),)
        self.source.add(path, blk.line)
        b = _Body(self, blk, path)
        job = Job(id=label, name=label, namespace=namespace)
        job.name = b.get("name", to_str, label)
        job.type = b.get("type", to_str, job.type)
        job.priority = b.get("priority", to_int, job.priority)
        job.namespace = b.get("namespace", to_str, job.namespace)
        job.region = b.get("region", to_str, job.region)
        job.node_pool = b.get("node_pool", to_str, job.node_pool)
        job.datacenters = b.get("datacenters", to_str_list, job.datacenters)
        job.meta = b.map("meta")
        job.constraints = [self.constraint(c, p) for c, p in b.blocks("constraint")]
        job.affinities = [self.affinity(c, p) for c, p in b.blocks("affinity")]
        job.spreads = [self.spread(c, p) for c, p in b.blocks("spread")]
        resched = b.single("reschedule")
        job_resched = self.policy_fields(*resched, _RESCHEDULE) if resched else {}
        job.groups = [self.group(g, p, job, job_resched) for g, p in b.blocks("group")]
        b.finish()
        return job

    # -- group --

    def group(self, blk: Block, path: FieldPath, job: Job, job_resched: dict[str, Any]) -> TaskGroup:
        g = TaskGroup(name=self.label(blk))
        b = _Body(self, blk, path)
        g.count = b.get("count", to_int, g.count)
        g.meta = b.map("meta")
        g.constraints = [self.constraint(c, p) for c, p in b.blocks("constraint")]
        g.affinities = [self.affinity(c, p) for c, p in b.blocks("affinity")]
        g.spreads = [self.spread(c, p) for c, p in b.blocks("spread")]
        restart = b.single("restart")
        if restart:
            g.restart = replace(default_restart(job.type), **self.policy_fields(*restart, _RESTART))
        resched = b.single("reschedule")
        if resched or job_resched:
            fields = dict(job_resched)
            if resched:
                fields.update(self.policy_fields(*resched, _RESCHEDULE))
            g.reschedule = replace(default_reschedule(job.type), **fields)
        network = b.single("network")
        if network:
            g.networks = [self.network(*network)]
        disk = b.single("ephemeral_disk")
        if disk:
            g.ephemeral_disk = self.ephemeral_disk(*disk)
        g.services = [self.service(s, p, f"{job.name}-{g.name}") for s, p in b.blocks("service")]
        mode = g.networks[0].mode if g.networks else ""
        effective = g.restart or default_restart(job.type)
        g.tasks = [self.task(t, p, job, g, effective, mode) for t, p in b.blocks("task")]
        b.finish()
        return g

    # -- task --

    def task(
        self, blk: Block, path: FieldPath, job: Job, group: TaskGroup, restart: RestartPolicy, mode: str
    ) -> Task:
        t = Task(name=self.label(blk))
        b = _Body(self, blk, path)
        t.driver = b.get("driver", to_str, "")
        t.config = b.config("config")
        options = OPTIONS.get(t.driver, {})
        for key, opt in options.items():  # HCL's conversion: numbers and bools become strings where wanted
            if key in t.config:
                t.config[key] = _coerce(t.config[key], opt.kind)
        t.env = b.map("env")
        t.user = b.get("user", to_str, t.user)
        t.kill_timeout = b.get("kill_timeout", to_duration, t.kill_timeout)
        t.kill_signal = b.get("kill_signal", to_str, t.kill_signal)
        t.meta = b.map("meta")
        t.leader = b.get("leader", to_bool, t.leader)
        t.constraints = [self.constraint(c, p) for c, p in b.blocks("constraint")]
        t.affinities = [self.affinity(c, p) for c, p in b.blocks("affinity")]
        res = b.single("resources")
        if res:
            t.resources = self.resources(*res)
        restart_blk = b.single("restart")
        if restart_blk:
            t.restart = replace(restart, **self.policy_fields(*restart_blk, _RESTART))
        life = b.single("lifecycle")
        if life:
            t.lifecycle = self.lifecycle(*life)
        logs = b.single("logs")
        if logs:
            t.logs = self.logs(*logs)
        t.services = [self.service(s, p, f"{job.name}-{group.name}-{t.name}") for s, p in b.blocks("service")]
        b.finish()
        return t

    # -- small blocks --

    def resources(self, blk: Block, path: FieldPath) -> Resources:
        b = _Body(self, blk, path)
        r = Resources()
        r.cpu = b.get("cpu", to_int, r.cpu)
        r.memory = b.get("memory", to_int, r.memory)
        r.memory_max = b.get("memory_max", to_int, r.memory_max)
        b.finish()
        return r

    def policy_fields(self, blk: Block, path: FieldPath, spec: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
        """The fields a restart, reschedule or check_restart block sets (the rest are inherited)."""
        b = _Body(self, blk, path)
        out: dict[str, Any] = {}
        for name, conv in spec.items():
            value = b.get(name, conv, None)
            if value is not None:
                out[name] = value
        b.finish()
        return out

    def network(self, blk: Block, path: FieldPath) -> Network:
        b = _Body(self, blk, path)
        n = Network()
        n.mode = b.get("mode", to_str, n.mode)
        n.name = b.get("name", to_str, n.name)
        for pblk, ppath in b.blocks("port"):
            pb = _Body(self, pblk, ppath)
            port = Port(label=self.label(pblk))
            port.static = pb.get("static", to_int, 0)
            port.to = pb.get("to", to_int, 0)
            pb.finish()
            n.ports.append(port)
        b.finish()
        return n

    def ephemeral_disk(self, blk: Block, path: FieldPath) -> int:
        b = _Body(self, blk, path)
        size = b.get("size", to_int, 300)
        for flag, why in (("migrate", "migrating ephemeral disks"), ("sticky", "sticky ephemeral disks")):
            if b.get(flag, to_bool, False):
                self.problem(b.line(flag), child(path, flag), f"{why} is not supported (only {flag} = false)")
        b.finish()
        return size

    def service(self, blk: Block, path: FieldPath, default_name: str) -> Service:
        b = _Body(self, blk, path)
        s = Service()
        s.name = b.get("name", to_str, default_name)
        s.port = b.get("port", to_str, "")
        s.tags = b.get("tags", to_str_list, [])
        s.canary_tags = b.get("canary_tags", to_str_list, [])
        s.address_mode = b.get("address_mode", to_str, s.address_mode)
        provider = b.get("provider", to_str, s.provider)
        if provider in ("nomad", "shoal"):
            s.provider = "shoal"  # Nomad's built-in service catalog is shoal's
        elif provider == "consul":
            self.problem(b.line("provider"), child(path, "provider"),
                         'provider "consul" is not supported: shoal has no Consul integration; '
                         'use provider = "nomad" (shoal\'s own service catalog)')
        else:
            self.problem(b.line("provider"), child(path, "provider"),
                         f'unknown provider {show(provider)}; use "nomad" (shoal\'s own service catalog)')
        restart = b.single("check_restart")
        inherited = self.policy_fields(*restart, _CHECK_RESTART) if restart else {}
        checks = b.blocks("check")
        if restart and not checks:
            self.warn(restart[0].line, restart[1], "check_restart has no effect: the service has no checks")
        for cblk, cpath in checks:
            cb = _Body(self, cblk, cpath)
            c = Check()
            c.name = cb.get("name", to_str, c.name)
            c.type = cb.get("type", to_str, c.type)
            c.port = cb.get("port", to_str, c.port)
            c.path = cb.get("path", to_str, c.path)
            c.command = cb.get("command", to_str, c.command)
            c.args = cb.get("args", to_str_list, c.args)
            c.interval = cb.get("interval", to_duration, c.interval)
            c.timeout = cb.get("timeout", to_duration, c.timeout)
            c.task = cb.get("task", to_str, c.task)
            own = cb.single("check_restart")
            if restart or own:  # merged as Nomad merges them: what the check sets wins
                fields = {**inherited, **(self.policy_fields(*own, _CHECK_RESTART) if own else {})}
                c.check_restart = CheckRestart(**fields)
            cb.finish()
            s.checks.append(c)
        b.finish()
        return s

    def lifecycle(self, blk: Block, path: FieldPath) -> Lifecycle:
        b = _Body(self, blk, path)
        life = Lifecycle()
        life.hook = b.get("hook", to_str, life.hook)
        life.sidecar = b.get("sidecar", to_bool, life.sidecar)
        b.finish()
        return life

    def logs(self, blk: Block, path: FieldPath) -> LogConfig:
        b = _Body(self, blk, path)
        logs = LogConfig()
        for name in ("max_files", "max_file_size"):
            value = b.get(name, to_int, getattr(logs, name))
            if value < 1:
                self.problem(b.line(name), child(path, name), f"{name} must be at least 1, got {value}")
            setattr(logs, name, value)
        logs.disabled = b.get("disabled", to_bool, False)
        if blk.attribute("enabled") is not None:
            logs.disabled = not b.get("enabled", to_bool, True)
        b.finish()
        return logs

    def constraint(self, blk: Block, path: FieldPath) -> Constraint:
        b = _Body(self, blk, path)
        c = Constraint()
        c.attribute = b.get("attribute", to_str, c.attribute)
        c.operator = b.get("operator", to_str, c.operator)
        c.value = b.get("value", to_str, c.value)
        shorthands = [name for name in CONSTRAINT_SHORTHANDS if blk.attribute(name) is not None]
        for name in shorthands:
            value = b.get(name, to_str, "")
            if blk.attribute("operator") is not None or len(shorthands) > 1:
                self.problem(b.line(name), child(path, name),
                             f"{name} = ... is shorthand for operator = {json.dumps(name)}; "
                             "use either the shorthand or operator, once")
                continue
            c.operator = name
            if name == "distinct_hosts":
                if value not in ("true", "false"):
                    self.problem(b.line(name), child(path, name), f"expected true or false, got {show(value)}")
                c.value = value
            elif name == "distinct_property":
                c.attribute = value
            else:
                c.value = value
        b.finish()
        return c

    def affinity(self, blk: Block, path: FieldPath) -> Affinity:
        b = _Body(self, blk, path)
        a = Affinity()
        a.attribute = b.get("attribute", to_str, a.attribute)
        a.operator = b.get("operator", to_str, a.operator)
        a.value = b.get("value", to_str, a.value)
        a.weight = b.get("weight", to_int, a.weight)
        b.finish()
        return a

    def spread(self, blk: Block, path: FieldPath) -> Spread:
        b = _Body(self, blk, path)
        s = Spread()
        s.attribute = b.get("attribute", to_str, s.attribute)
        s.weight = b.get("weight", to_int, s.weight)
        for tblk, tpath in b.blocks("target"):
            tb = _Body(self, tblk, tpath)
            target = SpreadTarget(value=self.label(tblk))
            target.percent = tb.get("percent", to_int, 0)
            tb.finish()
            s.targets.append(target)
        b.finish()
        return s

    def label(self, blk: Block) -> str:
        """The block's label (a missing one is reported where the block is listed)."""
        return blk.labels[0] if blk.labels else ""


# The fields of restart, reschedule and check_restart blocks, with their conversions.
_RESTART: dict[str, Callable[[Any], Any]] = {
    "attempts": to_int, "interval": to_duration, "delay": to_duration, "mode": to_str,
}
_RESCHEDULE: dict[str, Callable[[Any], Any]] = {
    "attempts": to_int, "interval": to_duration, "delay": to_duration, "delay_function": to_str,
    "max_delay": to_duration, "unlimited": to_bool,
}
_CHECK_RESTART: dict[str, Callable[[Any], Any]] = {
    "limit": to_int, "grace": to_duration, "ignore_warnings": to_bool,
}


def _coerce(value: Any, kind: str) -> Any:
    """HCL's conversions for a driver option: "8" -> 8 for counts, 8 -> "8" for strings, and so on."""

    def one(v: Any, want: str) -> Any:
        try:
            if want in ("string", "abs_path") and isinstance(v, (bool, int, float)):
                return to_str(v)
            if want == "bool" and isinstance(v, str):
                return to_bool(v)
            if want == "count" and isinstance(v, (str, float)) and not isinstance(v, bool):
                return to_int(v)
        except ConvertError:
            pass  # left as written; validation says what is wrong with it
        return v

    if kind == "strings" and isinstance(value, list):
        return [one(v, "string") for v in value]
    return one(value, kind)


class _Body:
    """One block being decoded: hands out its attributes and child blocks, then reports the rest."""

    def __init__(self, d: _Decoder, blk: Block, path: FieldPath):
        self.d = d
        self.blk = blk
        self.path = path
        self.kind = blk.type
        self.attrs: dict[str, Attribute] = {}
        for a in blk.attributes:
            first = self.attrs.get(a.name)
            if first is not None:
                d.problem(a.line, child(path, a.name), f"set more than once (first at line {first.line})")
            else:
                self.attrs[a.name] = a
        self.children: dict[str, list[Block]] = {}
        for c in blk.blocks:
            self.children.setdefault(c.type, []).append(c)
        self.used: set[str] = set()

    def line(self, name: str) -> int | None:
        a = self.attrs.get(name)
        return a.line if a is not None else self.blk.line

    def _attr(self, name: str) -> Attribute | None:
        self.used.add(name)
        a = self.attrs.get(name)
        if a is None:
            return None
        path = child(self.path, name)
        self.d.source.add(path, a.line)
        if a.value is INVALID:
            self.d.invalid.add(render(path))
            if a.error:
                self.d.problem(a.line, path, a.error)
            return None
        if a.value is None:  # null: not set
            return None
        return a

    def get(self, name: str, conv: Callable[[Any], T], default: T) -> T:
        if name in self.children:
            self.used.add(name)
            for blk in self.children[name]:
                self.d.problem(blk.line, child(self.path, name), f"{name} is an attribute, not a block: write {name} = ...")
        a = self._attr(name)
        if a is None:
            return default
        try:
            return conv(a.value)
        except ConvertError as e:
            self.d.problem(a.line, child(self.path, name), str(e))
            return default

    def map(self, name: str) -> dict[str, str]:
        """A map of strings written as ``name = { ... }`` or as a block ``name { K = "v" }``."""
        raw = self._map_value(name)
        if raw is None:
            return {}
        value, line = raw
        try:
            return to_str_map(value)
        except ConvertError as e:
            self.d.problem(line, child(self.path, name), str(e))
            return {}

    def config(self, name: str) -> dict[str, Any]:
        """The task driver's options: any values; nested blocks become lists of objects."""
        raw = self._map_value(name, nested_ok=True)
        if raw is None:
            return {}
        value, line = raw
        if not isinstance(value, dict):
            self.d.problem(line, child(self.path, name), f"expected a block of options, got {show(value)}")
            return {}
        return value

    def _map_value(self, name: str, nested_ok: bool = False) -> tuple[Any, int | None] | None:
        self.used.add(name)
        blocks = self.children.get(name, [])
        attr = self._attr(name) if name in self.attrs else None
        path = child(self.path, name)
        if blocks and name in self.attrs:
            self.d.problem(blocks[0].line, path, f"{name} is set both as an attribute and as a block")
            return None
        if len(blocks) > 1:
            for extra in blocks[1:]:
                self.d.problem(extra.line, path, f"only one {name} block is allowed (first at line {blocks[0].line})")
        if blocks:
            blk = blocks[0]
            self.d.source.add(path, blk.line)
            if blk.labels:
                self.d.problem(blk.line, path, f"a {name} block takes no label")
            return self._block_dict(blk, path, nested_ok), blk.line
        if attr is None:
            return None
        if isinstance(attr.value, dict):
            for key in attr.value:
                self.d.source.add(child(path, key), attr.line)
        return attr.value, attr.line

    def _block_dict(self, blk: Block, path: FieldPath, nested_ok: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        lines: dict[str, int | None] = {}
        for a in blk.attributes:
            p = child(path, a.name)
            self.d.source.add(p, a.line)
            if a.name in out:
                self.d.problem(a.line, p, f"set more than once (first at line {lines[a.name]})")
                continue
            lines[a.name] = a.line
            if a.value is INVALID:
                self.d.invalid.add(render(p))
                if a.error:
                    self.d.problem(a.line, p, a.error)
                continue
            out[a.name] = a.value
        for c in blk.blocks:
            p = child(path, c.type)
            self.d.source.add(p, c.line)
            if not nested_ok:
                self.d.problem(c.line, p, f"a {path[-1].name} block holds only attributes, not blocks")
                continue
            if c.type in out and not isinstance(out[c.type], list) or c.type in lines:
                self.d.problem(c.line, p, f"{c.type} is set both as an attribute and as a block")
                continue
            value: Any = self._block_dict(c, p, nested_ok)
            for lab in reversed(c.labels):
                value = {lab: value}
            out.setdefault(c.type, []).append(value)
        return out

    def blocks(self, name: str) -> list[tuple[Block, FieldPath]]:
        """Every child block ``name``, with its field path (label or position)."""
        self.used.add(name)
        kind = schema.CHILDREN.get(self.kind, {}).get(name, schema.BlockKind())
        out = []
        if name in self.attrs:
            a = self.attrs[name]
            label = '"LABEL" ' if kind.labelled else ""
            self.d.problem(a.line, child(self.path, name), f"{name} is a block, not an attribute: write {name} {label}{{ ... }}")
        for i, blk in enumerate(self.children.get(name, [])):
            if kind.labelled:
                label = blk.labels[0] if blk.labels else ""
                p = child(self.path, name, label)
                if len(blk.labels) != 1 or not label:
                    self.d.problem(blk.line, p if blk.labels else child(self.path, name, index=i),
                                   f'a {name} block needs one non-empty label: {name} "NAME" {{ ... }}')
            else:
                p = child(self.path, name, index=i) if kind.repeated else child(self.path, name)
                if blk.labels:
                    self.d.problem(blk.line, p, f"a {name} block takes no label (found {json.dumps(blk.labels[0])})")
            self.d.source.add(p, blk.line)
            out.append((blk, p))
        return out

    def single(self, name: str) -> tuple[Block, FieldPath] | None:
        found = self.blocks(name)
        for blk, p in found[1:]:
            self.d.problem(blk.line, p, f"only one {name} block is allowed here (first at line {found[0][0].line})")
        return found[0] if found else None

    def finish(self) -> None:
        """Report every attribute and block nobody took."""
        for a in self.blk.attributes:
            if a.name not in self.used:
                self.used.add(a.name)
                self._leftover(a.name, a.line, is_block=False)
        for blk in self.blk.blocks:
            if blk.type not in self.used:
                self.used.add(blk.type)
                for other in self.children[blk.type]:
                    self._leftover(blk.type, other.line, is_block=True, labels=other.labels)

    def _leftover(self, name: str, line: int | None, is_block: bool, labels: list[str] | None = None) -> None:
        path = child(self.path, name, labels[0] if labels else None)
        what = "block" if is_block else "attribute"
        reason = schema.unsupported_reason(self.kind, name)
        if reason:
            self.d.problem(line, path, f"not supported: {reason}")
            return
        if name in schema.CHILDREN.get(self.kind, {}):
            self.d.problem(line, path, f"{name} must be a block: {name} {{ ... }}")
            return
        known = schema.known_names(self.kind)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        where = f"a {self.kind} block" if self.kind else "the top level"
        self.d.problem(line, path, f"unknown {what} in {where}{hint}")
