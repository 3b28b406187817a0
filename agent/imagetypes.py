"""What an image is, for every image module: references, OCI media types, the parsed config, errors.

The store (``imagestore.py``), the layer unpacker (``layers.py``), archive and rootfs
imports (``imageimport.py``) and the registry pull (``imagepull.py``) share these; none
of them is needed to read another's types.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.agent.drivers.base import DriverError

REF_ANNOTATION = "org.opencontainers.image.ref.name"
PULLED_ANNOTATION = "io.shoal.pulled-from"  # on descriptors the registry pull tagged (the manager GCs those)
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
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
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


def tag_name(ref: str) -> str:
    """How a reference is written in index.json: ``name:tag`` (digest references as given)."""
    name, tag = normalize_ref(ref)
    return ref if tag.startswith("@") else f"{name}:{tag}"


def ref_candidates(ref: str) -> list[str]:
    """Annotation values that may name ``ref`` (full name first, then without docker.io)."""
    name, tag = normalize_ref(ref)
    names = [name]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if name.startswith(prefix):
            names.append(name[len(prefix) :])
    out = [f"{n}:{tag}" for n in names]
    if ref not in out:
        out.append(ref)
    return out


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; ImageError for any other algorithm or a malformed one."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r} (only sha256 is supported)")
    return hexpart


def go_arch() -> str:
    """This host's architecture as OCI platforms name it (Go's GOARCH)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def pick_platform(index: dict[str, Any], ref: str, arch: str | None = None) -> dict[str, Any]:
    """The entry of an image index for this host (linux and its architecture; attestations skipped)."""
    arch = arch or go_arch()
    found = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        found.append(f"{plat.get('os', '?')}/{plat.get('architecture', '?')}")
        if plat.get("os", "linux") == "linux" and plat.get("architecture", arch) == arch:
            return desc
    raise ImageError(f"image {ref} has no manifest for linux/{arch} (it has: {', '.join(found) or 'none'})")
