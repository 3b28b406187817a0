"""Acceptance: images pulled from a real registry (Debian's docker-registry on loopback).

An image built here from busybox-static is pushed with skopeo; a job naming
``127.0.0.1:PORT/busybox:1`` pulls and runs it. A blob corrupted in the
registry's storage is refused by digest, with a clear error, and nothing of it
reaches the agent's store.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.cluster import DevAgent, build_busybox_rootfs, free_port, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("docker-registry") is None or shutil.which("skopeo") is None,
                       reason="needs docker-registry and skopeo (make deps)"),
]

JOB = """
job "%(name)s" {
  group "g" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    task "t" {
      driver       = "docker"
      kill_timeout = "200ms" # sleep is pid 1: it ignores SIGTERM
      config {
        image   = "%(image)s"
        command = "/bin/sh"
        args    = ["-c", "echo pulled-and-running; cat /etc/which; exec sleep 3600"]
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
"""


class Registry:
    """docker-registry serving a temporary directory on 127.0.0.1:PORT (stopped by pid)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.storage = root / "storage"
        self.storage.mkdir(parents=True)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.storage}\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._up, 20, "the registry to listen")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"docker-registry exited: {(self.root / 'registry.log').read_text()}")
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def push(self, layout: Path, ref: str) -> None:
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:{ref}",
                        f"docker://{self.host}/{ref}"], check=True, capture_output=True, timeout=60)

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def registry(tmp_path: Path):
    r = Registry(tmp_path / "registry")
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def agent(tmp_path: Path):
    a = DevAgent(root=tmp_path / "agent", image_dir=tmp_path / "agent-images")
    try:
        yield a.start("--default-registry", "")
    finally:
        a.stop()


def _alloc(agent: DevAgent, job: str) -> dict:
    status = agent.cli("job", "status", job, "--json").json()
    a = min(status["allocations"], key=lambda a: a["create_time"])  # the first (a failed one may be replaced)
    return agent.cli("alloc", "status", a["id"], "--json").json()["allocation"]


def test_pull_from_a_registry_and_refuse_a_corrupted_blob(tmp_path: Path, registry: Registry, agent: DevAgent) -> None:
    from shoal.agent.imageimport import import_rootfs
    from shoal.agent.imagestore import ImageStore

    # an image built from busybox-static, pushed from an OCI layout
    layout = ImageStore(tmp_path / "layout")
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "etc" / "which").write_text("image one\n")
    import_rootfs(layout, rootfs, "busybox:1")
    registry.push(tmp_path / "layout", "busybox:1")

    job = tmp_path / "job.hcl"
    job.write_text(JOB % {"name": "pulled", "image": f"{registry.host}/busybox:1"})
    t0 = time.monotonic()
    r = agent.cli("job", "run", str(job))
    assert r.code == 0, r.out + r.err + agent.logs()[-3000:]
    alloc = _alloc(agent, "pulled")
    assert alloc["client_status"] == "running"
    pulled = next(e for e in alloc["task_states"]["t"]["events"] if e["type"] == "Driver")
    assert pulled["message"] == f"Downloading image {registry.host}/busybox:1"
    out = wait_for(lambda: (lambda r: r.out if "image one" in r.out else None)(
        agent.cli("alloc", "logs", alloc["id"])), 10, "the task's output")
    assert out.splitlines() == ["pulled-and-running", "image one"]
    listed = json.loads(agent.cli("image", "list", "--json", "--image-dir", str(agent.image_dir)).out)
    assert [i["ref"] for i in listed] == [f"{registry.host}/busybox:1"]
    print(f"\npull + start: {time.monotonic() - t0:.2f}s")
    assert agent.cli("job", "stop", "pulled").code == 0

    # a second image whose layer blob is corrupted in the registry's storage
    (rootfs / "etc" / "which").write_text("image two\n")
    import_rootfs(layout, rootfs, "busybox:2")
    registry.push(tmp_path / "layout", "busybox:2")
    layer = layout.resolve("busybox:2").layers[0].digest
    blob = registry.blob_path(layer)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    blob.write_bytes(bytes(data))

    job.write_text(JOB % {"name": "corrupt", "image": f"{registry.host}/busybox:2"})
    r = agent.cli("job", "run", str(job))
    assert r.code != 0  # the allocation failed
    alloc = _alloc(agent, "corrupt")
    assert alloc["client_status"] == "failed"
    events = alloc["task_states"]["t"]["events"]
    failure = next(e["message"] for e in events if e["type"] == "Driver Failure")
    assert f"blob {layer}: digest mismatch" in failure and "corrupted" in failure, failure
    store = ImageStore(agent.image_dir)
    assert not store.has_blob(layer)
    assert [d["annotations"]["org.opencontainers.image.ref.name"] for d in store.descriptors()] == \
        [f"{registry.host}/busybox:1"]
