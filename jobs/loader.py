"""Reading a job file: the public entry points.

    loaded = load_job_file("web.hcl", variables={"image": "redis:7"})
    loaded.job        # a validated shoal.jobs.model.Job
    loaded.warnings   # settings accepted but without effect, each with file:line

Any problem raises ``JobFileError`` listing every problem found, each naming
the file, the line and the field (see ``shoal.jobs.paths`` for the style).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from shoal.errors import JobFileError, Problem
from shoal.jobs.body import Block
from shoal.jobs.decode import decode_job
from shoal.jobs.hcl import read_hcl
from shoal.jobs.hclfuncs import FuncError
from shoal.jobs.model import Job
from shoal.jobs.structured import read_json, read_yaml
from shoal.jobs.validate import check_job

FORMATS = {".hcl": "hcl", ".nomad": "hcl", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class LoadedJob:
    job: Job
    warnings: list[str] = field(default_factory=list)


def load_job_file(path: str | Path, variables: Mapping[str, str] | None = None, namespace: str = "default") -> LoadedJob:
    """Read, evaluate and validate the job file at ``path`` (format from its extension, else sniffed).
    ``namespace`` is the job's when the file names none (the CLI's ``-namespace``, as in Nomad)."""
    name = str(path)
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise JobFileError([Problem(name, None, "", f"cannot read the job file: {e.strerror or e}")]) from None
    text = _decode(data, name)
    return _load(text, name, p.parent, variables, _format_of(p.name, text), namespace)


def load_job_text(text: str, filename: str, variables: Mapping[str, str] | None = None,
                  namespace: str = "default") -> LoadedJob:
    """Like ``load_job_file`` for text already read; ``filename`` names it in messages, picks the
    format by its extension, and anchors ``file()`` paths."""
    return _load(text, filename, Path(filename).parent, variables, _format_of(filename, text), namespace)


def example_job_text() -> str:
    """The example job ``shoal job init`` writes."""
    return resources.files("shoal.jobs").joinpath("examples/example.hcl").read_text(encoding="utf-8")


def detect_format(filename: str, text: str) -> str:
    """"hcl", "yaml" or "json": by extension, else by looking at the text."""
    return _format_of(filename, text)


def _format_of(filename: str, text: str) -> str:
    for suffix, fmt in FORMATS.items():
        if filename.lower().endswith(suffix):
            return fmt
    return _sniff(text)


_HCL_START = re.compile(r'^\s*(job|variable|variables|locals)\b\s*("[^"\n]*"\s*|[A-Za-z_][\w-]*\s*)*\{', re.M)


def _sniff(text: str) -> str:
    body = text.lstrip("\ufeff")
    for line in body.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "//", "/*", "*")):
            continue
        if s.startswith(("{", "[")):
            return "json"
        break
    return "hcl" if _HCL_START.search(body) else "yaml"


def _decode(data: bytes, name: str) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise JobFileError([Problem(name, None, "", f"the job file is too large ({len(data)} bytes; at most {MAX_FILE_BYTES})")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise JobFileError([Problem(name, line, "", "the job file is not UTF-8 text")]) from None


def _reader_for(base: Path) -> Callable[[str], str]:
    """``file()`` for a job file in ``base``: reads UTF-8 text relative to it."""

    def read(rel: str) -> str:
        target = base / rel
        try:
            data = target.read_bytes()
        except OSError as e:
            raise FuncError(f"cannot read {str(target)!r}: {e.strerror or e}") from None
        if len(data) > MAX_FILE_BYTES:
            raise FuncError(f"{str(target)!r} is too large")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FuncError(f"{str(target)!r} is not UTF-8 text") from None

    return read


def _load(text: str, name: str, base: Path, variables: Mapping[str, str] | None, fmt: str,
          namespace: str) -> LoadedJob:
    if len(text) > MAX_FILE_BYTES:
        raise JobFileError([Problem(name, None, "", f"the job file is too large (at most {MAX_FILE_BYTES} bytes)")])
    text = text.lstrip("\ufeff")
    problems: list[Problem] = []
    block: Block | None
    if fmt == "hcl":
        hdoc = read_hcl(text, name, variables, _reader_for(base))
        block, problems = hdoc.job, hdoc.problems
    else:
        sdoc = read_yaml(text, name) if fmt == "yaml" else read_json(text, name)
        block, problems = sdoc.job, sdoc.problems
        if variables:
            problems.append(Problem(name, None, "", f"variables ({', '.join(sorted(variables))}) can only be "
                                    f"used with HCL job files; this one is {fmt.upper()}"))
    if block is None:
        raise JobFileError(problems or [Problem(name, 1, "", "no job found")])
    decoded = decode_job(block, name, namespace)
    problems.extend(decoded.problems)
    findings = check_job(decoded.job, decoded.source, name)
    reported = {p.field for p in problems} | decoded.invalid
    problems.extend(p for p in findings.problems if p.field not in reported)
    if problems:
        raise JobFileError(_ordered(problems))
    warnings = [str(w) for w in _ordered([*decoded.warnings, *findings.warnings])]
    return LoadedJob(decoded.job, warnings)


def _ordered(problems: list[Problem]) -> list[Problem]:
    """By line (problems without one last), keeping the order found within a line; no repeats."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line is None, p.line or 0))
