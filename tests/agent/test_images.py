"""The OCI image-layout store: import a rootfs, resolve, tags, the unpacked-layer cache, digests."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from shoal.agent.drivers.base import DriverError
from shoal.agent.imageimport import import_rootfs
from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import REF_ANNOTATION, ImageError, normalize_ref


def test_normalize_ref() -> None:
    assert normalize_ref("busybox") == ("busybox", "latest")
    assert normalize_ref("busybox:1.36") == ("busybox", "1.36")
    assert normalize_ref("localhost:5000/app") == ("localhost:5000/app", "latest")
    assert normalize_ref("localhost:5000/app:v2") == ("localhost:5000/app", "v2")
    assert normalize_ref("app@sha256:abc") == ("app", "@sha256:abc")


def test_import_then_resolve(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    info = import_rootfs(store, busybox_rootfs, "busybox:1", cmd=["/bin/sh", "-c", "echo hi"],
                         env=["A=1", "PATH=/bin"], working_dir="/tmp", user="app")
    assert info.ref == "busybox:1" and info.digest.startswith("sha256:") and info.size > 100_000
    image = store.resolve("busybox:1")
    assert image.digest == info.digest
    assert image.config.cmd == ("/bin/sh", "-c", "echo hi")
    assert image.config.entrypoint == ()
    assert image.config.env == ("A=1", "PATH=/bin")
    assert image.config.working_dir == "/tmp" and image.config.user == "app"
    assert len(image.layers) == 1 and image.layers[0].media_type.endswith("tar+gzip")
    # The layout is a real OCI layout.
    layout = json.loads((tmp_path / "store" / "oci-layout").read_text())
    assert layout == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert [m["annotations"][REF_ANNOTATION] for m in index["manifests"]] == ["busybox:1"]
    # Defaults when nothing is given: /bin/sh as Cmd, a PATH.
    import_rootfs(store, busybox_rootfs, "busybox")
    default = store.resolve("busybox:latest")
    assert default.config.cmd == ("/bin/sh",) and any(e.startswith("PATH=") for e in default.config.env)
    assert store.resolve("busybox").digest == default.digest
    assert store.resolve("docker.io/library/busybox:latest").digest == default.digest
    assert store.resolve(f"busybox@{default.digest}").digest == default.digest
    listed = {i.ref: i for i in store.list()}
    assert set(listed) == {"busybox:1", "busybox:latest"}
    assert listed["busybox:1"].size == info.size


def test_reimport_replaces_the_tag(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    first = import_rootfs(store, busybox_rootfs, "app:v1")
    (busybox_rootfs / "etc" / "version").write_text("2\n")
    second = import_rootfs(store, busybox_rootfs, "app:v1")
    assert first.digest != second.digest
    assert [i.digest for i in store.list()] == [second.digest]
    assert store.resolve("app:v1").digest == second.digest
    assert store.remove("app:v1") and store.list() == []
    assert not store.remove("app:v1")


def test_missing_image_message(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "nowhere")
    with pytest.raises(DriverError) as err:
        store.resolve("busybox:1")
    assert "image busybox:1 not found in" in str(err.value)
    assert "shoal image import-rootfs" in str(err.value)
    with pytest.raises(ImageError, match="does not exist"):
        store.resolve(str(tmp_path / "no-such-rootfs"))


def test_plain_rootfs_directory(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store.resolve(str(busybox_rootfs))
    assert image.rootfs_dir == busybox_rootfs and image.layers == ()
    assert store.lower_dirs(image) == [busybox_rootfs]


def test_layers_are_unpacked_once_and_shared(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    import_rootfs(store, busybox_rootfs, "a:1")
    import_rootfs(store, busybox_rootfs, "b:1")  # same content: same layer blob
    a, b = store.resolve("a:1"), store.resolve("b:1")
    assert a.layers[0].digest == b.layers[0].digest
    assert not store.layers_ready(a)
    lowers_a = store.lower_dirs(a)
    marker = lowers_a[0] / "bin" / "busybox"
    inode = marker.stat().st_ino
    assert store.lower_dirs(b) == lowers_a
    assert marker.stat().st_ino == inode  # not unpacked again
    assert store.layers_ready(b)
    assert [p.name for p in (tmp_path / "store" / "layers").iterdir()] == [a.layers[0].digest.split(":")[1]]
    assert (lowers_a[0] / "bin" / "sh").is_symlink()
    assert os.readlink(lowers_a[0] / "bin" / "sh") == "/bin/busybox"
    assert (lowers_a[0] / "etc" / "passwd").read_text().startswith("root:")


def test_concurrent_unpacks_of_one_layer(tmp_path: Path, busybox_rootfs: Path) -> None:
    import concurrent.futures

    store = ImageStore(tmp_path / "store")
    import_rootfs(store, busybox_rootfs, "a:1")
    image = store.resolve("a:1")
    other = ImageStore(tmp_path / "store")  # a second agent process, as far as locking goes
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: s.lower_dirs(image), [store, other, store, other]))
    assert all(r == results[0] for r in results)
    assert len(list((tmp_path / "store" / "layers").iterdir())) == 1  # no temp dirs left


def test_corrupted_layer_is_refused(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    import_rootfs(store, busybox_rootfs, "a:1")
    image = store.resolve("a:1")
    blob = store.blob_path(image.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupted"):
        store.lower_dirs(image)
    layers = tmp_path / "store" / "layers"
    assert not layers.exists() or list(layers.iterdir()) == []  # nothing half-unpacked left


def test_corrupted_config_is_refused(tmp_path: Path, busybox_rootfs: Path) -> None:
    store = ImageStore(tmp_path / "store")
    import_rootfs(store, busybox_rootfs, "a:1")
    manifest = json.loads(store.blob_path(store.resolve("a:1").digest).read_bytes())
    config_blob = store.blob_path(manifest["config"]["digest"])
    config_blob.write_bytes(config_blob.read_bytes().replace(b"/bin/sh", b"/bin/xx"))
    with pytest.raises(ImageError, match="corrupted"):
        ImageStore(tmp_path / "store").resolve("a:1")  # a fresh store: no cached config


# ---------------------------------------------------------------- hand-made images
def _blob(store_root: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (store_root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (store_root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _make_image(store_root: Path, ref: str, layers: list[bytes], gzipped: list[bool]) -> None:
    """Write an OCI layout by hand (as skopeo would), with the given layer tarballs."""
    layer_descs = []
    diff_ids = []
    for raw, gz in zip(layers, gzipped):
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        data = gzip.compress(raw) if gz else raw
        mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else "")
        layer_descs.append({"mediaType": mt, **_blob(store_root, data)})
    config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg = _blob(store_root, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg}, "layers": layer_descs}
    man = _blob(store_root, json.dumps(manifest).encode())
    (store_root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **man, "annotations": {REF_ANNOTATION: ref}}]}
    (store_root / "index.json").write_text(json.dumps(index))


def test_unsupported_layer_media_type(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _make_image(root, "z:1", [b"never unpacked"], [True])
    manifest_desc = json.loads((root / "index.json").read_text())["manifests"][0]
    manifest_path = root / "blobs" / "sha256" / manifest_desc["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    new = _blob(root, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{**manifest_desc, **new}]}
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="unsupported media type"):
        ImageStore(root).resolve("z:1")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")
def test_skopeo_reads_and_writes_the_same_layout(tmp_path: Path, busybox_rootfs: Path) -> None:
    ours = ImageStore(tmp_path / "ours")
    info = import_rootfs(ours, busybox_rootfs, "busybox:latest")
    theirs = tmp_path / "theirs"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "-q", f"oci:{ours.root}:busybox:latest", f"oci:{theirs}:tools/busybox:1.0"],
        check=True, capture_output=True, timeout=120,
    )
    store = ImageStore(theirs)
    image = store.resolve("tools/busybox:1.0")
    assert image.config.cmd == ("/bin/sh",)
    assert image.layers[0].digest == ours.resolve("busybox:latest").layers[0].digest
    assert [i.ref for i in store.list()] == ["tools/busybox:1.0"]
    assert info.digest.startswith("sha256:")
