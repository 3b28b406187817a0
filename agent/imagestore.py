"""The agent's local image store: an OCI image layout directory.

Layout (what ``skopeo copy ... oci:DIR:name:tag`` and umoci write)::

    DIR/oci-layout                    {"imageLayoutVersion": "1.0.0"}
    DIR/index.json                    manifests, each annotated with
                                      org.opencontainers.image.ref.name = "name:tag"
    DIR/blobs/sha256/<hex>            manifests, configs and layer tarballs
    DIR/layers/<hex>/                 shoal's addition: each layer unpacked once,
                                      named by its blob digest, used as an
                                      overlayfs lower directory

The store reads and writes the layout (blobs verified by digest, tags under a lock
file other processes share), resolves references to images, keeps the cache of
unpacked layers (``layers.py`` unpacks one; within one process a per-layer lock
avoids unpacking it twice) and collects garbage. Images come in through
``imageimport.py`` (archives, rootfs directories) and ``imagepull.py`` (registries).

An image reference that is an absolute path names a plain rootfs directory,
used read-only as the single lower layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shoal.agent.imagetypes import (
    DEFAULT_PATH_ENV,
    INDEX_TYPES,
    LAYER_TYPES,
    MT_OCI_INDEX,
    MT_OCI_LAYER_GZIP,
    REF_ANNOTATION,
    GcReport,
    Image,
    ImageConfig,
    ImageError,
    ImageInfo,
    ImageNotFound,
    Layer,
    digest_hex,
    normalize_ref,
    pick_platform,
    ref_candidates,
    tag_name,
)
from shoal.agent.layers import TEMP_PREFIX, unpack_layer

DEFAULT_ROOT = Path("/var/lib/shoal/images")

Descriptors = list[dict[str, Any]]


@dataclass(slots=True)
class _IndexCache:
    key: tuple[int, int, int] = (0, 0, 0)
    manifests: Descriptors = field(default_factory=list)


class BlobWriter:
    """A blob being written into the store: hashed as it is written, stored under its digest by :meth:`commit`.

    A file object (``write``/``flush``), so a gzip or tar stream can write straight into it.
    Made by :meth:`ImageStore.new_blob`, which removes it if it was never committed.
    """

    __slots__ = ("_store", "_f", "_tmp", "hasher", "count")

    def __init__(self, store: ImageStore, f: BinaryIO, tmp: Path) -> None:
        self._store = store
        self._f = f
        self._tmp = tmp
        self.hasher = hashlib.sha256()
        self.count = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.count += len(data)
        self._f.write(data)
        return len(data)

    def flush(self) -> None:
        self._f.flush()

    def commit(self) -> str:
        """Make the blob durable and visible under its digest; returns the digest."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        final = self._store.blob_path(self.digest)
        if not final.exists():
            os.rename(self._tmp, final)
        return self.digest


class ImageStore:
    """A local OCI image layout plus a cache of unpacked layers."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self._index = _IndexCache()
        self._blob_json: dict[str, dict[str, Any]] = {}  # digest -> parsed manifest/config (immutable)
        self._resolved: dict[tuple[str, str], Image] = {}  # (ref, manifest digest) -> Image
        self._lock = threading.Lock()  # guards the dicts above and _layer_locks; never held for I/O
        self._layer_locks: dict[str, threading.Lock] = {}

    # ----------------------------------------------------------------- paths
    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest_hex(digest)

    def layer_dir(self, digest: str) -> Path:
        return self.layers_dir / digest_hex(digest)

    def _not_found(self, ref: str) -> ImageError:
        return ImageNotFound(
            f"image {ref} not found in {self.root}; pull it from a registry (name it as HOST[:PORT]/NAME:TAG), "
            f"import it with `shoal image import FILE` or `shoal image import-rootfs DIR {ref}`, or copy it in "
            f"with `skopeo copy ... oci:{self.root}:{ref}`"
        )

    # --------------------------------------------------------------- reading
    def _index_manifests(self) -> Descriptors:
        path = self.root / "index.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if self._index.key == key:
                return self._index.manifests
        try:
            index = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot read {path}: {exc}") from exc
        manifests = list(index.get("manifests") or [])
        with self._lock:
            self._index = _IndexCache(key, manifests)
        return manifests

    def read_blob_json(self, digest: str, what: str) -> dict[str, Any]:
        """A manifest, index or config blob, verified by digest and parsed (cached: blobs never change)."""
        with self._lock:
            cached = self._blob_json.get(digest)
        if cached is not None:
            return cached
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{what} blob {digest} is missing from {self.blobs_dir}; re-import the image") from None
        if hashlib.sha256(data).hexdigest() != digest_hex(digest):
            raise ImageError(f"{what} blob {digest} in {self.blobs_dir} is corrupted (digest mismatch); re-import the image")
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise ImageError(f"{what} blob {digest} is not valid JSON: {exc}") from exc
        with self._lock:
            self._blob_json[digest] = parsed
        return parsed

    def _find_descriptor(self, ref: str) -> dict[str, Any] | None:
        manifests = self._index_manifests()
        name, tag = normalize_ref(ref)
        if tag.startswith("@"):
            for desc in manifests:
                if desc.get("digest") == tag[1:]:
                    return desc
            return None
        by_ref = {(d.get("annotations") or {}).get(REF_ANNOTATION): d for d in manifests}
        for candidate in ref_candidates(ref):
            if candidate in by_ref:
                return by_ref[candidate]
        # Stored as docker.io/library/NAME:TAG (a `docker save` archive), asked for as NAME:TAG.
        for stored, desc in by_ref.items():
            if stored and ref in ref_candidates(stored):
                return desc
        for stored, desc in by_ref.items():
            if stored and tag and f"{name}:{tag}" in ref_candidates(stored):
                return desc
        return None

    def resolve(self, ref: str) -> Image:
        """Look up ``name:tag`` (or an absolute rootfs path) and read its manifest and config."""
        if not ref:
            raise ImageError("no image given")
        if ref.startswith("/"):
            path = Path(ref)
            if not path.is_dir():
                raise ImageError(f"rootfs directory {ref} does not exist")
            return Image(ref=ref, digest="", config=ImageConfig(env=(DEFAULT_PATH_ENV,)), rootfs_dir=path)
        desc = self._find_descriptor(ref)
        if desc is None:
            raise self._not_found(ref)
        digest = str(desc.get("digest", ""))
        with self._lock:
            cached = self._resolved.get((ref, digest))
        if cached is not None:
            return cached
        manifest = self.read_blob_json(digest, f"image {ref}: manifest")
        seen = 0
        while manifest.get("mediaType", desc.get("mediaType")) in INDEX_TYPES or "manifests" in manifest:
            seen += 1
            if seen > 4:
                raise ImageError(f"image {ref}: nested image indexes are too deep")
            sub = pick_platform(manifest, ref)
            manifest = self.read_blob_json(str(sub["digest"]), f"image {ref}: manifest")
        cfg_desc = manifest.get("config") or {}
        config = self.read_blob_json(str(cfg_desc.get("digest", "")), f"image {ref}: config")
        layers: list[Layer] = []
        for ld in manifest.get("layers") or []:
            media_type = str(ld.get("mediaType", MT_OCI_LAYER_GZIP))
            if media_type not in LAYER_TYPES:
                raise ImageError(
                    f"image {ref}: layer {ld.get('digest')} has unsupported media type {media_type} "
                    "(supported: tar and tar+gzip)"
                )
            layers.append(Layer(str(ld["digest"]), media_type, int(ld.get("size", 0))))
        c = config.get("config") or {}
        image = Image(
            ref=ref,
            digest=digest,
            config=ImageConfig(
                entrypoint=tuple(c.get("Entrypoint") or ()),
                cmd=tuple(c.get("Cmd") or ()),
                env=tuple(c.get("Env") or ()),
                working_dir=str(c.get("WorkingDir") or ""),
                user=str(c.get("User") or ""),
            ),
            layers=tuple(layers),
        )
        with self._lock:
            self._resolved[(ref, digest)] = image
        return image

    def list(self) -> list[ImageInfo]:
        """Every tagged image: reference, manifest digest and total size of its blobs."""
        out: list[ImageInfo] = []
        for desc in self._index_manifests():
            ref = (desc.get("annotations") or {}).get(REF_ANNOTATION)
            if not ref:
                continue
            digest = str(desc.get("digest", ""))
            size = int(desc.get("size", 0))
            try:
                image = self.resolve(ref)
                manifest = self.read_blob_json(digest, f"image {ref}: manifest")
                size += int((manifest.get("config") or {}).get("size", 0))
                size += sum(layer.size for layer in image.layers)
            except ImageError:
                pass  # listed with what we know; resolve() will explain the problem
            out.append(ImageInfo(ref, digest, size))
        return out

    def info(self, ref: str) -> ImageInfo:
        """What :meth:`list` says of the image tagged ``ref`` (as index.json writes it)."""
        return next((i for i in self.list() if i.ref == ref), ImageInfo(ref, "", 0))

    def descriptors(self) -> Descriptors:
        """The tagged descriptors of index.json (copies)."""
        return [dict(d) for d in self._index_manifests() if (d.get("annotations") or {}).get(REF_ANNOTATION)]

    # ---------------------------------------------------------------- layers
    def layers_ready(self, image: Image) -> bool:
        if image.rootfs_dir is not None:
            return True
        return all(self.layer_dir(layer.digest).is_dir() for layer in image.layers)

    def lower_dirs(self, image: Image) -> list[Path]:
        """Overlayfs lower directories, topmost first. Unpacks missing layers (blocking)."""
        if image.rootfs_dir is not None:
            return [image.rootfs_dir]
        if not image.layers:
            raise ImageError(f"image {image.ref} has no layers")
        dirs = [self.ensure_layer(layer, image.ref) for layer in image.layers]
        dirs.reverse()
        return dirs

    def _layer_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            lock = self._layer_locks.get(digest)
            if lock is None:
                lock = self._layer_locks[digest] = threading.Lock()
            return lock

    def ensure_layer(self, layer: Layer, ref: str = "") -> Path:
        """Unpack one layer into ``layers/<hex>/`` unless it already is there."""
        final = self.layer_dir(layer.digest)
        if final.is_dir():
            return final
        with self._layer_lock(layer.digest):
            if not final.is_dir():
                what = f"image {ref} layer {layer.digest}" if ref else f"layer {layer.digest}"
                unpack_layer(self.blob_path(layer.digest), final, what)
        return final

    # ----------------------------------------------------------------- blobs
    def _init_layout(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        index = self.root / "index.json"
        if not index.exists():
            _atomic_write(index, json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}).encode())

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` as a blob; refuse it if ``digest`` is given and does not match. Returns the digest."""
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest is not None and actual != digest:
            raise ImageError(f"blob {digest} is corrupted: its content has digest {actual}; refusing it")
        self._init_layout()
        path = self.blob_path(actual)
        if not path.exists():
            _atomic_write(path, data)
        return actual

    @contextlib.contextmanager
    def new_blob(self) -> Iterator[BlobWriter]:
        """A :class:`BlobWriter` into a temporary file of the store; gone unless committed."""
        self._init_layout()
        tmp = self.blobs_dir / f"{TEMP_PREFIX}blob-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                yield BlobWriter(self, f, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def write_blob_stream(self, src: Any, digest: str | None = None, size: int | None = None,
                          *, what: str = "blob") -> str:
        """Copy a stream into the store while hashing it; the blob appears only if its digest matches.

        ``digest`` None: the blob is named by what it hashes to (an archive's layer). Returns the digest.
        """
        if digest is not None and self.has_blob(digest):
            return digest
        with self.new_blob() as blob:
            while chunk := src.read(1 << 20):
                if size is not None and blob.count + len(chunk) > size:
                    raise ImageError(f"{what}: more data than its declared size of {size} bytes; refusing it")
                blob.write(chunk)
            if digest is not None and blob.digest != digest:
                raise ImageError(f"{what}: digest mismatch: the content has digest {blob.digest}, expected {digest}; "
                                 "the blob is corrupted (refusing it)")
            if size is not None and blob.count != size:
                raise ImageError(f"{what}: got {blob.count} bytes, its descriptor says {size}; refusing it")
            return blob.commit()

    # ------------------------------------------------------------------ tags
    def _edit_index(self, edit: Callable[[Descriptors], Descriptors | None]) -> None:
        """Rewrite index.json's descriptors with ``edit`` (None: leave it) under the lock file every process takes."""
        index_path = self.root / "index.json"
        with open(self.root / ".index.lock", "a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            index = json.loads(index_path.read_bytes())
            manifests = edit(list(index.get("manifests") or []))
            if manifests is None:
                return
            index["manifests"] = manifests
            index.setdefault("schemaVersion", 2)
            _atomic_write(index_path, json.dumps(index, indent=2).encode())

    def tag(self, ref: str, descriptor: dict[str, Any]) -> None:
        """Point ``ref`` at ``descriptor`` (whose blob must already be stored)."""
        if not self.has_blob(str(descriptor.get("digest", ""))):
            raise ImageError(f"cannot tag {ref}: blob {descriptor.get('digest')} is not in the store")
        self._init_layout()
        name = tag_name(ref)
        desc = dict(descriptor)
        desc["annotations"] = {**(desc.get("annotations") or {}), REF_ANNOTATION: name}
        self._edit_index(lambda descs: [*(d for d in descs if _ref_of(d) != name), desc])

    def remove(self, ref: str) -> bool:
        """Untag ``ref`` (blobs and unpacked layers stay until garbage-collected)."""
        desc = self._find_descriptor(ref)
        if desc is None:
            return False
        tagged = _ref_of(desc)
        self._edit_index(lambda descs: [d for d in descs if _ref_of(d) != tagged])
        return True

    # ------------------------------------------------- garbage collection
    def image_blobs(self, digest: str) -> set[str]:
        """Every blob (hex) an image needs: its index/manifests, config and layers (those stored)."""
        out: set[str] = set()
        todo = [digest]
        while todo:
            d = todo.pop()
            try:
                hexd = digest_hex(d)
            except ImageError:
                continue
            if hexd in out:
                continue
            out.add(hexd)
            if not self.has_blob(d):
                continue
            try:
                doc = self.read_blob_json(d, "image")
            except ImageError:
                continue
            if not isinstance(doc, dict):
                continue
            for child in doc.get("manifests") or []:
                if self.has_blob(str(child.get("digest", ""))):
                    todo.append(str(child.get("digest", "")))
            cfg = doc.get("config") or {}
            if cfg.get("digest"):
                with contextlib.suppress(ImageError):
                    out.add(digest_hex(str(cfg["digest"])))
            for layer in doc.get("layers") or []:
                with contextlib.suppress(ImageError):
                    out.add(digest_hex(str(layer.get("digest", ""))))
        return out

    def gc(self, *, in_use: set[str] | frozenset[str] = frozenset(), untag: list[str] | tuple[str, ...] = (),
           grace: float = 600.0) -> GcReport:
        """Untag ``untag`` (unless in use), then delete blobs and unpacked layers no tagged or in-use image needs.

        ``in_use``: manifest digests of images that running tasks use. Blobs and
        layer directories younger than ``grace`` seconds (by ctime) are kept: an
        import or pull in another process may not have tagged them yet.
        """
        report = GcReport()
        if not self.root.is_dir():
            return report
        if untag and (self.root / "index.json").exists():
            untag_names = {tag_name(r) for r in untag}

            def drop_untagged(descs: Descriptors) -> Descriptors | None:
                keep_descs = []
                for d in descs:
                    if _ref_of(d) in untag_names and d.get("digest") not in in_use:
                        report.untagged.append(_ref_of(d))
                    else:
                        keep_descs.append(d)
                return keep_descs if report.untagged else None

            self._edit_index(drop_untagged)
        keep: set[str] = set()
        for d in [*(str(x.get("digest", "")) for x in self._index_manifests()), *in_use]:
            keep |= self.image_blobs(d)
        cutoff = time.time() - grace
        if self.blobs_dir.is_dir():
            for entry in os.scandir(self.blobs_dir):
                if entry.name in keep:
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_ctime >= cutoff:
                        continue
                    os.unlink(entry.path)
                    report.blobs += 1
                    report.bytes += st.st_size
        if self.layers_dir.is_dir():
            for entry in os.scandir(self.layers_dir):
                if entry.name in keep or entry.name.startswith(TEMP_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_ctime >= cutoff:
                        continue
                    shutil.rmtree(entry.path)
                    report.layers += 1
        with self._lock:
            self._blob_json.clear()
            self._resolved.clear()
        return report


def _ref_of(descriptor: dict[str, Any]) -> str:
    """The reference a descriptor of index.json is tagged with ("" if none)."""
    return str((descriptor.get("annotations") or {}).get(REF_ANNOTATION) or "")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
