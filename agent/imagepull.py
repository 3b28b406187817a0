"""Pull one image from a registry into the local store (``registry_client.py`` speaks the HTTP).

One pull: the manifest named by the tag or digest (an image index picks the host's
platform), then the config and layer blobs. Every manifest and blob is hashed as it
arrives and refused if its sha256 is not the digest that named it; nothing
unverified reaches the store. Blobs already in the store are not fetched again. The
image is tagged last, with :data:`PULLED_ANNOTATION` (the image manager collects
pulled images nobody uses).

Blocking code: the agent runs it in a thread.
"""

from __future__ import annotations

import json

from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import (
    INDEX_TYPES,
    MT_OCI_MANIFEST,
    PULLED_ANNOTATION,
    REF_ANNOTATION,
    ImageError,
    ImageInfo,
    digest_hex,
    pick_platform,
    tag_name,
)
from shoal.agent.registry_client import DOCKER_HUB, Credentials, ImageRef, PullError, RegistryClient, parse_ref


def pull_image(client: RegistryClient, store: ImageStore, ref_text: str, creds: Credentials | None = None,
               tag_as: str | None = None) -> ImageInfo:
    """Pull ``ref_text`` into ``store`` and tag it (as ``tag_as``, default ``ref_text``).

    ``creds`` None: the client's configured credentials for the registry, if any.
    """
    ref = parse_ref(ref_text, client.cfg.default_registry or DOCKER_HUB)
    if creds is None:
        creds = client.cfg.auths.get(ref.registry)
    top_body, top_type, top_digest = client.fetch_manifest(ref, ref.reference, creds)
    manifest_body = top_body
    top = json.loads(top_body)
    children: list[tuple[bytes, str]] = []  # manifests an index points at, stored before the index
    if top_type in INDEX_TYPES or "manifests" in top:
        child = pick_platform(top, str(ref))
        manifest_body, _child_type, manifest_digest = client.fetch_manifest(ref, str(child["digest"]), creds)
        children.append((manifest_body, manifest_digest))
    manifest = json.loads(manifest_body)
    if "manifests" in manifest:
        raise PullError(f"pulling {ref}: nested image indexes are not supported")
    config = manifest.get("config") or {}
    layers = list(manifest.get("layers") or [])
    if not config.get("digest"):
        raise PullError(f"pulling {ref}: the manifest names no config blob")
    for desc in [config, *layers]:
        d = str(desc.get("digest", ""))
        try:
            digest_hex(d)
        except ImageError:
            raise PullError(f"pulling {ref}: unsupported or malformed blob digest {d!r} (only sha256)") from None
        _fetch_blob(client, store, ref, d, int(desc["size"]) if "size" in desc else None, creds)
    for body, digest in children:
        store.write_blob_bytes(body, digest)
    store.write_blob_bytes(top_body, top_digest)
    name = tag_as or ref_text
    store.tag(name, {
        "mediaType": top_type or MT_OCI_MANIFEST,
        "digest": top_digest,
        "size": len(top_body),
        "annotations": {REF_ANNOTATION: tag_name(name), PULLED_ANNOTATION: str(ref)},
    })
    image = store.resolve(name)
    size = len(top_body) + int(config.get("size", 0)) + sum(layer.size for layer in image.layers)
    return ImageInfo(tag_name(name), top_digest, size)


def _fetch_blob(client: RegistryClient, store: ImageStore, ref: ImageRef, digest: str, size: int | None,
                creds: Credentials | None) -> None:
    """Download one blob into the store, verified by digest (skipped if the store has it)."""
    if store.has_blob(digest):
        return
    with client.blob(ref, digest, creds) as body:
        try:
            store.write_blob_stream(body, digest, size, what=f"{ref.registry}/{ref.repository}: blob {digest}")
        except PullError:
            raise
        except ImageError as exc:  # refused (digest, size): pulling again would get the same
            raise PullError(str(exc), recoverable=False) from None
