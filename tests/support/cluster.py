"""Real shoal processes for end-to-end tests: start, wait for, run the CLI against, tear down."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shoal.netoverlay import nft
from shoal.netoverlay.bridge import remove_leftovers
from shoal.netoverlay.netns import Route

SHOAL = str(Path(sys.executable).parent / "shoal")

# Allocations of agents on this machine's own namespace get addresses from here: a test range, never
# the 10.x default that may be a real network on the machine (the dev cluster's hosts are namespaces).
TEST_OVERLAY_CIDR = "198.19.0.0/16"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on loopback for a server to listen on, below the kernel's ephemeral range
    (32768+ here): a port the kernel picked for us could be taken, before our server binds it, as the
    local end of some outgoing connection (a gRPC channel of this very test)."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


def build_busybox_rootfs(dest: Path) -> Path:
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    subprocess.run(["chroot", str(dest), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


def wait_for(cond, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@dataclass
class DevAgent:
    """``shoal agent --dev`` as a subprocess with its own ports and directories."""

    root: Path
    image_dir: Path
    api_port: int = field(default_factory=free_port)
    raft_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)  # its DNS server on 127.0.0.1 (8600 may be taken)
    extra: tuple[str, ...] = ()  # more ``shoal agent`` flags
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start(self, *extra: str) -> DevAgent:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "agent.log", "wb")
        self.proc = subprocess.Popen(
            [SHOAL, "agent", "--dev", "--bind", self.address, "--raft-bind", f"127.0.0.1:{self.raft_port}",
             "--data-dir", str(self.data_dir), "--image-dir", str(self.image_dir), "--log-json",
             "--default-registry", "", "--overlay-cidr", TEST_OVERLAY_CIDR, "--dns-port", str(self.dns_port),
             "--gossip-bind", "127.0.0.1:0", *extra],  # tests never pull from the internet
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for(self._ready, 30, "the dev agent's node to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dev agent exited with {self.proc.returncode}:\n{self.logs()}")
        r = self.cli("node", "status", "--json")
        return r.code == 0 and any(n["status"] == "ready" for n in json.loads(r.out))

    def cli(self, *args: str, timeout: float = 120) -> Result:
        env = {**os.environ, "SHOAL_ADDR": self.address}
        p = subprocess.run([SHOAL, *args], capture_output=True, text=True, env=env, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)

    def logs(self) -> str:
        return (self.root / "agent.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (dev mode stops every allocation), then make sure nothing of ours is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        cleanup_allocs(self.data_dir / "client" / "allocs")


def cleanup_allocs(allocs_dir: Path) -> None:
    """Last-resort cleanup of what a dead agent may have left: our containers and mounts only."""
    if not allocs_dir.is_dir():
        return
    ids = {p.name for p in allocs_dir.iterdir()}
    listed = runc_list("-q").split()
    for cid in listed:
        if any(cid.startswith(f"shoal-{i}") for i in ids):
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True)
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(str(allocs_dir)):
            subprocess.run(["umount", "-l", target], capture_output=True)
    # the allocations' network namespaces and veths, the node's bridge and nftables table (an agent
    # that exited leaving its tasks running kept them for the next agent process)
    with Route() as ipr:
        remove_leftovers(ipr, sorted(ids), node=True)
    nft.remove()


@dataclass
class ServerProc:
    """One ``shoal agent --server`` process with its own loopback address and data dir."""

    root: Path
    host: str
    join: list[str] = field(default_factory=list)
    bootstrap_expect: int = 3
    api_port: int = field(default_factory=free_port)
    raft_port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()  # more ``shoal agent`` flags
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.api_port}"

    @property
    def raft(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def start(self) -> ServerProc:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [SHOAL, "agent", "--server", "--data-dir", str(self.root / "data"), "--bind", self.address,
             "--raft-bind", self.raft, "--join", ",".join(j for j in self.join if j != self.address),
             "--bootstrap-expect", str(self.bootstrap_expect), "--node-name", self.root.name, "--log-json",
             "--overlay-cidr", TEST_OVERLAY_CIDR, *self.extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, timeout: float = 60) -> Result:
        env = {**os.environ, "SHOAL_ADDR": self.address}
        p = subprocess.run([SHOAL, *args], capture_output=True, text=True, env=env, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr)

    def logs(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")


class ServerCluster:
    """N servers on 127.0.0.{1..N}, joined through each other's API addresses."""

    def __init__(self, root: Path, n: int = 3):
        self.root = root
        self.servers: list[ServerProc] = []
        for i in range(n):
            self.servers.append(ServerProc(root / f"server{i + 1}", host=f"127.0.0.{i + 1}", bootstrap_expect=n))
        addrs = [s.address for s in self.servers]
        for s in self.servers:
            s.join = addrs

    def start(self) -> ServerCluster:
        for s in self.servers:
            s.start()
        self.wait_leader()
        return self

    def add(self) -> ServerProc:
        i = len(self.servers) + 1
        s = ServerProc(self.root / f"server{i}", host=f"127.0.0.{i}", join=[x.address for x in self.servers if x.alive()],
                       bootstrap_expect=1)
        self.servers.append(s)
        return s.start()

    def live(self) -> list[ServerProc]:
        return [s for s in self.servers if s.alive()]

    def info(self, s: ServerProc) -> dict | None:
        from shoal.rpc.sync import call

        try:
            return call(s.address, "Server.Info", {}, timeout=2.0)
        except Exception:
            return None

    def leader(self) -> ServerProc | None:
        for s in self.live():
            i = self.info(s)
            if i and i["is_leader"]:
                return s
        return None

    def wait_leader(self, timeout: float = 30) -> ServerProc:
        return wait_for(self.leader, timeout, "a Raft leader", interval=0.05)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def runc_list(*args: str) -> str:
    """``runc list`` output. It exits 1 when it meets a container whose state directory is being
    created or removed at that instant (other containers starting or stopping): retry briefly."""
    for _ in range(20):
        p = subprocess.run(["runc", "list", *args], capture_output=True, text=True)
        if p.returncode == 0:
            return p.stdout
        time.sleep(0.05)
    raise AssertionError(f"runc list kept failing: {p.stderr.strip()}")
