"""A real multi-host shoal cluster on one machine, for drills, tests and ``shoal dev cluster``.

Every host is a network namespace with its own address on an underlay Linux bridge
(``198.18.K.0/24``, a benchmarking range that is never routed off the machine; K is the
first free index, so concurrent clusters do not collide). Each host runs real
``shoal agent --server`` and/or ``--client`` processes, started with ``nsenter --net``
(only the network namespace is entered: the mount namespace, and so /sys/fs/cgroup, is
shared, and runc works from such an agent). Each host has its own data, runtime and image
directories and its own logs under ``ROOT/<host>/``.

Faults: :meth:`DevCluster.kill` (SIGKILL every process of a host; ``containers=True``
also kills its containers, as a power cut does), :meth:`DevCluster.partition` (an
nftables drop on the host's underlay interface in both directions, or its link set
down) and :meth:`DevCluster.heal`, :meth:`DevCluster.restart`.

Teardown (:meth:`DevCluster.close`; also a context manager, and an ``atexit`` hook) removes
processes (by pid, and whatever else lives in a host's namespace), the runc containers whose
bundles are under the cluster's directory, mounts under it, the namespaces, veths and the
bridge. A cluster whose owner died without tearing down (SIGKILL) is swept by the next
cluster that takes the same index: a lock file per index under ``/run/shoal-devcluster``
records what it owned.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

STATE_DIR = Path("/run/shoal-devcluster")
NETNS_DIR = Path("/run/netns")
API_PORT = 4646
RAFT_PORT = 4647
NFT_TABLE = "shoal_partition"
MAX_INDEX = 256  # 198.18.0.0/24 .. 198.18.255.0/24, all inside 198.18.0.0/15


class DeadlineExceeded(TimeoutError):
    """A condition did not hold before its deadline."""


def wait_for(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``cond`` until it returns something truthy; raise :class:`DeadlineExceeded` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def shoal_command() -> list[str]:
    """How to run the ``shoal`` CLI of this installation."""
    script = Path(sys.executable).parent / "shoal"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "shoal.cli.main"]


def build_busybox_rootfs(dest: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """A minimal root filesystem from busybox-static: every applet in /bin, /etc/passwd and /etc/group."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    subprocess.run(["chroot", str(dest), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


# ------------------------------------------------------------------ processes and namespaces
def _netns_inode(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(ns_path: Path | str) -> list[int]:
    """Every process whose network namespace is the one bound at ``ns_path``."""
    ino = _netns_inode(ns_path)
    if ino is None:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _reap_if_ours(pids: Iterable[int]) -> None:
    """Reap those of ``pids`` that are our own children (orphans reparented to us as a subreaper)."""
    me = os.getpid()
    for pid in pids:
        if _parent_pid(pid) == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def kill_netns_processes(ns_path: Path | str, rounds: int = 100) -> int:
    """SIGKILL every process in a network namespace until none is left (bounded). Returns how many."""
    killed: set[int] = set()
    for _ in range(rounds):
        pids = [p for p in pids_in_netns(ns_path) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.02)
        _reap_if_ours(pids)
    return len(killed)


def runc_containers() -> list[dict[str, Any]]:
    """``runc list`` as JSON (id, pid, status, bundle); empty when runc is missing."""
    try:
        p = subprocess.run(["runc", "list", "--format", "json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return json.loads(p.stdout) or []


def _under(path: str, root: Path) -> bool:
    r = str(root)
    return path == r or path.startswith(r.rstrip("/") + "/")


def remove_containers_under(root: Path) -> list[str]:
    """``runc delete --force`` every container whose bundle lies under ``root`` (and reap its init if ours)."""
    gone = []
    for c in runc_containers():
        if _under(c.get("bundle") or "", root):
            subprocess.run(["runc", "kill", c["id"], "KILL"], capture_output=True, timeout=30)
            subprocess.run(["runc", "delete", "--force", c["id"]], capture_output=True, timeout=30)
            gone.append(c["id"])
            if c.get("pid"):
                _reap_if_ours([int(c["pid"])])
    return gone


def mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            target = line.split()[1].replace("\\040", " ")
            if _under(target, root):
                out.append(target)
    return out


def unmount_under(root: Path) -> None:
    """Unmount (lazily if busy) every mount under ``root``, deepest first, stacked mounts too."""
    for _ in range(5):
        targets = sorted(set(mounts_under(root)), key=len, reverse=True)
        if not targets:
            return
        for t in targets:
            if subprocess.run(["umount", t], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", t], capture_output=True)


def remove_shoal_cgroups(container_ids: Iterable[str]) -> None:
    """Remove the (empty) cgroup directories runc made for these containers, in every hierarchy."""
    ids = set(container_ids)
    if not ids:
        return
    base = Path("/sys/fs/cgroup")
    roots = [base] + [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()] if base.is_dir() else []
    for r in roots:
        for cid in ids:
            d = r / "shoal" / cid
            if d.is_dir():
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    d.rmdir()


def _alloc_container_ids(root: Path) -> set[str]:
    """Container ids that allocations under ``root`` may have used (shoal-<alloc>-<task>)."""
    ids = set()
    for allocs in root.glob("*/data/client/allocs"):
        for alloc in allocs.iterdir():
            if alloc.is_dir():
                for task in alloc.iterdir():
                    if task.is_dir():
                        ids.add(f"shoal-{alloc.name}-{task.name}")
    return ids


def _nsenter(ns: str) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--"]


# ------------------------------------------------------------------ the cluster
@dataclass
class Host:
    """One machine of the cluster: a network namespace, an address, and its shoal processes."""

    name: str
    address: str
    netns: str
    veth: str  # the bridge side of its veth pair (in the root namespace)
    dir: Path
    server: bool = False
    client: bool = False
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    partitioned: str | None = None

    @property
    def api(self) -> str:
        """The server API address (``ADDR:4646``) of a server host."""
        return f"{self.address}:{API_PORT}"

    @property
    def raft(self) -> str:
        return f"{self.address}:{RAFT_PORT}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def image_dir(self) -> Path:
        return self.dir / "images"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def alive(self, role: str | None = None) -> bool:
        roles = [role] if role else list(self.procs)
        return any(r in self.procs and self.procs[r].poll() is None for r in roles)

    def pids(self) -> list[int]:
        """Every process of this host: whatever lives in its network namespace."""
        return pids_in_netns(self.netns_path)

    def log(self, role: str = "") -> str:
        names = [role] if role else ["server", "client"]
        out = []
        for r in names:
            p = self.log_dir / f"{r}.log"
            if p.exists():
                out.append(f"--- {self.name} {r}.log ---\n" + p.read_text(errors="replace"))
        return "\n".join(out)


_LIVE: weakref.WeakSet[DevCluster] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for c in list(_LIVE):
        with contextlib.suppress(Exception):
            c.close()


class DevCluster:
    """``servers`` server hosts and ``clients`` client hosts, each its own network namespace.

    >>> with DevCluster(servers=3, clients=2, images={"busybox:latest": rootfs}) as c:
    ...     c.call("Job.Register", {"job": job})
    ...     c.kill(c.leader())
    ...     c.wait_leader()
    """

    def __init__(
        self,
        root: Path | str | None = None,
        servers: int = 3,
        clients: int = 3,
        *,
        images: dict[str, Path] | None = None,
        raw_exec: bool = True,
        log_level: str = "info",
        server_clients: bool = False,
        env: dict[str, str] | None = None,
    ):
        if servers < 1:
            raise ValueError("a cluster needs at least one server")
        if os.geteuid() != 0:
            raise PermissionError("a dev cluster needs root (network namespaces, runc)")
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="shoal-cluster-")) if root is None else Path(root).resolve()
        self.n_servers = servers
        self.n_clients = clients
        self.images = dict(images or {})
        self.raw_exec = raw_exec
        self.log_level = log_level
        self.server_clients = server_clients
        self.env = dict(env or {})  # extra environment for every shoal process (experiments, debugging)
        self.hosts: dict[str, Host] = {}
        self.index: int | None = None
        self.bridge = ""
        self.gateway = ""
        self._lock_fd: int | None = None
        self._closed = False

    # --- addresses and names ---
    @property
    def subnet(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def servers(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.server]

    @property
    def clients(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.client]

    @property
    def server_addresses(self) -> list[str]:
        return [h.api for h in self.servers]

    def host(self, name: str | Host) -> Host:
        return name if isinstance(name, Host) else self.hosts[name]

    # --- lifecycle ---
    def __enter__(self) -> DevCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, wait: bool = True, timeout: float = 60.0) -> DevCluster:
        """Make the network and the hosts, start every process; wait for a leader and ready clients."""
        _LIVE.add(self)
        self.root.mkdir(parents=True, exist_ok=True)
        self._claim_index()
        self._make_network()
        for h in self.hosts.values():
            self._prepare_host(h)
        for h in self.hosts.values():
            self.start_host(h)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_leader(timeout)
        want = len(self.clients)
        if want:
            wait_for(lambda: self._ready_nodes() >= want, timeout, f"{want} client node(s) to be ready", interval=0.2)

    def _ready_nodes(self) -> int:
        self._check_processes()
        try:
            nodes = self.call("Node.List", {}, timeout=5)["nodes"]
        except Exception:
            return 0
        return sum(1 for n in nodes if n["status"] == "ready")

    def _check_processes(self) -> None:
        for h in self.hosts.values():
            for role, p in h.procs.items():
                if p.poll() is not None and not getattr(p, "_shoal_killed", False):
                    raise RuntimeError(f"{h.name}: shoal {role} exited with {p.returncode}:\n{h.log(role)[-4000:]}")

    def close(self) -> None:
        """Tear everything down. Idempotent; never raises for what is already gone."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        errors: list[str] = []
        for h in self.hosts.values():
            try:
                self._kill_host(h, containers=True)
            except Exception as exc:  # keep sweeping
                errors.append(f"{h.name}: {exc}")
        self._sweep(self.root, [h.netns for h in self.hosts.values()], self.bridge, [h.veth for h in self.hosts.values()])
        self._release_index()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            print(f"devcluster teardown: {'; '.join(errors)}", file=sys.stderr)

    # --- index (subnet) claim, and sweeping what a dead owner left ---
    def _claim_index(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        used = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
        for k in range(MAX_INDEX):
            if f"198.18.{k}." in used and not (STATE_DIR / f"net-{k}.json").exists():
                continue  # somebody else's network, not a dev cluster's
            fd = os.open(STATE_DIR / f"net-{k}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd, self.index = fd, k
            self._sweep_stale(k)
            break
        else:
            raise RuntimeError(f"no free dev cluster network index under {STATE_DIR}")
        k = self.index
        self.bridge = f"shoalbr{k}"
        self.gateway = f"198.18.{k}.1"
        names = [f"server{i + 1}" for i in range(self.n_servers)] + [f"client{i + 1}" for i in range(self.n_clients)]
        for i, name in enumerate(names):
            is_server = name.startswith("server")
            self.hosts[name] = Host(
                name=name,
                address=f"198.18.{k}.{10 + i}",
                netns=f"shoal{k}-{name}",
                veth=f"shoal{k}v{i}",
                dir=self.root / name,
                server=is_server,
                client=(not is_server) or self.server_clients,
            )
        state = {"pid": os.getpid(), "root": str(self.root), "bridge": self.bridge,
                 "netns": [h.netns for h in self.hosts.values()], "veths": [h.veth for h in self.hosts.values()]}
        (STATE_DIR / f"net-{k}.json").write_text(json.dumps(state))

    def _release_index(self) -> None:
        if self.index is None:
            return
        with contextlib.suppress(OSError):
            (STATE_DIR / f"net-{self.index}.json").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _sweep_stale(self, k: int) -> None:
        state_file = STATE_DIR / f"net-{k}.json"
        if not state_file.exists():
            netns = [p.name for p in NETNS_DIR.glob(f"shoal{k}-*")] if NETNS_DIR.is_dir() else []
            if netns:
                self._sweep(None, netns, f"shoalbr{k}", [])
            return
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = {}
        print(f"devcluster: sweeping what a dead cluster (pid {state.get('pid')}) left on 198.18.{k}.0/24",
              file=sys.stderr)
        root = Path(state["root"]) if state.get("root") else None
        self._sweep(root, state.get("netns") or [], state.get("bridge") or f"shoalbr{k}", state.get("veths") or [])
        with contextlib.suppress(OSError):
            state_file.unlink()

    @staticmethod
    def _sweep(root: Path | None, netns: list[str], bridge: str, veths: list[str]) -> None:
        for ns in netns:
            kill_netns_processes(NETNS_DIR / ns)
        if root is not None and root.exists():
            cids = set(remove_containers_under(root)) | _alloc_container_ids(root)
            unmount_under(root)
            remove_shoal_cgroups(cids)
        from pyroute2 import IPRoute, netns as pnetns

        for ns in netns:
            if (NETNS_DIR / ns).exists():
                with contextlib.suppress(Exception):
                    pnetns.remove(ns)
        with IPRoute() as ip:
            for name in [*veths, bridge]:
                if not name:
                    continue
                idx = ip.link_lookup(ifname=name)
                if idx:
                    with contextlib.suppress(Exception):
                        ip.link("del", index=idx[0])

    # --- network ---
    def _make_network(self) -> None:
        from pyroute2 import IPRoute, netns as pnetns

        with IPRoute() as ip:
            ip.link("add", ifname=self.bridge, kind="bridge")
            br = ip.link_lookup(ifname=self.bridge)[0]
            # The runner's own address on the underlay: a connected route to a local bridge only.
            ip.addr("add", index=br, address=self.gateway, prefixlen=24)
            ip.link("set", index=br, state="up")
            for h in self.hosts.values():
                pnetns.create(h.netns)
                ip.link("add", ifname=h.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": h.netns})
                v = ip.link_lookup(ifname=h.veth)[0]
                ip.link("set", index=v, master=br, state="up")
        for h in self.hosts.values():
            with IPRoute(netns=h.netns) as ns:
                eth = ns.link_lookup(ifname="eth0")[0]
                ns.addr("add", index=eth, address=h.address, prefixlen=24)
                ns.link("set", index=eth, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def _prepare_host(self, h: Host) -> None:
        for d in (h.data_dir, h.log_dir, h.run_dir, h.image_dir):
            d.mkdir(parents=True, exist_ok=True)
        if h.client and self.images:
            from shoal.agent.imageimport import import_rootfs
            from shoal.agent.imagestore import ImageStore

            store = ImageStore(h.image_dir)
            for ref, rootfs in self.images.items():
                import_rootfs(store, Path(rootfs), ref)
                store.lower_dirs(store.resolve(ref))  # unpacked now, not during a drill

    # --- processes ---
    def _spawn(self, h: Host, role: str, args: list[str]) -> None:
        log = open(h.log_dir / f"{role}.log", "ab")
        try:
            log.write(f"=== {time.strftime('%H:%M:%S')} start {role}\n".encode())
            log.flush()
            env = {**os.environ, "TMPDIR": str(h.run_dir), "PYTHONFAULTHANDLER": "1", **self.env}
            env.pop("SHOAL_ADDR", None)
            h.procs[role] = subprocess.Popen(
                [*_nsenter(h.netns), *shoal_command(), "agent", *args, "--log-level", self.log_level, "--log-json"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=h.dir,
                start_new_session=True,
            )
        finally:
            log.close()

    def start_host(self, host: str | Host) -> Host:
        """Start the host's shoal processes (again), with the same data directories."""
        h = self.host(host)
        if h.server and not h.alive("server"):
            join = [a for a in self.server_addresses if a != h.api]
            self._spawn(h, "server", [
                "--server", "--data-dir", str(h.data_dir), "--bind", h.api, "--raft-bind", h.raft,
                "--join", ",".join(join), "--bootstrap-expect", str(self.n_servers), "--node-name", h.name,
            ])
        if h.client and not h.alive("client"):
            args = ["--client", "--data-dir", str(h.data_dir), "--servers", ",".join(self.server_addresses),
                    "--client-bind", f"{h.address}:0", "--node-name", h.name, "--image-dir", str(h.image_dir)]
            if self.raw_exec:
                args.append("--raw-exec")
            self._spawn(h, "client", args)
        return h

    def _kill_host(self, h: Host, containers: bool) -> None:
        for p in h.procs.values():
            if p.poll() is None:
                p._shoal_killed = True  # type: ignore[attr-defined]
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
            else:
                p._shoal_killed = True  # type: ignore[attr-defined]
        kill_netns_processes(h.netns_path)
        for p in h.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        if containers:
            remove_containers_under(h.dir)
            unmount_under(h.dir)

    def kill(self, host: str | Host, containers: bool = True) -> float:
        """SIGKILL every process of the host; returns the time (monotonic) of the kill.

        ``containers=True`` (a power cut): its runc containers die too and its mounts go,
        as they would in a reboot; its data directories stay. ``containers=False`` (every
        process of the host crashed): containers, which live in their own namespaces, keep
        running.
        """
        h = self.host(host)
        t = time.monotonic()
        self._kill_host(h, containers)
        return t

    def stop(self, host: str | Host, timeout: float = 30.0) -> bool:
        """SIGTERM the host's shoal processes and wait for them (a clean shutdown).

        A process still there after ``timeout`` s gets SIGABRT (with PYTHONFAULTHANDLER set,
        it writes every thread's traceback to its log), then SIGKILL. Returns True if any
        process had to be forced so.
        """
        h = self.host(host)
        forced = False
        for p in h.procs.values():
            if p.poll() is None:
                p._shoal_killed = True  # type: ignore[attr-defined]
                p.terminate()
        deadline = time.monotonic() + timeout
        for role, p in h.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                forced = True
                print(f"devcluster: {h.name} {role} (pid {p.pid}) still running {timeout}s after SIGTERM; "
                      f"SIGABRT for a traceback in {h.log_dir / (role + '.log')}, then SIGKILL", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGABRT)
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        return forced

    def restart(self, host: str | Host, graceful: bool = True) -> Host:
        h = self.host(host)
        if graceful:
            self.stop(h)
        else:
            self.kill(h, containers=False)
        return self.start_host(h)

    # --- partitions ---
    def partition(self, host: str | Host, mode: str = "nft") -> float:
        """Cut the host off the underlay in both directions; returns the time (monotonic).

        ``nft``: an nftables table in the host's namespace drops everything in and out of its
        underlay interface (loopback inside the host still works). ``link``: its veth is set down.
        """
        h = self.host(host)
        if h.partitioned:
            return time.monotonic()
        if mode == "nft":
            rules = (
                f"table inet {NFT_TABLE} {{\n"
                "  chain input { type filter hook input priority -10; policy accept; iifname \"eth0\" drop; }\n"
                "  chain output { type filter hook output priority -10; policy accept; oifname \"eth0\" drop; }\n"
                "}\n"
            )
            subprocess.run([*_nsenter(h.netns), "nft", "-f", "-"], input=rules, text=True, check=True,
                           capture_output=True)
        elif mode == "link":
            self._set_link(h, "down")
        else:
            raise ValueError(f"unknown partition mode {mode!r} (nft or link)")
        h.partitioned = mode
        return time.monotonic()

    def heal(self, host: str | Host) -> float:
        h = self.host(host)
        if h.partitioned == "nft":
            subprocess.run([*_nsenter(h.netns), "nft", "delete", "table", "inet", NFT_TABLE], check=True,
                           capture_output=True)
        elif h.partitioned == "link":
            self._set_link(h, "up")
        h.partitioned = None
        return time.monotonic()

    def _set_link(self, h: Host, state: str) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ip:
            ip.link("set", index=ip.link_lookup(ifname=h.veth)[0], state=state)

    # --- talking to the cluster ---
    def call(self, method: str, request: dict[str, Any] | None = None, *, timeout: float = 10.0,
             host: str | Host | None = None) -> dict[str, Any]:
        """An RPC to one server (``host``), or to the first live server that answers."""
        from shoal.errors import ShoalError
        from shoal.rpc.sync import call

        if host is not None:
            return call(self.host(host).api, method, request or {}, timeout=timeout)
        last: Exception | None = None
        for h in self.servers:
            if not h.alive("server") or h.partitioned:
                continue
            try:
                return call(h.api, method, request or {}, timeout=timeout)
            except ShoalError as exc:
                if exc.code not in ("unavailable", "no_leader"):
                    raise
                last = exc
        raise last or RuntimeError("no live server")

    def info(self, host: str | Host) -> dict[str, Any] | None:
        try:
            return self.call("Server.Info", {}, timeout=2.0, host=host)
        except Exception:
            return None

    def leader(self) -> Host | None:
        """The server host that says it leads (among live, reachable ones)."""
        for h in self.servers:
            if h.alive("server") and not h.partitioned:
                i = self.info(h)
                if i and i.get("is_leader"):
                    return h
        return None

    def wait_leader(self, timeout: float = 30.0, exclude: Host | None = None) -> Host:
        def found() -> Host | None:
            self._check_processes()
            h = self.leader()
            return h if h is not None and h is not exclude else None

        return wait_for(found, timeout, "a Raft leader", interval=0.05)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Node name -> node record (with ``status``)."""
        return {n["name"]: n for n in self.call("Node.List", {})["nodes"]}

    def allocations(self, job_id: str | None = None) -> list[dict[str, Any]]:
        req = {"job_id": job_id} if job_id else {}
        return self.call("Alloc.List", req)["allocations"]

    def containers(self, host: str | Host | None = None) -> list[dict[str, Any]]:
        """runc containers of one host (bundle under its directory), or of the whole cluster."""
        root = self.host(host).dir if host is not None else self.root
        return [c for c in runc_containers() if _under(c.get("bundle") or "", root)]

    def running_containers(self) -> dict[str, list[dict[str, Any]]]:
        """Host name -> its running runc containers."""
        all_ = runc_containers()
        return {h.name: [c for c in all_ if c.get("status") == "running" and _under(c.get("bundle") or "", h.dir)]
                for h in self.hosts.values()}

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the ``shoal`` CLI against the cluster (from the runner, through the bridge)."""
        live = [h.api for h in self.servers if h.alive("server") and not h.partitioned] or self.server_addresses
        env = {**os.environ, "SHOAL_ADDR": live[0]}
        return subprocess.run([*shoal_command(), *args], capture_output=True, text=True, env=env, timeout=timeout)

    def logs(self) -> str:
        return "\n".join(h.log() for h in self.hosts.values())

    def describe(self) -> str:
        lines = [f"shoal dev cluster on {self.subnet} (bridge {self.bridge}, runner {self.gateway}), dir {self.root}"]
        for h in self.hosts.values():
            roles = "+".join(r for r, on in (("server", h.server), ("client", h.client)) if on)
            pids = ",".join(str(p.pid) for p in h.procs.values() if p.poll() is None)
            lines.append(f"  {h.name:<9} {h.address:<15} {roles:<13} netns {h.netns:<18} pid {pids:<14} logs {h.log_dir}")
        lines.append(f"  export SHOAL_ADDR={self.server_addresses[0]}")
        return "\n".join(lines)
