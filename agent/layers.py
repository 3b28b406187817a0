"""Unpack one layer tarball into a directory overlayfs can use as a lower layer.

:func:`unpack_layer` reads the blob once, streaming: it hashes every byte as the tar
is applied and keeps the result only if the hash is the digest that names it. The
layer is applied in a temporary directory beside the final one and renamed into
place, so no reader ever sees half a layer (two processes unpacking the same layer
both succeed; the second rename loses, harmlessly).

OCI whiteouts become what overlayfs expects: ``.wh.NAME`` a 0/0 character device,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its directory. Members
with absolute paths, ``..``, or a path through a symlink are refused.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from shoal.agent.imagetypes import ZSTD_MAGIC, ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
TEMP_PREFIX = ".tmp-"  # unpack directories not yet renamed into place (GC and cleanup skip them)
STALE_TEMP_AGE = 3600.0  # seconds after which an unpack directory is taken as a crash's leftover


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it."""

    __slots__ = ("_f", "hasher")

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> str:
        """Read (and hash) the rest; the hex digest of the whole blob."""
        while self.read(1 << 20):
            pass
        return self.hasher.hexdigest()


def safe_member_path(name: str, what: str) -> PurePosixPath | None:
    """The relative path of a tar member; None for the root itself; refuse escapes."""
    if name.startswith("/"):
        raise ImageError(f"{what}: member {name!r} has an absolute path; refusing to unpack")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{what}: member {name!r} escapes the layer with '..'; refusing to unpack")
    if not parts:
        return None
    return PurePosixPath(*parts)


class _Unpacker:
    """Apply one layer tarball to an empty directory, overlayfs style."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        self.what = what
        self.dir_times: list[tuple[str, float]] = []
        self.is_root = os.geteuid() == 0

    def _parent(self, rel: PurePosixPath) -> str:
        """Create the parent directories of ``rel``; refuse to go through a symlink."""
        cur = str(self.root)
        for part in rel.parts[:-1]:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise ImageError(f"{self.what}: member {str(rel)!r} goes through a symlink; refusing to unpack")
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(cur)
                os.mkdir(cur, 0o755)
        return cur

    @staticmethod
    def _clear(path: str, keep_dir: bool = False) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _owner_mode(self, path: str, m: tarfile.TarInfo) -> None:
        if self.is_root:
            os.lchown(path, m.uid, m.gid)
        if not m.issym():
            os.chmod(path, m.mode & 0o7777)
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                with contextlib.suppress(OSError):
                    os.setxattr(path, key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape"),
                                follow_symlinks=False)

    def apply(self, tar: tarfile.TarFile) -> None:
        for m in tar:
            rel = safe_member_path(m.name, self.what)
            if rel is None:
                if m.isdir():
                    self._owner_mode(str(self.root), m)
                    self.dir_times.append((str(self.root), m.mtime))
                continue
            base = rel.name
            parent = self._parent(rel)
            if base == OPAQUE_MARKER:
                os.setxattr(parent, OPAQUE_XATTR, b"y")
                continue
            if base.startswith(WHITEOUT_PREFIX):
                target = os.path.join(parent, base[len(WHITEOUT_PREFIX) :])
                self._clear(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            path = os.path.join(parent, base)
            if m.isdir():
                self._clear(path, keep_dir=True)
                if not os.path.isdir(path):
                    os.mkdir(path, 0o755)
                self._owner_mode(path, m)
                self.dir_times.append((path, m.mtime))
                continue
            self._clear(path)
            if m.isreg():
                src = tar.extractfile(m)
                assert src is not None
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                target_rel = safe_member_path(m.linkname, self.what)
                if target_rel is None:
                    raise ImageError(f"{self.what}: hard link {m.name!r} points at the layer root")
                os.link(os.path.join(self._parent(target_rel), target_rel.name), path, follow_symlinks=False)
                continue  # a hard link shares its target's owner, mode and times
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(path, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
            elif m.isfifo():
                os.mkfifo(path, m.mode & 0o7777)
            else:
                raise ImageError(f"{self.what}: member {m.name!r} has unsupported tar type {m.type!r}")
            self._owner_mode(path, m)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        # Directory times last: creating entries inside them changed their mtimes.
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def unpack_layer(blob: Path, final: Path, what: str) -> None:
    """Unpack the (plain or gzip) tar ``blob`` into ``final``, whose name is the blob's sha256 hex.

    ImageError if the blob is missing, is not a tar, hashes to anything but ``final.name``
    (corruption is reported as such even when it also broke the tar), or has a member
    that would escape the layer. Nothing is left behind on failure.
    """
    layers_dir = final.parent
    layers_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(layers_dir)
    tmp = layers_dir / f"{TEMP_PREFIX}{final.name[:16]}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(mode=0o755)
    corrupted = f"{what}: blob is corrupted (sha256 mismatch); re-import the image"
    try:
        try:
            f = open(blob, "rb")
        except FileNotFoundError:
            raise ImageError(f"{what}: blob missing from {blob.parent}; re-import the image") from None
        with f:
            if f.read(4) == ZSTD_MAGIC:
                raise ImageError(f"{what}: zstd-compressed layers are not supported; use gzip or plain tar")
            f.seek(0)
            reader = _HashingReader(f)
            try:
                with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                    _Unpacker(tmp, what).apply(tar)
            except ImageError:
                if reader.drain() != final.name:
                    raise ImageError(corrupted) from None
                raise
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
                if reader.drain() != final.name:
                    raise ImageError(corrupted) from None
                raise ImageError(f"{what}: cannot unpack: {exc}") from exc
            actual = reader.drain()
        if actual != final.name:
            raise ImageError(f"{what}: blob is corrupted (sha256 is {actual}, expected {final.name}); re-import the image")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # somebody else won the race: fine; anything else is an error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temp_dirs(layers_dir: Path, max_age: float = STALE_TEMP_AGE) -> None:
    """Remove unpack directories abandoned by a crash (older than ``max_age`` seconds)."""
    cutoff = time.time() - max_age
    for entry in os.scandir(layers_dir):
        if entry.name.startswith(TEMP_PREFIX):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
