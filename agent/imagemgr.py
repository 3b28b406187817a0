"""Images for tasks: the local store first, a registry pull when it lacks the image, and GC.

``ImageManager.get`` resolves a reference against the local store and pulls it
only when it is missing (or when ``force_pull`` is set). Concurrent requests for
one reference share one pull. Pulls run in a thread (``imagepull`` is
blocking code).

Garbage collection (``gc``): images this agent *pulled* that no task has used
for ``gc_delay`` seconds are untagged; then every blob and unpacked layer that
no tagged image and no running task needs is deleted. Images imported by hand
(``shoal image import``) stay until removed with ``shoal image rm``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from shoal.agent.imagepull import pull_image
from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import PULLED_ANNOTATION, REF_ANNOTATION, GcReport, Image, ImageNotFound, tag_name
from shoal.agent.registry_client import Credentials, RegistryClient, RegistryConfig, is_qualified

log = structlog.get_logger("shoal.agent.images")

DEFAULT_GC_DELAY = 180.0  # seconds an unused pulled image is kept (Nomad's image_delay)


class ImageManager:
    def __init__(self, store: ImageStore, registry: RegistryConfig | None = None,
                 gc_delay: float = DEFAULT_GC_DELAY) -> None:
        self.store = store
        self.registry = registry or RegistryConfig(default_registry="")
        self.client = RegistryClient(self.registry)
        self.gc_delay = gc_delay
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._last_used: dict[str, float] = {}  # image digest -> when a task last asked for it
        self._started = time.time()
        self.pulls = 0  # completed pulls (for tests and metrics)

    def pullable(self, ref: str) -> bool:
        if not ref or ref.startswith("/"):
            return False
        return is_qualified(ref) or bool(self.registry.default_registry)

    async def get(self, ref: str, *, auth: Credentials | None = None, force_pull: bool = False,
                  on_pull: Callable[[], None] | None = None) -> Image:
        """The image for ``ref``: from the store, pulled first if it is missing (or ``force_pull``)."""
        if not force_pull or not self.pullable(ref):
            try:
                image = self.store.resolve(ref)
                self._touch(image)
                return image
            except ImageNotFound:
                if not self.pullable(ref):
                    raise
        if on_pull is not None:
            on_pull()
        await self.pull(ref, auth=auth)
        image = self.store.resolve(ref)
        self._touch(image)
        return image

    async def pull(self, ref: str, *, auth: Credentials | None = None) -> None:
        """Pull ``ref``; callers asking for the same reference at the same time share one pull."""
        key = tag_name(ref)
        fut = self._inflight.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.create_task(self._pull(ref, auth), name=f"pull:{key}")
            self._inflight[key] = fut
            fut.add_done_callback(lambda f, k=key: self._inflight.pop(k, None) if self._inflight.get(k) is f else None)
        await asyncio.shield(fut)

    async def _pull(self, ref: str, auth: Credentials | None) -> None:
        t0 = time.monotonic()
        log.info("pulling image", image=ref)
        info = await asyncio.to_thread(pull_image, self.client, self.store, ref, auth)
        self.pulls += 1
        log.info("image pulled", image=ref, digest=info.digest, size=info.size,
                 seconds=round(time.monotonic() - t0, 3))

    def _touch(self, image: Image) -> None:
        if image.digest:
            self._last_used[image.digest] = time.time()

    def touch_digests(self, digests: Iterable[str]) -> None:
        now = time.time()
        for d in digests:
            if d:
                self._last_used[d] = now

    def gc_candidates(self, in_use: set[str], now: float | None = None) -> list[str]:
        """Pulled images not in use and not asked for during the last ``gc_delay`` seconds."""
        now = time.time() if now is None else now
        out = []
        for desc in self.store.descriptors():
            ann = desc.get("annotations") or {}
            digest = str(desc.get("digest", ""))
            if PULLED_ANNOTATION not in ann or digest in in_use:
                continue
            if now - self._last_used.get(digest, self._started) >= self.gc_delay:
                out.append(str(ann.get(REF_ANNOTATION)))
        return out

    async def gc(self, in_use: set[str], *, grace: float = 600.0) -> GcReport:
        self.touch_digests(in_use)
        untag = self.gc_candidates(in_use)
        report = await asyncio.to_thread(self.store.gc, in_use=set(in_use), untag=untag, grace=grace)
        if report.untagged or report.blobs or report.layers:
            log.info("image garbage collection", untagged=report.untagged, blobs=report.blobs,
                     bytes=report.bytes, layers=report.layers)
        return report
