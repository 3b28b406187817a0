"""The exec driver: a host command isolated like a container, without an image.

The task's own directory (``TASK_DIR/rootfs``, kept across restarts) is the
root filesystem; the host's program directories (/usr, /bin, /lib, ...) and the
few /etc files programs need (the dynamic loader cache, passwd/group, name
resolution, TLS roots) are bind-mounted read-only into it. The process gets its
own pid, mount, uts, ipc and network namespaces, cgroup limits, Docker's
default capabilities and no-new-privileges, all through runc, as the container
driver does. /alloc, /local and /secrets are the task's directories, as Nomad's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shoal.agent import ocispec
from shoal.agent.drivers.base import DriverError, TaskHandle, TaskSpec
from shoal.agent.drivers.runcdriver import Bundle, RuncDriver, TaskPaths, pids_limit
from shoal.agent.imagetypes import DEFAULT_PATH_ENV, ImageConfig

HOST_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
HOST_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
            "/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf", "/etc/localtime", "/etc/ssl",
            "/etc/alternatives", "/etc/host.conf")
HOST_IMAGE = ImageConfig(env=(DEFAULT_PATH_ENV,))  # what an image would say: only a PATH


class ExecDriver(RuncDriver):
    name = "exec"

    def fingerprint(self) -> dict[str, str] | None:
        return None if self.runc_version() is None else {"driver.exec": "1"}

    def _extra_mounts(self, spec: TaskSpec, paths: TaskPaths) -> list[dict[str, Any]]:
        mounts = []
        for d in HOST_DIRS:
            if os.path.isdir(d) and not os.path.islink(d):
                mounts.append(ocispec.bind_mount(d, d, readonly=True))
        for f in HOST_ETC:
            if os.path.exists(f):
                mounts.append(ocispec.bind_mount(os.path.realpath(f), f, readonly=True))
        return [*mounts, *self._spec_mounts(spec)]

    def _prepare_exec_root(self, paths: TaskPaths) -> None:
        root = paths.rootfs
        root.mkdir(parents=True, exist_ok=True)
        for d in ("tmp", "etc", "proc", "sys", "dev", "run"):
            (root / d).mkdir(exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        for d in HOST_DIRS:  # merged /usr: /bin -> usr/bin and friends become the same symlinks
            if os.path.islink(d):
                link = root / d.lstrip("/")
                if not os.path.lexists(link):
                    os.symlink(os.readlink(d), link)

    async def start(self, spec: TaskSpec) -> TaskHandle:
        command = spec.config.get("command")
        if not command or not isinstance(command, str):
            raise DriverError("config.command is required for exec: the program to run (a host path)")
        pids = pids_limit(spec.config)
        paths = TaskPaths(Path(os.path.realpath(spec.task_dir)))
        return await self._start_bundle(spec, paths, Bundle(
            image=HOST_IMAGE, ref="", digest="", cwd="/", readonly=False, pids_limit=pids,
            prepare_rootfs=lambda: self._prepare_exec_root(paths)))

    def _user_root(self, paths: TaskPaths) -> Path:
        return Path("/")  # the host's passwd and group are bind-mounted in
