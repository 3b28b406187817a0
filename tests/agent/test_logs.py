"""Log rotation by size (collapse-range, no bytes lost) and reading rotated logs back, following too."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from shoal.agent.logs import numbered, read_all, read_log, rotate_if_needed, rotated_files


def _writer(path: Path, lines: int, stop_after: float | None = None) -> threading.Thread:
    """Append numbered lines through one O_APPEND descriptor, as a task does."""

    def run() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for i in range(lines):
                os.write(fd, f"line {i:06d} {'x' * 40}\n".encode())
                if i % 500 == 0:
                    time.sleep(0.001)
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_rotation_keeps_every_byte_in_order(tmp_path: Path) -> None:
    path = tmp_path / "web.stdout.0"
    n = 40_000  # ~2 MB through a 64 KB limit: many rotations while writing
    writer = _writer(path, n)
    while writer.is_alive():
        rotate_if_needed(path, 64 * 1024, max_files=1000)
    writer.join()
    rotate_if_needed(path, 64 * 1024, max_files=1000)
    files = rotated_files(path)
    assert len(files) > 10 and files[-1] == path
    assert all(f.stat().st_size % 4096 == 0 for f in files[:-1])  # whole blocks moved out of the live file
    lines = read_all(path).decode().splitlines()
    assert lines == [f"line {i:06d} {'x' * 40}" for i in range(n)]


def test_max_files_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "t.stderr.0"
    path.write_bytes(b"a" * 10_000)
    for chunk in (b"b", b"c", b"d"):
        assert rotate_if_needed(path, 4096, max_files=3)
        with open(path, "ab") as f:
            f.write(chunk * 10_000)
    assert [p.name for p in rotated_files(path)] == ["t.stderr.2", "t.stderr.1", "t.stderr.0"]
    assert not numbered(path, 3).exists()
    data = read_all(path)
    written = b"a" * 10_000 + b"b" * 10_000 + b"c" * 10_000 + b"d" * 10_000
    assert written.endswith(data) and len(data) == 40_000 - 8192  # the oldest file (8 KB of "a") is gone
    assert not rotate_if_needed(path, 1 << 20, max_files=3)  # under the limit: nothing to do
    # the last 100 bytes across files
    assert read_all(path, tail_bytes=100) == b"d" * 100


def test_follow_continues_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "f.stdout.0"
    path.write_bytes(b"")
    done = threading.Event()

    async def follow() -> bytes:
        out = b""
        async for chunk in read_log(path, follow=True, tail_bytes=None, still_running=lambda: not done.is_set()):
            out += chunk
        return out

    async def scenario() -> bytes:
        reader = asyncio.create_task(follow())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        expected = b""
        try:
            for i in range(30):
                line = f"{i:04d}{'y' * 995}\n".encode()
                os.write(fd, line)
                expected += line
                if i % 6 == 5:
                    rotate_if_needed(path, 4096, max_files=5)
                await asyncio.sleep(0.03)
        finally:
            os.close(fd)
        done.set()
        got = await asyncio.wait_for(reader, 10)
        assert got == expected
        return got

    asyncio.run(scenario())
