"""One owner per name: what an allocation and its tasks are called on the host.

An allocation id and a task name may hold characters that are not safe in a path
component or a runc container id: spaces, non-ASCII letters, dots, ``..``, and
slashes. (``jobs/validate.py`` refuses task names with slashes, backslashes or
control characters, but not ``..`` or spaces, and a state file written by an
older agent was never validated: nothing here relies on validation.) Every name
the agent gives a task on the host comes from this module, and each mapping is
injective: two different tasks never share a directory, a container or a cgroup.

``component(name)`` is ``name`` itself when it is plain (ASCII letters, digits,
``_ . -``, not starting with a dot, at most 128 characters, not reserved);
otherwise the name with every other character (and leading dots) replaced by
``_``, then ``+`` and a hash of the exact name. A plain name never holds ``+``, so it never equals a
hashed one; two hashed names differ in their hashes::

    web          -> web
    web server   -> web_server+4b1d9...      web_server -> web_server
    ../x         -> ___x+...                 a/b        -> a_b+...
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

STATE_FILE = "state.msgpack"  # ALLOC_DIR/state.msgpack: the allocation's state file
SHARED_DIR = "alloc"  # ALLOC_DIR/alloc: the directory every task of the allocation shares
MAX_PLAIN = 128  # longer names are hashed (the longest a job's names may be, jobs/validate.py MAX_ID)
HASH_CHARS = 12

_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_IN_ALLOC_DIR = frozenset({STATE_FILE, SHARED_DIR})  # what a task's directory must not be called


def _plain(name: str) -> bool:
    return len(name) <= MAX_PLAIN and not name.startswith(".") and _PLAIN.fullmatch(name) is not None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def _sanitized(name: str, limit: int) -> str:
    safe = _UNSAFE.sub("_", name)[:limit]
    return "_" * (len(safe) - len(safe.lstrip("."))) + safe.lstrip(".")  # no dot file, no "." or ".."


def component(name: str, reserved: frozenset[str] = frozenset()) -> str:
    """A safe path component (and runc id fragment) for ``name``, distinct for distinct names."""
    if _plain(name) and name not in reserved:
        return name
    return f"{_sanitized(name, 100)}+{_digest(name)}"


def alloc_dir(allocs_dir: Path, alloc_id: str) -> Path:
    """ALLOCS_DIR/<alloc>: an allocation's directory (its state file, shared dir and task dirs)."""
    return allocs_dir / component(alloc_id)


def shared_dir(alloc_dir: Path) -> Path:
    """ALLOC_DIR/alloc: shared by the allocation's tasks (``/alloc`` in a container)."""
    return alloc_dir / SHARED_DIR


def logs_dir(alloc_dir: Path) -> Path:
    return shared_dir(alloc_dir) / "logs"


def task_dir(alloc_dir: Path, task: str) -> Path:
    """ALLOC_DIR/<task>: a task's own directory (never the shared dir or the state file)."""
    return alloc_dir / component(task, _IN_ALLOC_DIR)


def log_files(alloc_dir: Path, task: str) -> tuple[Path, Path]:
    """The live stdout and stderr files of a task (rotated ones end in .1, .2, ...: logs.py)."""
    stem = component(task)
    logs = logs_dir(alloc_dir)
    return logs / f"{stem}.stdout.0", logs / f"{stem}.stderr.0"


def container_id(alloc_id: str, task: str) -> str:
    """The runc container id of a task: ``shoal-<alloc>-<task>``.

    Allocation ids are UUIDs (36 characters), so the split after one is unambiguous; any
    other allocation id, or a task name that is not plain, gives the sanitized pair and a
    hash of the exact pair (``+`` is in no plain id).
    """
    if _UUID.fullmatch(alloc_id) and _plain(task):
        return f"shoal-{alloc_id}-{task}"
    pair = f"{len(alloc_id)}:{alloc_id}{task}"
    return f"shoal-{_sanitized(alloc_id, 40)}-{_sanitized(task, 100)}+{_digest(pair)}"


def cgroup_path(container_id: str) -> str:
    """The cgroups path runc gives a container (``linux.cgroupsPath``), under /shoal."""
    return f"/shoal/{container_id}"
