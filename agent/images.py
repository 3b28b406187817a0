"""The agent's local image store: an OCI image layout directory.

Layout (what ``skopeo copy ... oci:DIR:name:tag`` and umoci write)::

    DIR/oci-layout                    {"imageLayoutVersion": "1.0.0"}
    DIR/index.json                    manifests, each annotated with
                                      org.opencontainers.image.ref.name = "name:tag"
    DIR/blobs/sha256/<hex>            manifests, configs and layer tarballs
    DIR/layers/<hex>/                 shoal's addition: each layer unpacked once,
                                      named by its blob digest, used as an
                                      overlayfs lower directory

Layers are unpacked into a temporary directory and renamed into place, so two
agents (or two tasks) starting at the same time never see half a layer; within
one process a per-layer lock avoids unpacking twice. OCI whiteouts become what
overlayfs expects: ``.wh.NAME`` a 0/0 character device, ``.wh..wh..opq`` the
``trusted.overlay.opaque=y`` xattr on its directory.

An image reference that is an absolute path names a plain rootfs directory,
used read-only as the single lower layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import platform
import shutil
import stat
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from shoal.agent.drivers.base import DriverError

DEFAULT_ROOT = Path("/var/lib/shoal/images")
REF_ANNOTATION = "org.opencontainers.image.ref.name"
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
LAYER_TYPES = (
    MT_OCI_LAYER_TAR, MT_OCI_LAYER_GZIP, MT_DOCKER_LAYER_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_JSON = 16 << 20  # manifests, configs and archive indexes larger than this are refused


class ImageError(DriverError):
    """An image is missing, malformed or corrupted."""


class ImageNotFound(ImageError):
    """The local store has no image by that name (a registry may have it)."""


@dataclass(slots=True, frozen=True)
class ImageConfig:
    """The parts of an image's config that decide how its process runs."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""


@dataclass(slots=True, frozen=True)
class Layer:
    digest: str  # "sha256:<hex>" of the blob as stored
    media_type: str
    size: int


@dataclass(slots=True, frozen=True)
class Image:
    ref: str
    digest: str  # manifest digest; "" for a plain rootfs directory
    config: ImageConfig
    layers: tuple[Layer, ...] = ()  # bottom first, as in the manifest
    rootfs_dir: Path | None = None  # set when the reference is a plain rootfs directory


@dataclass(slots=True, frozen=True)
class ImageInfo:
    ref: str
    digest: str
    size: int  # manifest + config + layer blobs, in bytes


@dataclass(slots=True)
class GcReport:
    untagged: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    layers: int = 0


@dataclass(slots=True)
class _IndexCache:
    key: tuple[int, int, int] = (0, 0, 0)
    manifests: list[dict[str, Any]] = field(default_factory=list)


def normalize_ref(ref: str) -> tuple[str, str]:
    """Split ``name[:tag][@digest]`` into (name, tag-or-digest); the tag defaults to latest."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:  # a colon before the last slash is a registry port
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def _ref_candidates(ref: str) -> list[str]:
    """Annotation values that may name ``ref`` (full name first, then without docker.io)."""
    name, tag = normalize_ref(ref)
    names = [name]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if name.startswith(prefix):
            names.append(name[len(prefix) :])
    out: list[str] = []
    for n in names:
        out.append(f"{n}:{tag}")
    if ref not in out:
        out.append(ref)
    return out


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r} (only sha256 is supported)")
    return hexpart


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it."""

    __slots__ = ("_f", "hasher", "count")

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hasher = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hasher.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _HashingWriter:
    __slots__ = ("_f", "hasher", "count")

    def __init__(self, f: IO[bytes] | None) -> None:
        self._f = f
        self.hasher = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.count += len(data)
        if self._f is not None:
            self._f.write(data)
        return len(data)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()


def _safe_member_path(name: str, what: str) -> PurePosixPath | None:
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
            rel = _safe_member_path(m.name, self.what)
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
                target_rel = _safe_member_path(m.linkname, self.what)
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


def _go_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def pick_platform(index: dict[str, Any], ref: str, arch: str | None = None) -> dict[str, Any]:
    """The entry of an image index for this host (linux and its architecture; attestations skipped)."""
    arch = arch or _go_arch()
    found = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        found.append(f"{plat.get('os', '?')}/{plat.get('architecture', '?')}")
        if plat.get("os", "linux") == "linux" and plat.get("architecture", arch) == arch:
            return desc
    raise ImageError(f"image {ref} has no manifest for linux/{arch} (it has: {', '.join(found) or 'none'})")


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
        return self.blobs_dir / _hex(digest)

    def layer_dir(self, digest: str) -> Path:
        return self.layers_dir / _hex(digest)

    def _not_found(self, ref: str) -> ImageError:
        return ImageNotFound(
            f"image {ref} not found in {self.root}; pull it from a registry (name it as HOST[:PORT]/NAME:TAG), "
            f"import it with `shoal image import FILE` or `shoal image import-rootfs DIR {ref}`, or copy it in "
            f"with `skopeo copy ... oci:{self.root}:{ref}`"
        )

    # --------------------------------------------------------------- reading
    def _index_manifests(self) -> list[dict[str, Any]]:
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

    def _read_blob_json(self, digest: str, what: str) -> dict[str, Any]:
        with self._lock:
            cached = self._blob_json.get(digest)
        if cached is not None:
            return cached
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{what} blob {digest} is missing from {self.blobs_dir}; re-import the image") from None
        if hashlib.sha256(data).hexdigest() != _hex(digest):
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
        for candidate in _ref_candidates(ref):
            if candidate in by_ref:
                return by_ref[candidate]
        # Stored as docker.io/library/NAME:TAG (a `docker save` archive), asked for as NAME:TAG.
        for stored, desc in by_ref.items():
            if stored and ref in _ref_candidates(stored):
                return desc
        for stored, desc in by_ref.items():
            if stored and tag and f"{name}:{tag}" in _ref_candidates(stored):
                return desc
        return None

    def _pick_platform(self, index: dict[str, Any], ref: str) -> dict[str, Any]:
        return pick_platform(index, ref)

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
        manifest = self._read_blob_json(digest, f"image {ref}: manifest")
        seen = 0
        while manifest.get("mediaType", desc.get("mediaType")) in INDEX_TYPES or "manifests" in manifest:
            seen += 1
            if seen > 4:
                raise ImageError(f"image {ref}: nested image indexes are too deep")
            sub = self._pick_platform(manifest, ref)
            manifest = self._read_blob_json(str(sub["digest"]), f"image {ref}: manifest")
        cfg_desc = manifest.get("config") or {}
        config = self._read_blob_json(str(cfg_desc.get("digest", "")), f"image {ref}: config")
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

    # ------------------------------------------------------------- unpacking
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
            if final.is_dir():
                return final
            self._unpack(layer, final, ref)
        return final

    def _unpack(self, layer: Layer, final: Path, ref: str) -> None:
        what = f"image {ref} layer {layer.digest}" if ref else f"layer {layer.digest}"
        blob = self.blob_path(layer.digest)
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_dirs()
        tmp = self.layers_dir / f".tmp-{final.name[:16]}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(mode=0o755)
        try:
            try:
                f = open(blob, "rb")
            except FileNotFoundError:
                raise ImageError(f"{what}: blob missing from {self.blobs_dir}; re-import the image") from None
            with f:
                head = f.read(4)
                f.seek(0)
                if head == b"\x28\xb5\x2f\xfd":
                    raise ImageError(f"{what}: zstd-compressed layers are not supported; use gzip or plain tar")
                reader = _HashingReader(f)
                try:
                    with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                        _Unpacker(tmp, what).apply(tar)
                    reader.drain()
                except ImageError:
                    reader.drain()
                    if reader.hasher.hexdigest() != final.name:
                        raise ImageError(f"{what}: blob is corrupted (sha256 mismatch); re-import the image") from None
                    raise
                except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
                    reader.drain()
                    if reader.hasher.hexdigest() != final.name:
                        raise ImageError(f"{what}: blob is corrupted (sha256 mismatch); re-import the image") from None
                    raise ImageError(f"{what}: cannot unpack: {exc}") from exc
            actual = reader.hasher.hexdigest()
            if actual != final.name:
                raise ImageError(
                    f"{what}: blob is corrupted (sha256 is {actual}, expected {final.name}); re-import the image"
                )
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # somebody else won the race: fine; anything else is an error
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _remove_stale_temp_dirs(self, max_age: float = 3600.0) -> None:
        """Remove unpack directories abandoned by a crash (older than ``max_age`` seconds)."""
        cutoff = time.time() - max_age
        for entry in os.scandir(self.layers_dir):
            if entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        shutil.rmtree(entry.path, ignore_errors=True)

    # -------------------------------------------------------------- writing
    def _init_layout(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            _atomic_write(layout, json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        index = self.root / "index.json"
        if not index.exists():
            _atomic_write(index, json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}).encode())

    def _write_blob(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest, len(data)

    def import_rootfs(
        self,
        src: Path | str,
        ref: str,
        *,
        entrypoint: list[str] | None = None,
        cmd: list[str] | None = None,
        env: list[str] | None = None,
        working_dir: str = "/",
        user: str = "",
    ) -> ImageInfo:
        """Pack a directory into a one-layer image (gzip tar) and tag it ``ref`` in index.json."""
        src = Path(src)
        if not src.is_dir():
            raise ImageError(f"cannot import {src}: not a directory")
        if ref.startswith("/") or not ref:
            raise ImageError(f"invalid image reference {ref!r}; use name:tag")
        name, tag = normalize_ref(ref)
        if tag.startswith("@"):
            raise ImageError(f"cannot tag an import with a digest ({ref}); use name:tag")
        full_ref = f"{name}:{tag}"
        self._init_layout()

        tmp_blob = self.blobs_dir / f".tmp-import-{uuid.uuid4().hex}"
        try:
            with open(tmp_blob, "wb") as raw:
                compressed = _HashingWriter(raw)
                with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as gz:  # type: ignore[arg-type]
                    uncompressed = _HashingWriter(gz)
                    with tarfile.open(fileobj=uncompressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                        tar.add(str(src), arcname=".", recursive=True)
            layer_digest = "sha256:" + compressed.hasher.hexdigest()
            diff_id = "sha256:" + uncompressed.hasher.hexdigest()
            layer_size = compressed.count
            final_blob = self.blob_path(layer_digest)
            if final_blob.exists():
                tmp_blob.unlink()
            else:
                os.rename(tmp_blob, final_blob)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_blob.unlink()

        if cmd is None and entrypoint is None and (src / "bin" / "sh").exists():
            cmd = ["/bin/sh"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        config = {
            "created": now,
            "architecture": _go_arch(),
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
        config_digest, config_size = self._write_blob(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = self._write_blob(json.dumps(manifest, sort_keys=True).encode())
        descriptor = {
            "mediaType": MT_OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {REF_ANNOTATION: full_ref},
        }
        self._update_index(full_ref, descriptor)
        return ImageInfo(full_ref, manifest_digest, manifest_size + config_size + layer_size)

    def _update_index(self, ref: str, descriptor: dict[str, Any]) -> None:
        index_path = self.root / "index.json"
        with open(self.root / ".index.lock", "a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            index = json.loads(index_path.read_bytes())
            manifests = [
                d for d in index.get("manifests") or []
                if (d.get("annotations") or {}).get(REF_ANNOTATION) != ref
            ]
            manifests.append(descriptor)
            index["manifests"] = manifests
            index.setdefault("schemaVersion", 2)
            _atomic_write(index_path, json.dumps(index, indent=2).encode())

    def remove(self, ref: str) -> bool:
        """Untag ``ref`` (blobs and unpacked layers stay until garbage-collected)."""
        desc = self._find_descriptor(ref)
        if desc is None:
            return False
        tagged = (desc.get("annotations") or {}).get(REF_ANNOTATION)
        index_path = self.root / "index.json"
        with open(self.root / ".index.lock", "a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            index = json.loads(index_path.read_bytes())
            index["manifests"] = [
                d for d in index.get("manifests") or []
                if (d.get("annotations") or {}).get(REF_ANNOTATION) != tagged
            ]
            _atomic_write(index_path, json.dumps(index, indent=2).encode())
        return True

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
                manifest = self._read_blob_json(digest, f"image {ref}: manifest")
                size += int((manifest.get("config") or {}).get("size", 0))
                size += sum(layer.size for layer in image.layers)
            except ImageError:
                pass  # listed with what we know; resolve() will explain the problem
            out.append(ImageInfo(ref, digest, size))
        return out

    # ------------------------------------------------------ blobs and tags
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` as a blob; refuse it if ``digest`` is given and does not match."""
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest is not None and actual != digest:
            raise ImageError(f"blob {digest} is corrupted: its content has digest {actual}; refusing it")
        self._init_layout()
        path = self.blob_path(actual)
        if not path.exists():
            _atomic_write(path, data)
        return actual

    def write_blob_stream(self, src: Any, digest: str | None = None, size: int | None = None,
                          *, what: str = "blob") -> str:
        """Copy a stream into the store while hashing it; the blob appears only if its digest matches.

        ``digest`` None: the blob is named by what it hashes to (an archive's layer). Returns the digest.
        """
        self._init_layout()
        if digest is not None and self.has_blob(digest):
            return digest
        tmp = self.blobs_dir / f".tmp-blob-{uuid.uuid4().hex}"
        try:
            hasher = hashlib.sha256()
            count = 0
            with open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    count += len(chunk)
                    if size is not None and count > size:
                        raise ImageError(f"{what}: more data than its declared size of {size} bytes; refusing it")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + hasher.hexdigest()
            if digest is not None and actual != digest:
                raise ImageError(f"{what}: digest mismatch: the content has digest {actual}, expected {digest}; "
                                 "the blob is corrupted (refusing it)")
            if size is not None and count != size:
                raise ImageError(f"{what}: got {count} bytes, its descriptor says {size}; refusing it")
            final = self.blob_path(actual)
            if final.exists():
                tmp.unlink()
            else:
                os.rename(tmp, final)
            return actual
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @staticmethod
    def tag_name(ref: str) -> str:
        """How a reference is written in index.json: ``name:tag`` (digest references as given)."""
        name, tag = normalize_ref(ref)
        return ref if tag.startswith("@") else f"{name}:{tag}"

    def tag(self, ref: str, descriptor: dict[str, Any]) -> None:
        """Point ``ref`` at ``descriptor`` (whose blob must already be stored)."""
        if not self.has_blob(str(descriptor.get("digest", ""))):
            raise ImageError(f"cannot tag {ref}: blob {descriptor.get('digest')} is not in the store")
        self._init_layout()
        desc = dict(descriptor)
        desc["annotations"] = {**(desc.get("annotations") or {}), REF_ANNOTATION: self.tag_name(ref)}
        self._update_index(self.tag_name(ref), desc)

    def descriptors(self) -> list[dict[str, Any]]:
        """The tagged descriptors of index.json (copies)."""
        return [dict(d) for d in self._index_manifests() if (d.get("annotations") or {}).get(REF_ANNOTATION)]

    # ------------------------------------------------------------ archives
    def import_archive(self, path: Path | str, tag: str | None = None) -> list[ImageInfo]:
        """Import an ``oci-archive`` (a tarred OCI layout) or a ``docker save`` tarball.

        Every blob is verified by digest on the way in. Images are tagged with the
        names the archive gives them, or ``tag`` (which needs an archive of one image).
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
                named = self._import_oci_archive(tar, members, path, tag if not has_docker else None)
                if named or not has_docker:
                    if not named:
                        raise ImageError(f"{path}: the archive's index.json names no image; give a name with --tag NAME:TAG")
                    return named
            return self._import_docker_archive(tar, members, path, tag)

    def _member_json(self, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, path: Path) -> Any:
        f = tar.extractfile(members[name])
        if f is None:
            raise ImageError(f"{path}: {name} is not a regular file")
        try:
            return json.loads(f.read(MAX_JSON))
        except ValueError as exc:
            raise ImageError(f"{path}: {name} is not valid JSON: {exc}") from None

    def _import_oci_archive(self, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: Path,
                            tag: str | None) -> list[ImageInfo]:
        index = self._member_json(tar, members, "index.json", path)
        descs = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
        named: list[tuple[str, dict[str, Any]]] = []
        for d in descs:
            ann = d.get("annotations") or {}
            name = ann.get("io.containerd.image.name") or ann.get(REF_ANNOTATION) or ""
            if name and ("/" in name or ":" in name or "@" in name):
                named.append((name, d))
            elif name and tag is None:
                continue  # only a tag ("1"): no image name to file it under
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
                self.write_blob_stream(f, "sha256:" + name.rsplit("/", 1)[1], m.size, what=f"{path}: {name}")
        out: list[ImageInfo] = []
        for name, d in named:
            desc = {k: v for k, v in d.items() if k in ("mediaType", "digest", "size", "annotations", "platform")}
            self.tag(name, desc)
            out.append(self._info(self.tag_name(name)))
        return out

    def _import_docker_archive(self, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], path: Path,
                               tag: str | None) -> list[ImageInfo]:
        entries = self._member_json(tar, members, "manifest.json", path)
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
            config_digest = self.write_blob_bytes(config_bytes)
            layers = []
            for layer_name in entry.get("Layers") or []:
                m = members.get(str(layer_name))
                f = tar.extractfile(m) if m is not None else None
                if f is None:
                    raise ImageError(f"{path}: layer {layer_name!r} named in manifest.json is not in the archive")
                head = f.read(4)
                f.seek(0)
                if head[:2] == b"\x1f\x8b":
                    media_type = MT_OCI_LAYER_GZIP
                elif head == b"\x28\xb5\x2f\xfd":
                    raise ImageError(f"{path}: layer {layer_name} is zstd-compressed, which is not supported")
                else:
                    media_type = MT_OCI_LAYER_TAR
                digest = self.write_blob_stream(f, None, what=f"{path}: {layer_name}")
                layers.append({"mediaType": media_type, "digest": digest, "size": self.blob_path(digest).stat().st_size})
            manifest = {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                "layers": layers,
            }
            body = json.dumps(manifest, sort_keys=True).encode()
            manifest_digest = self.write_blob_bytes(body)
            for name in names:
                self.tag(name, {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": len(body)})
                out.append(self._info(self.tag_name(name)))
        return out

    def _info(self, ref: str) -> ImageInfo:
        return next((i for i in self.list() if i.ref == ref), ImageInfo(ref, "", 0))

    # ------------------------------------------------- garbage collection
    def image_blobs(self, digest: str) -> set[str]:
        """Every blob (hex) an image needs: its index/manifests, config and layers (those stored)."""
        out: set[str] = set()
        todo = [digest]
        while todo:
            d = todo.pop()
            try:
                hexd = _hex(d)
            except ImageError:
                continue
            if hexd in out:
                continue
            out.add(hexd)
            if not self.has_blob(d):
                continue
            try:
                doc = self._read_blob_json(d, "image")
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
                    out.add(_hex(str(cfg["digest"])))
            for layer in doc.get("layers") or []:
                with contextlib.suppress(ImageError):
                    out.add(_hex(str(layer.get("digest", ""))))
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
        index_path = self.root / "index.json"
        if untag and index_path.exists():
            untag_names = {self.tag_name(r) for r in untag}
            with open(self.root / ".index.lock", "a+") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                index = json.loads(index_path.read_bytes())
                keep_descs = []
                for d in index.get("manifests") or []:
                    ref = (d.get("annotations") or {}).get(REF_ANNOTATION)
                    if ref in untag_names and d.get("digest") not in in_use:
                        report.untagged.append(ref)
                    else:
                        keep_descs.append(d)
                if report.untagged:
                    index["manifests"] = keep_descs
                    _atomic_write(index_path, json.dumps(index, indent=2).encode())
        keep: set[str] = set()
        for d in [*(str(x.get("digest", "")) for x in self._index_manifests()), *in_use]:
            keep |= self.image_blobs(d)
        cutoff = time.time() - grace
        if self.blobs_dir.is_dir():
            for entry in os.scandir(self.blobs_dir):
                name = entry.name
                if name in keep:
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
                if entry.name in keep or entry.name.startswith(".tmp-"):
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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
