"""`shoal image import` of oci-archive and `docker save` tarballs (made by skopeo), list and rm."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shoal.agent.imageimport import import_archive, import_rootfs
from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import ImageError

SHOAL = str(Path(sys.executable).parent / "shoal")
pytestmark = [pytest.mark.root, pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo (make deps)")]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    from support.cluster import build_busybox_rootfs

    base = tmp_path_factory.mktemp("archives")
    src = ImageStore(base / "src")
    import_rootfs(src, build_busybox_rootfs(base / "rootfs"), "busybox:1", cmd=["/bin/echo", "hi"], working_dir="/tmp")
    out = {"oci": base / "oci.tar", "docker": base / "docker.tar"}
    for kind, dest in (("oci-archive", out["oci"]), ("docker-archive", out["docker"])):
        subprocess.run(["skopeo", "copy", "-q", f"oci:{base / 'src'}:busybox:1", f"{kind}:{dest}:busybox:1"],
                       check=True, capture_output=True)
    return out


def _shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SHOAL, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind, name", [("oci", "busybox:1"), ("docker", "docker.io/library/busybox:1")])
def test_import_archive(tmp_path: Path, archives: dict[str, Path], kind: str, name: str) -> None:
    store_dir = tmp_path / "store"
    r = _shoal("image", "import", str(archives[kind]), "--image-dir", str(store_dir))
    assert r.returncode == 0, r.stderr
    assert f"Imported {name}" in r.stdout
    store = ImageStore(store_dir)
    image = store.resolve("busybox:1")  # docker.io/library/ names resolve by their short name too
    assert image.config.cmd == ("/bin/echo", "hi") and image.config.working_dir == "/tmp"
    (lower,) = store.lower_dirs(image)
    assert (lower / "bin" / "busybox").is_file()
    listed = json.loads(_shoal("image", "list", "--json", "--image-dir", str(store_dir)).stdout)
    assert [i["ref"] for i in listed] == [name] and listed[0]["size"] > 500_000
    # --tag renames; rm untags
    assert _shoal("image", "import", str(archives[kind]), "--tag", "mine:v2", "--image-dir", str(store_dir)).returncode == 0
    assert store.resolve("mine:v2").digest == image.digest
    assert _shoal("image", "rm", "mine:v2", "--image-dir", str(store_dir)).returncode == 0
    r = _shoal("image", "rm", "mine:v2", "--image-dir", str(store_dir))
    assert r.returncode == 1 and "not found" in r.stderr


def test_corrupted_archive_is_refused(tmp_path: Path, archives: dict[str, Path]) -> None:
    bad = tmp_path / "bad.tar"
    with tarfile.open(archives["oci"]) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m) if m.isfile() else None
            if f is not None and m.name.startswith("blobs/") and m.size > 100_000:
                data = bytearray(f.read())
                data[len(data) // 2] ^= 0xFF
                import io

                dst.addfile(m, io.BytesIO(bytes(data)))
            else:
                dst.addfile(m, f)
    store = ImageStore(tmp_path / "store")
    with pytest.raises(ImageError, match="digest mismatch.*corrupted"):
        import_archive(store, bad)
    assert store.descriptors() == []
    r = _shoal("image", "import", str(tmp_path / "nope.tar"), "--image-dir", str(tmp_path / "store"))
    assert r.returncode == 1 and "no such file" in r.stderr
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w"):
        pass
    with pytest.raises(ImageError, match="neither an OCI archive"):
        import_archive(store, junk)
