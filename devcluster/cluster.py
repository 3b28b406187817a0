"""The dev cluster: its hosts made, started, faulted and torn down, and the calls tests make to it."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal.agent.gossip.keyring import generate as generate_gossip_key
from shoal.config import GOSSIP_KEY_ENV
from shoal.devcluster import network, processes
from shoal.devcluster.cleanup import containers_under, runc_containers, sweep
from shoal.devcluster.hosts import Host
from shoal.devcluster.waiting import wait_for

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
        server_flags: Sequence[str] = (),
        client_flags: Sequence[str] = (),
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
        self.env.setdefault(GOSSIP_KEY_ENV, generate_gossip_key())  # the clients gossip with one cluster key
        self.server_flags = list(server_flags)  # more ``shoal agent`` flags for every server (e.g. --overlay-cidr)
        self.client_flags = list(client_flags)  # ... and every client (e.g. --min-dynamic-port)
        self.hosts: dict[str, Host] = {}
        self.subnet: network.Subnet | None = None
        self._closed = False

    # --- addresses and names ---
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
        self.subnet = network.claim_subnet()
        self._plan_hosts(self.subnet)
        network.make_network(self.subnet, self.hosts.values())
        for h in self.hosts.values():
            self._prepare_host(h)
        for h in self.hosts.values():
            self.start_host(h)
        if wait:
            self.wait_ready(timeout)
        return self

    def _plan_hosts(self, subnet: network.Subnet) -> None:
        k = subnet.index
        names = [f"server{i + 1}" for i in range(self.n_servers)] + [f"client{i + 1}" for i in range(self.n_clients)]
        for i, name in enumerate(names):
            is_server = name.startswith("server")
            self.hosts[name] = Host(
                name=name,
                address=subnet.address(i),
                netns=f"shoal{k}-{name}",
                veth=f"shoal{k}v{i}",
                dir=self.root / name,
                server=is_server,
                client=(not is_server) or self.server_clients,
            )
        subnet.record(self.root, self.hosts.values())

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
                if p.crashed():
                    raise RuntimeError(f"{h.name}: shoal {role} exited with {p.popen.returncode}:\n{h.log(role)[-4000:]}")

    def close(self) -> None:
        """Tear everything down. Idempotent; never raises for what is already gone."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        errors: list[str] = []
        for h in self.hosts.values():
            try:
                processes.kill(h, containers=True)
            except Exception as exc:  # keep sweeping
                errors.append(f"{h.name}: {exc}")
        hosts = list(self.hosts.values())
        sweep(self.root, [h.netns for h in hosts], self.subnet.bridge if self.subnet else "", [h.veth for h in hosts])
        if self.subnet is not None:
            self.subnet.release()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            print(f"devcluster teardown: {'; '.join(errors)}", file=sys.stderr)

    # --- processes ---
    def start_host(self, host: str | Host) -> Host:
        """Start the host's shoal processes (again), with the same data directories."""
        h = self.host(host)
        if h.server and not h.alive("server"):
            processes.spawn(h, "server", [*processes.server_args(h, self.servers), *self.server_flags],
                            log_level=self.log_level, env=self.env)
        if h.client and not h.alive("client"):
            processes.spawn(h, "client", [*processes.client_args(h, self.servers, self.raw_exec), *self.client_flags],
                            log_level=self.log_level, env=self.env)
        return h

    def kill(self, host: str | Host, containers: bool = True) -> float:
        """SIGKILL every process of the host; returns the time (monotonic) of the kill.

        ``containers=True`` (a power cut): its runc containers die too and its mounts go,
        as they would in a reboot; its data directories stay. ``containers=False`` (every
        process of the host crashed): containers, which live in their own namespaces, keep
        running.
        """
        t = time.monotonic()
        processes.kill(self.host(host), containers)
        return t

    def stop(self, host: str | Host, timeout: float = 30.0) -> bool:
        """A clean shutdown of the host's processes (:func:`processes.stop`); True if one had to be forced."""
        return processes.stop(self.host(host), timeout)

    def restart(self, host: str | Host, graceful: bool = True) -> Host:
        h = self.host(host)
        if graceful:
            self.stop(h)
        else:
            self.kill(h, containers=False)
        return self.start_host(h)

    # --- partitions ---
    def partition(self, host: str | Host, mode: str = "nft") -> float:
        """Cut the host off the underlay in both directions (:func:`network.partition`); returns the time (monotonic)."""
        network.partition(self.host(host), mode)
        return time.monotonic()

    def heal(self, host: str | Host) -> float:
        network.heal(self.host(host))
        return time.monotonic()

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
        return containers_under(self.host(host).dir if host is not None else self.root)

    def running_containers(self) -> dict[str, list[dict[str, Any]]]:
        """Host name -> its running runc containers."""
        running = [c for c in runc_containers() if c.get("status") == "running"]
        return {h.name: containers_under(h.dir, running) for h in self.hosts.values()}

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the ``shoal`` CLI against the cluster (from the runner, through the bridge)."""
        live = [h.api for h in self.servers if h.alive("server") and not h.partitioned] or self.server_addresses
        env = {**os.environ, "SHOAL_ADDR": live[0]}
        return subprocess.run([*processes.shoal_command(), *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def logs(self) -> str:
        return "\n".join(h.log() for h in self.hosts.values())

    def describe(self) -> str:
        subnet = self.subnet
        where = f"{subnet.cidr} (bridge {subnet.bridge}, runner {subnet.gateway})" if subnet else "no network yet"
        lines = [f"shoal dev cluster on {where}, dir {self.root}"]
        for h in self.hosts.values():
            roles = "+".join(r for r, on in (("server", h.server), ("client", h.client)) if on)
            pids = ",".join(str(p.pid) for p in h.procs.values() if p.running())
            lines.append(f"  {h.name:<9} {h.address:<15} {roles:<13} netns {h.netns:<18} pid {pids:<14} logs {h.log_dir}")
        lines.append(f"  export SHOAL_ADDR={self.server_addresses[0]}")
        return "\n".join(lines)
