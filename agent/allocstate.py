"""An allocation's state file: ``ALLOC_DIR/state.msgpack``.

It holds the allocation, its job version and, per task, the task state, the
driver's handle and the restart counts (``AllocRunner.snapshot``). It is
rewritten atomically (not fsynced: it survives an agent crash, not a power cut)
whenever any of that changes, so a restarted agent re-attaches to the same
processes instead of starting new ones.

It is the runner's own persistence, not a hook: a restarted agent reads it to
build the runner and its hooks in the first place, and it is written on every
change of any task, before prerun and after the hooks have shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import structlog

from shoal.agent.names import STATE_FILE

log = structlog.get_logger("shoal.agent.alloc")

STATE_VERSION = 1
SAVE_DELAY = 0.2  # seconds: state changes within this window are written once


def load_state(alloc_dir: Path) -> dict[str, Any] | None:
    """The state file's contents, or None when there is none (or it is unreadable, or of another version)."""
    try:
        data = (alloc_dir / STATE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        log.warning("unreadable allocation state file; ignoring it", path=str(alloc_dir / STATE_FILE), error=str(exc))
        return None
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


class StateFile:
    """Writes ``snapshot()`` to ALLOC_DIR/state.msgpack: now, or once for the changes of the next
    ``SAVE_DELAY`` seconds. Never creates the directory (a write after it was removed is dropped)."""

    def __init__(self, alloc_dir: Path, snapshot: Callable[[], dict[str, Any]], alloc_id: str):
        self.dir = alloc_dir
        self.snapshot = snapshot
        self.alloc_id = alloc_id
        self.closed = False  # the agent let go of the allocation: no more writes
        self._pending = False

    def schedule(self) -> None:
        """Coalesce the changes of the next ``SAVE_DELAY`` seconds into one write. A task started in that
        window is still found after a crash: its driver's records know it (``Driver.probe_handle``)."""
        if self._pending:
            return
        self._pending = True
        try:
            asyncio.get_running_loop().call_later(SAVE_DELAY, self.save)
        except RuntimeError:
            self.save()

    def save(self) -> None:
        self._pending = False
        if self.closed or not self.dir.is_dir():
            return
        tmp = self.dir / f".{STATE_FILE}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_bytes(msgpack.packb({"version": STATE_VERSION, **self.snapshot()}, use_bin_type=True))
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError as exc:
            log.warning("cannot write the allocation state file", alloc_id=self.alloc_id, error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
