"""The container driver: OCI images from the local store, overlayfs rootfs, runc.

Start path (per task; the runc part is ``RuncDriver``'s)::

    resolve image (cached; pulled when missing) -> unpack missing layers (once per layer, in a thread)
    -> mount overlay at TASK_DIR/rootfs (lower = layers, upper/work in TASK_DIR/overlay)
    -> TASK_DIR/bundle/config.json -> runc run -d --pid-file --bundle ID
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
from pathlib import Path
from typing import Any

from shoal.agent import cgroups, ocispec
from shoal.agent.drivers.base import DriverError, TaskHandle, TaskSpec
from shoal.agent.drivers.runcdriver import DEFAULT_STATE_DIR, Bundle, RuncDriver, TaskPaths, pids_limit, unmount
from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagetypes import Image
from shoal.agent.registry_client import Credentials

_PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)


def _escape_overlay(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def mount_overlay(target: Path, lowers: list[Path], upper: Path, work: Path) -> None:
    """mount -t overlay (through mount(2); no `mount` binary)."""
    options = "lowerdir={},upperdir={},workdir={}".format(
        ":".join(_escape_overlay(str(p)) for p in lowers), _escape_overlay(str(upper)), _escape_overlay(str(work))
    )
    data = options.encode()
    if len(data) >= _PAGE:
        raise DriverError(
            f"cannot mount the rootfs at {target}: the image has {len(lowers)} layers and the overlay "
            "options exceed one page; flatten the image (fewer layers) or use a shorter image store path"
        )
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, data) != 0:
        err = ctypes.get_errno()
        raise DriverError(f"cannot mount overlayfs at {target}: {os.strerror(err)} (options: {options})")


class ContainerDriver(RuncDriver):
    """Runs tasks as runc containers of OCI images. Registered as "container" and as "docker"."""

    name = "container"

    def __init__(
        self,
        images: ImageManager,
        runc_root: str | None = None,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        runc_binary: str = "runc",
        allowed_volumes: list[Path] | tuple[Path, ...] = (),
    ) -> None:
        super().__init__(runc_root, state_dir, runc_binary=runc_binary)
        self.images = images
        self.allowed_volumes = tuple(Path(os.path.realpath(p)) for p in allowed_volumes)

    # ------------------------------------------------------------ fingerprint
    def fingerprint(self) -> dict[str, str] | None:
        version = self.runc_version()
        if version is None:
            return None
        return {
            "driver.container": "1",
            "driver.container.runtime": "runc",
            "driver.container.runc.version": version,
            "cgroup.version": str(cgroups.cgroup_version()),
        }

    # ---------------------------------------------------------------- config
    @staticmethod
    def _validate(config: dict[str, Any]) -> tuple[str, bool, int, str]:
        image = config.get("image")
        if not image or not isinstance(image, str):
            raise DriverError("config.image is required: an image name:tag from the local store, or a rootfs path")
        readonly = config.get("readonly_rootfs", False)
        if not isinstance(readonly, bool):
            raise DriverError("config.readonly_rootfs must be true or false")
        pids = pids_limit(config)
        work_dir = config.get("work_dir") or ""
        if not isinstance(work_dir, str) or (work_dir and not work_dir.startswith("/")):
            raise DriverError("config.work_dir must be an absolute path inside the container")
        for key in ("force_pull", "cpu_hard_limit"):
            if not isinstance(config.get(key, False), bool):
                raise DriverError(f"config.{key} must be true or false")
        return image, readonly, pids, work_dir

    @staticmethod
    def _auth(config: dict[str, Any]) -> Credentials | None:
        """``auth { username password }`` (Nomad's docker driver); a list of one block is accepted too."""
        auth = config.get("auth")
        if auth is None:
            return None
        if isinstance(auth, list) and len(auth) == 1:
            auth = auth[0]
        if not isinstance(auth, dict):
            raise DriverError("config.auth must be a block: auth { username = \"...\" password = \"...\" }")
        return Credentials(str(auth.get("username") or ""), str(auth.get("password") or ""),
                           str(auth.get("identity_token") or auth.get("registry_token") or ""))

    def volume_mounts(self, volumes: Any, spec: TaskSpec) -> list[dict[str, Any]]:
        """Bind mounts for ``volumes = ["HOST:CONTAINER[:ro|rw]"]``.

        A relative HOST path is inside the allocation's directory (as Nomad: relative
        to the task directory, created if missing, never escaping the allocation). An
        absolute HOST path must lie under a directory the agent allows
        (``--allow-volume``) and must exist.
        """
        if volumes is None:
            return []
        if not isinstance(volumes, list) or not all(isinstance(v, str) for v in volumes):
            raise DriverError('config.volumes must be a list of "HOST:CONTAINER[:ro]" strings')
        task_dir, alloc_dir = Path(os.path.realpath(spec.task_dir)), Path(os.path.realpath(spec.alloc_dir))
        mounts = []
        for volume in volumes:
            parts = volume.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise DriverError(f'config.volumes: {volume!r} is not "HOST:CONTAINER" or "HOST:CONTAINER:ro"')
            host, dest = parts[0], parts[1]
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in ("ro", "rw"):
                raise DriverError(f"config.volumes: {volume!r}: the mode must be ro or rw, not {mode!r}")
            if not dest.startswith("/") or ".." in dest.split("/"):
                raise DriverError(f"config.volumes: {volume!r}: the container path must be absolute, without '..'")
            if host.startswith("/"):
                real = Path(os.path.realpath(host))
                if not any(real == a or a in real.parents for a in self.allowed_volumes):
                    allowed = ", ".join(map(str, self.allowed_volumes)) or "none"
                    raise DriverError(
                        f"config.volumes: host path {host} is not allowed on this node (allowed: {allowed}); "
                        "start the agent with --allow-volume DIR to allow bind mounts from DIR"
                    )
                if not real.exists():
                    raise DriverError(f"config.volumes: host path {host} does not exist on this node")
            else:
                real = Path(os.path.realpath(task_dir / host))
                if real != alloc_dir and alloc_dir not in real.parents:
                    raise DriverError(f"config.volumes: {host!r} leaves the allocation's directory; relative host "
                                      "paths are inside it")
                real.mkdir(parents=True, exist_ok=True)
            mounts.append(ocispec.bind_mount(real, dest, readonly=mode == "ro"))
        return mounts

    # ----------------------------------------------------------------- start
    async def _lower_dirs(self, image: Image) -> list[Path]:
        store = self.images.store
        if store.layers_ready(image):
            return store.lower_dirs(image)
        return await asyncio.to_thread(store.lower_dirs, image)

    def _prepare_rootfs(self, paths: TaskPaths, lowers: list[Path]) -> None:
        unmount(paths.rootfs)  # a restart of the same task: start from a fresh rootfs
        if paths.overlay.exists():
            shutil.rmtree(paths.overlay)
        paths.upper.mkdir(parents=True)
        paths.work.mkdir()
        paths.rootfs.mkdir(exist_ok=True)
        mount_overlay(paths.rootfs, lowers, paths.upper, paths.work)

    async def start(self, spec: TaskSpec) -> TaskHandle:
        ref, readonly, pids, work_dir = self._validate(spec.config)
        image = await self.images.get(ref, auth=self._auth(spec.config),
                                      force_pull=bool(spec.config.get("force_pull", False)),
                                      on_pull=lambda: spec.event("Driver", f"Downloading image {ref}"))
        lowers = await self._lower_dirs(image)
        paths = TaskPaths(Path(os.path.realpath(spec.task_dir)))
        return await self._start_bundle(spec, paths, Bundle(
            image=image.config, ref=ref, digest=image.digest, cwd=work_dir or image.config.working_dir or "/",
            readonly=readonly, pids_limit=pids, prepare_rootfs=lambda: self._prepare_rootfs(paths, lowers)))

    def _user_root(self, paths: TaskPaths) -> Path:
        return paths.rootfs

    def _extra_mounts(self, spec: TaskSpec, paths: TaskPaths) -> list[dict[str, Any]]:
        return [*self._spec_mounts(spec), *self.volume_mounts(spec.config.get("volumes"), spec)]
