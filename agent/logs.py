"""Reading task logs: a tail, then (with follow) new bytes as the task writes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

CHUNK = 64 * 1024
FOLLOW_INTERVAL = 0.25


async def read_log(
    path: Path,
    *,
    follow: bool,
    tail_bytes: int | None,
    still_running: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """Yield the file's content (its last ``tail_bytes`` if given), then, when following,
    whatever is appended until the task is no longer running."""
    offset = 0
    if tail_bytes is not None and path.exists():
        offset = max(0, path.stat().st_size - tail_bytes)
    while True:
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    offset += len(chunk)
                    yield chunk
        if not follow:
            return
        if not still_running() and (not path.exists() or path.stat().st_size <= offset):
            return
        await asyncio.sleep(FOLLOW_INTERVAL)
