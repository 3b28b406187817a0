"""Task logs: size-based rotation of the files a task writes, and reading them back.

A task writes its stdout to ``<task>.stdout.0`` (and stderr to ``<task>.stderr.0``)
through a file descriptor it inherited at start (opened with O_APPEND), so the
writer never changes files and keeps writing even while no agent runs. Rotation
therefore moves the *head* of the live file away: its first whole blocks are
copied to ``.1`` (older files shift to ``.2`` ... ``.N-1``; the oldest is
dropped) and then removed from ``.0`` with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)``,
which the kernel does under the inode lock, so no byte appended meanwhile is
lost. On filesystems without collapse-range (not ext4/xfs) the fallback is
copy-then-truncate, which can lose what is written between the two steps.

Reading concatenates the files oldest first; following notices a rotation (the
live file shrank) and continues in ``.1`` where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

CHUNK = 64 * 1024
FOLLOW_INTERVAL = 0.25
FALLOC_FL_COLLAPSE_RANGE = 0x08
MB = 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def numbered(path: Path, n: int) -> Path:
    """``task.stdout.0`` -> ``task.stdout.<n>``."""
    stem, _, _ = path.name.rpartition(".")
    return path.with_name(f"{stem}.{n}")


def rotated_files(path: Path) -> list[Path]:
    """The existing files of one stream, oldest first, ending with the live one (``.0``)."""
    out = []
    n = 1
    while numbered(path, n).exists():
        out.append(numbered(path, n))
        n += 1
    out.reverse()
    if path.exists():
        out.append(path)
    return out


def _collapse(fd: int, length: int) -> bool:
    if _libc.fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, f"fallocate(COLLAPSE_RANGE): {os.strerror(err)}")


def rotate_if_needed(path: Path, max_bytes: int, max_files: int) -> bool:
    """Rotate ``path`` (the live ``.0`` file) if it is larger than ``max_bytes``. True if it rotated."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes or max_bytes <= 0:
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        block = os.fstat(fd).st_blksize or 4096
        head = size - size % block  # collapse works on whole blocks
        if head <= 0:
            return False
        if max_files > 1:
            for n in range(max_files - 1, 1, -1):  # .N-2 -> .N-1, ..., .1 -> .2 (the oldest is overwritten)
                older = numbered(path, n - 1)
                if older.exists():
                    os.replace(older, numbered(path, n))
            tmp = path.with_name(f".{path.name}.rotating")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                copied = 0
                while copied < head:
                    n = os.copy_file_range(fd, out, head - copied, copied, copied)
                    if n == 0:
                        break
                    copied += n
            finally:
                os.close(out)
            os.replace(tmp, numbered(path, 1))
        if not _collapse(fd, head):
            # copy-then-truncate: whatever was appended after the copy is lost with the head
            if max_files > 1:
                tail = os.pread(fd, 1 << 30, head)
                with open(numbered(path, 1), "ab") as f:
                    f.write(tail)
            os.ftruncate(fd, 0)
        for n in range(max_files, max_files + 64):  # fewer files wanted than before: drop the extras
            extra = numbered(path, n)
            if not extra.exists():
                break
            with contextlib.suppress(FileNotFoundError):
                extra.unlink()
        return True
    finally:
        os.close(fd)


def read_all(path: Path, tail_bytes: int | None = None) -> bytes:
    """The whole stream (every rotated file, oldest first), or its last ``tail_bytes``."""
    return _read_all(path, tail_bytes)[0]


def _read_all(path: Path, tail_bytes: int | None) -> tuple[bytes, int]:
    """(content, how far into the live file it reaches)."""
    files = rotated_files(path)
    parts: list[bytes] = []
    need = tail_bytes
    live_end = 0
    for f in reversed(files):
        if need is not None and need <= 0:
            break
        with f.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = 0 if need is None else max(0, size - need)
            fh.seek(start)
            data = fh.read(size - start)
        if f == path:
            live_end = start + len(data)
        parts.append(data)
        if need is not None:
            need -= len(data)
    return b"".join(reversed(parts)), live_end


async def read_log(
    path: Path,
    *,
    follow: bool,
    tail_bytes: int | None,
    still_running: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """Yield the stream's content (its last ``tail_bytes`` if given), then, when following,
    whatever is appended until the task is no longer running."""
    data, offset = _read_all(path, tail_bytes)
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
    if not follow:
        return
    last_rotated = _ident(numbered(path, 1))  # the newest rotated file we know of
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        newest = _ident(numbered(path, 1))
        if newest != last_rotated or size < offset:
            # Rotated (maybe several times) since the last look: the heads moved out of the live file
            # are the numbered files newer than the one we knew, oldest first.
            heads = _rotated_since(path, last_rotated)
            last_rotated = _ident(heads[-1]) if heads else newest
            for head in heads:
                try:
                    with head.open("rb") as f:
                        k = os.fstat(f.fileno()).st_size
                        if offset <= k:
                            f.seek(offset)
                            while chunk := f.read(CHUNK):
                                yield chunk
                            offset = 0
                        else:
                            offset -= k
                except FileNotFoundError:
                    offset = 0
            if not heads:
                offset = 0
        if size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    offset += len(chunk)
                    yield chunk
        if not still_running():
            try:
                if path.stat().st_size <= offset:
                    return
            except FileNotFoundError:
                return
            continue
        await asyncio.sleep(FOLLOW_INTERVAL)


def _ident(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns  # kept when the file is renamed to the next number


def _rotated_since(path: Path, known: tuple[int, int] | None) -> list[Path]:
    """Numbered files written after the rotated file ``known`` (all of them if it is gone), oldest first."""
    out: list[Path] = []
    n = 1
    while True:
        p = numbered(path, n)
        ident = _ident(p)
        if ident is None or (known is not None and ident == known):
            break
        out.append(p)
        n += 1
    out.reverse()
    return out
