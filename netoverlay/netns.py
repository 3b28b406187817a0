"""Named network namespaces without forking: a short-lived thread unshares or enters one.

A network namespace is per thread in Linux, so a thread of the agent can ``unshare`` a new
one, bind it at ``/run/netns/NAME`` (where ``ip netns`` and runc find it) and end; or enter
one long enough to open a netlink socket there (a socket stays in the namespace it was made
in) and hand the socket to pyroute2. The agent itself never changes namespace and never
forks (pyroute2's own netns helpers fork a child per call).

``/run/netns`` is made a shared mount first, as iproute2 does, so the binds show in other
mount namespaces (an agent started by ``ip netns exec`` runs in its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_shared_lock = threading.Lock()
_shared_done = False

T = TypeVar("T")


class NetnsError(OSError):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"{what}: {os.strerror(err)}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread of its own (its namespace changes die with it)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="shoal-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def _share_netns_dir() -> None:
    global _shared_done
    with _shared_lock:
        if _shared_done:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        d = str(NETNS_DIR).encode()
        if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"bind {NETNS_DIR}")
            _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), f"share {NETNS_DIR}")
        _shared_done = True


def exists(name: str) -> bool:
    """A namespace is bound at the path (not merely an empty file left by a crash)."""
    p = path_of(name)
    try:
        return p.stat().st_dev != p.parent.stat().st_dev or os.path.ismount(p)
    except FileNotFoundError:
        return False


def create(name: str) -> Path:
    """Create the namespace ``name`` (or keep the one bound there already); returns its path."""
    _share_netns_dir()
    path = path_of(name)
    if exists(name):
        return path
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))

    def unshare_and_bind() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None),
               f"bind a new network namespace at {path}")

    try:
        _in_thread(unshare_and_bind)
    except Exception:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def remove(name: str) -> None:
    """Unbind and delete ``name``; the kernel frees it once no process is left inside."""
    path = path_of(name)
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        err = ctypes.get_errno()
        raise NetnsError(err, f"unmount {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Route(IPRoute):
    """pyroute2's IPRoute on an event loop of its own that understands netlink sockets: the agent runs
    uvloop, whose transports refuse them ("cannot open a UDP handle, invalid family 16")."""

    def __init__(self, **kwargs: object) -> None:
        self._own_loop = asyncio.SelectorEventLoop()
        super().__init__(use_event_loop=self._own_loop, **kwargs)

    def close(self, *args: object, **kwargs: object) -> None:
        try:
            super().close(*args, **kwargs)
        finally:
            self._own_loop.close()


def ipr_in(name_or_path: str | Path) -> IPRoute:
    """A pyroute2 IPRoute whose netlink socket lives in the given namespace."""
    path = Path(name_or_path) if "/" in str(name_or_path) else path_of(str(name_or_path))

    def open_socket() -> socket.socket:
        fd = os.open(path, os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"enter {path}")
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    sock = _in_thread(open_socket)
    return Route(fileno=sock.detach())


def interface_sysctl(ifname: str, key: str, value: str) -> None:
    """Set ``net.ipv4.conf.IFNAME.KEY`` (an interface name may contain dots)."""
    Path("/proc/sys/net/ipv4/conf", ifname, key).write_text(value)
