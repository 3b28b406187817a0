"""Unpacking one layer tarball (``shoal.agent.layers``): whiteouts, links, escapes, corruption; no store."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from shoal.agent.imagetypes import ImageError
from shoal.agent.layers import unpack_layer


def _tar(entries: list[tuple[str, bytes | None, dict]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, extra in entries:
            info = tarfile.TarInfo(name)
            info.mode = extra.get("mode", 0o755 if data is None else 0o644)
            info.mtime = 1_700_000_000
            if "symlink" in extra:
                info.type = tarfile.SYMTYPE
                info.linkname = extra["symlink"]
                tar.addfile(info)
            elif "hardlink" in extra:
                info.type = tarfile.LNKTYPE
                info.linkname = extra["hardlink"]
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(tmp_path: Path, blob_data: bytes) -> Path:
    """Write ``blob_data`` as a blob and unpack it into layers/<its sha256>; that directory."""
    hexd = hashlib.sha256(blob_data).hexdigest()
    blob = tmp_path / "blobs" / hexd
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(blob_data)
    final = tmp_path / "layers" / hexd
    unpack_layer(blob, final, "test layer")
    return final


@pytest.mark.root
def test_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    from shoal.agent.drivers.container import mount_overlay, unmount

    lower = _tar([
        ("a", None, {}), ("a/file1", b"one", {}), ("a/file2", b"two", {}),
        ("b", None, {}), ("b/x", b"x", {}), ("b/sub", None, {}), ("b/sub/deep", b"d", {}),
        ("c", None, {}), ("c/keep", b"keep", {}),
    ])
    upper = _tar([
        ("a", None, {}), ("a/.wh.file1", b"", {}),
        ("b", None, {}), ("b/.wh..wh..opq", b"", {}), ("b/y", b"y", {}),
        ("c", None, {}), ("c/keep", b"new", {}), ("c/link", None, {"symlink": "keep"}),
        ("c/hard", None, {"hardlink": "c/keep"}),
    ])
    bottom = _unpack(tmp_path, gzip.compress(lower))
    top = _unpack(tmp_path, upper)  # a plain tar layer
    wh = top / "a" / "file1"
    st = os.lstat(wh)
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert os.getxattr(top / "b", "trusted.overlay.opaque") == b"y"
    assert not (top / "b" / ".wh..wh..opq").exists()
    assert (bottom / "a" / "file1").read_bytes() == b"one"
    assert os.stat(top / "c" / "keep").st_mtime == 1_700_000_000

    merged, up, work = tmp_path / "merged", tmp_path / "up", tmp_path / "work"
    for d in (merged, up, work):
        d.mkdir()
    mount_overlay(merged, [top, bottom], up, work)
    try:
        assert sorted(os.listdir(merged / "a")) == ["file2"]
        assert sorted(os.listdir(merged / "b")) == ["y"]  # x and sub/ hidden by the opaque dir
        assert (merged / "c" / "keep").read_bytes() == b"new"
        assert os.readlink(merged / "c" / "link") == "keep"
        assert (merged / "c" / "hard").read_bytes() == b"new"
        assert os.stat(top / "c" / "hard").st_ino == os.stat(top / "c" / "keep").st_ino
    finally:
        unmount(merged)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([("../evil", b"x", {})], "escapes"),
        ([("/etc/evil", b"x", {})], "absolute"),
        ([("ok", None, {}), ("ok/../../evil", b"x", {})], "escapes"),
        ([("link", None, {"symlink": "/"}), ("link/evil", b"x", {})], "symlink"),
        ([("h", None, {"hardlink": "../../outside"})], "escapes"),
    ],
)
def test_escaping_members_are_refused(tmp_path: Path, entries: list, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        _unpack(tmp_path, gzip.compress(_tar(entries)))
    assert not (tmp_path / "evil").exists() and not Path("/evil").exists()
    assert list((tmp_path / "layers").iterdir()) == []  # nothing half-unpacked left


def test_a_blob_that_is_not_its_digest_is_refused(tmp_path: Path) -> None:
    good = gzip.compress(_tar([("f", b"content", {})]))
    blob = tmp_path / "blobs" / "b"
    blob.parent.mkdir()
    blob.write_bytes(good)
    final = tmp_path / "layers" / hashlib.sha256(good + b"x").hexdigest()  # named for other content
    with pytest.raises(ImageError, match="corrupted"):
        unpack_layer(blob, final, "test layer")
    assert list((tmp_path / "layers").iterdir()) == []
    with pytest.raises(ImageError, match="blob missing"):
        unpack_layer(tmp_path / "blobs" / "gone", final, "test layer")
