"""Images from files into the store: ``oci-archive`` and ``docker save`` tarballs, and rootfs directories.

Every blob an archive holds is verified by digest on its way in (``ImageStore.write_blob_stream``).
A ``docker save`` tarball has no OCI manifest: one is written for each of its images,
with the layers as they are (plain tar or gzip). A rootfs directory becomes a
one-layer image (a gzip tar written straight into the store while it is hashed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import time
from pathlib import Path
from typing import IO, Any

from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import (
    DEFAULT_PATH_ENV,
    GZIP_MAGIC,
    MAX_JSON,
    MT_OCI_CONFIG,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_TAR,
    MT_OCI_MANIFEST,
    REF_ANNOTATION,
    ZSTD_MAGIC,
    ImageError,
    ImageInfo,
    go_arch,
    normalize_ref,
    tag_name,
)

_Members = dict[str, tarfile.TarInfo]


# ------------------------------------------------------------------ archives
def import_archive(store: ImageStore, path: Path | str, tag: str | None = None) -> list[ImageInfo]:
    """Import an ``oci-archive`` (a tarred OCI layout) or a ``docker save`` tarball into ``store``.

    Images are tagged with the names the archive gives them, or ``tag`` (which needs
    an archive of one image).
    """
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ImageError(f"cannot read {path}: {exc}") from None
    with tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        has_oci = "index.json" in members and "oci-layout" in members
        has_docker = "manifest.json" in members
        if not has_oci and not has_docker:
            raise ImageError(f"{path}: neither an OCI archive (oci-layout, index.json) nor a `docker save` "
                             "tarball (manifest.json)")
        if has_oci:
            named = _import_oci_archive(store, tar, members, path, tag if not has_docker else None)
            if named or not has_docker:
                if not named:
                    raise ImageError(f"{path}: the archive's index.json names no image; give a name with --tag NAME:TAG")
                return named
        return _import_docker_archive(store, tar, members, path, tag)


def _member_json(tar: tarfile.TarFile, members: _Members, name: str, path: Path) -> Any:
    f = tar.extractfile(members[name])
    if f is None:
        raise ImageError(f"{path}: {name} is not a regular file")
    try:
        return json.loads(f.read(MAX_JSON))
    except ValueError as exc:
        raise ImageError(f"{path}: {name} is not valid JSON: {exc}") from None


def _import_oci_archive(store: ImageStore, tar: tarfile.TarFile, members: _Members, path: Path,
                        tag: str | None) -> list[ImageInfo]:
    index = _member_json(tar, members, "index.json", path)
    descs = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
    named: list[tuple[str, dict[str, Any]]] = []
    for d in descs:
        ann = d.get("annotations") or {}
        name = ann.get("io.containerd.image.name") or ann.get(REF_ANNOTATION) or ""
        if name and ("/" in name or ":" in name or "@" in name):
            named.append((name, d))
        # else: only a tag ("1"), no image name to file it under
    if tag is not None:
        if len(descs) != 1:
            raise ImageError(f"{path}: --tag needs an archive of exactly one image (it has {len(descs)})")
        named = [(tag, descs[0])]
    if not named:
        return []
    for name, m in members.items():
        if name.startswith("blobs/sha256/") and m.isfile():
            f = tar.extractfile(m)
            assert f is not None
            store.write_blob_stream(f, "sha256:" + name.rsplit("/", 1)[1], m.size, what=f"{path}: {name}")
    out: list[ImageInfo] = []
    for name, d in named:
        store.tag(name, {k: v for k, v in d.items() if k in ("mediaType", "digest", "size", "annotations", "platform")})
        out.append(store.info(tag_name(name)))
    return out


def _import_docker_archive(store: ImageStore, tar: tarfile.TarFile, members: _Members, path: Path,
                           tag: str | None) -> list[ImageInfo]:
    entries = _member_json(tar, members, "manifest.json", path)
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{path}: manifest.json lists no images")
    if tag is not None and len(entries) != 1:
        raise ImageError(f"{path}: --tag needs an archive of exactly one image (it has {len(entries)})")
    out: list[ImageInfo] = []
    for entry in entries:
        names = [tag] if tag is not None else list(entry.get("RepoTags") or [])
        if not names:
            raise ImageError(f"{path}: an image in manifest.json has no RepoTags; give a name with --tag NAME:TAG")
        cfg_name = str(entry.get("Config", ""))
        if cfg_name not in members:
            raise ImageError(f"{path}: config {cfg_name!r} named in manifest.json is not in the archive")
        cfg_file = tar.extractfile(members[cfg_name])
        assert cfg_file is not None
        config_bytes = cfg_file.read(MAX_JSON)
        layers = [_import_docker_layer(store, tar, members, path, str(name)) for name in entry.get("Layers") or []]
        manifest_digest, manifest_size = _write_manifest(store, config_bytes, layers)
        for name in names:
            store.tag(name, {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size})
            out.append(store.info(tag_name(name)))
    return out


def _import_docker_layer(store: ImageStore, tar: tarfile.TarFile, members: _Members, path: Path,
                         layer_name: str) -> dict[str, Any]:
    """Store one layer of a ``docker save`` tarball; its OCI descriptor."""
    m = members.get(layer_name)
    f = tar.extractfile(m) if m is not None else None
    if f is None:
        raise ImageError(f"{path}: layer {layer_name!r} named in manifest.json is not in the archive")
    head = f.read(4)
    f.seek(0)
    if head == ZSTD_MAGIC:
        raise ImageError(f"{path}: layer {layer_name} is zstd-compressed, which is not supported")
    media_type = MT_OCI_LAYER_GZIP if head[:2] == GZIP_MAGIC else MT_OCI_LAYER_TAR
    digest = store.write_blob_stream(f, None, what=f"{path}: {layer_name}")
    return {"mediaType": media_type, "digest": digest, "size": store.blob_path(digest).stat().st_size}


def _write_manifest(store: ImageStore, config: bytes, layers: list[dict[str, Any]]) -> tuple[str, int]:
    """Store a config blob and an OCI manifest naming it and ``layers``; (manifest digest, size)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": store.write_blob_bytes(config), "size": len(config)},
        "layers": layers,
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    return store.write_blob_bytes(body), len(body)


# ------------------------------------------------------------ rootfs directories
class _HashingWriter:
    """Writes through to ``f``, hashing what passes (the layer's uncompressed digest, its diff_id)."""

    __slots__ = ("_f", "hasher")

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self._f.write(data)
        return len(data)

    def flush(self) -> None:
        self._f.flush()


def import_rootfs(
    store: ImageStore,
    src: Path | str,
    ref: str,
    *,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    working_dir: str = "/",
    user: str = "",
) -> ImageInfo:
    """Pack a directory into a one-layer image (gzip tar) in ``store`` and tag it ``ref``."""
    src = Path(src)
    if not src.is_dir():
        raise ImageError(f"cannot import {src}: not a directory")
    if ref.startswith("/") or not ref:
        raise ImageError(f"invalid image reference {ref!r}; use name:tag")
    name, tag = normalize_ref(ref)
    if tag.startswith("@"):
        raise ImageError(f"cannot tag an import with a digest ({ref}); use name:tag")
    full_ref = f"{name}:{tag}"

    with store.new_blob() as blob:
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=6, mtime=0) as gz:  # type: ignore[arg-type]
            uncompressed = _HashingWriter(gz)
            with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                tar.add(str(src), arcname=".", recursive=True)
        layer_digest = blob.commit()
        layer_size = blob.count
    diff_id = "sha256:" + uncompressed.hasher.hexdigest()

    if cmd is None and entrypoint is None and (src / "bin" / "sh").exists():
        cmd = ["/bin/sh"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "created": now,
        "architecture": go_arch(),
        "os": "linux",
        "config": {
            "Env": list(env) if env is not None else [DEFAULT_PATH_ENV],
            **({"Entrypoint": list(entrypoint)} if entrypoint else {}),
            **({"Cmd": list(cmd)} if cmd else {}),
            "WorkingDir": working_dir,
            **({"User": user} if user else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "created_by": f"shoal image import-rootfs {src}"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    layers = [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}]
    manifest_digest, manifest_size = _write_manifest(store, config_bytes, layers)
    store.tag(full_ref, {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size})
    return ImageInfo(full_ref, manifest_digest, manifest_size + len(config_bytes) + layer_size)
