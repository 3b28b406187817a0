"""One machine of a dev cluster: a network namespace, an address, directories and its shoal processes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where named network namespaces are bound (as `ip netns` does)
API_PORT = 4646
RAFT_PORT = 4647


@dataclass(slots=True)
class HostProcess:
    """One ``shoal agent`` process of a host. ``expected_exit``: the harness killed or stopped it on purpose."""

    role: str  # "server" or "client"
    popen: subprocess.Popen[bytes]
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def crashed(self) -> bool:
        """It exited and nobody asked it to."""
        return not self.running() and not self.expected_exit


@dataclass(slots=True)
class Host:
    """One machine of the cluster: a network namespace, an address, and its shoal processes."""

    name: str
    address: str
    netns: str
    veth: str  # the bridge side of its veth pair (in the root namespace)
    dir: Path
    server: bool = False
    client: bool = False
    procs: dict[str, HostProcess] = field(default_factory=dict)
    partitioned: str | None = None  # the partition mode ("nft", "link") while cut off

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

    def log_path(self, role: str) -> Path:
        return self.log_dir / f"{role}.log"

    def nsenter(self) -> list[str]:
        """The command prefix that runs a program in this host's network namespace (only that one)."""
        return ["nsenter", f"--net={self.netns_path}", "--"]

    def alive(self, role: str | None = None) -> bool:
        roles = [role] if role else list(self.procs)
        return any(r in self.procs and self.procs[r].running() for r in roles)

    def log(self, role: str = "") -> str:
        names = [role] if role else ["server", "client"]
        out = []
        for r in names:
            p = self.log_path(r)
            if p.exists():
                out.append(f"--- {self.name} {r}.log ---\n" + p.read_text(errors="replace"))
        return "\n".join(out)
