"""Registry pulls against an in-process fake registry (auth flows, indexes, digests) — no root needed."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shoal.agent.imagemgr import ImageManager
from shoal.agent.imagepull import pull_image
from shoal.agent.imagestore import ImageStore
from shoal.agent.imagetypes import MT_OCI_INDEX, MT_OCI_MANIFEST, ImageNotFound, go_arch
from shoal.agent.registry_client import (
    Credentials,
    PullError,
    RegistryClient,
    RegistryConfig,
    is_loopback,
    is_qualified,
    load_auth_file,
    parse_ref,
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


class FakeRegistry:
    """Serves one repository; ``auth`` is None, "basic" or "bearer"."""

    def __init__(self, auth: str | None = None, user: str = "u", password: str = "p") -> None:
        self.auth, self.user, self.password = auth, user, password
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag or digest -> (media type, body)
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.blob_delay = 0.0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _authorized(self) -> bool:
                got = self.headers.get("Authorization", "")
                if registry.auth is None:
                    return True
                if registry.auth == "basic":
                    want = "Basic " + base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
                    if got == want:
                        return True
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                    self.end_headers()
                    return False
                if got == "Bearer tok-123":
                    return True
                self.send_response(401)
                host = self.headers["Host"]
                self.send_header("WWW-Authenticate",
                                 f'Bearer realm="http://{host}/token",service="fake",scope="repository:app/web:pull"')
                self.end_headers()
                return False

            def do_GET(self):
                with registry.lock:
                    registry.requests.append(self.path)
                if self.path.startswith("/token"):
                    want = "Basic " + base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
                    if self.headers.get("Authorization") != want or "scope=repository%3Aapp%2Fweb%3Apull" not in self.path:
                        self.send_response(401)
                        self.end_headers()
                        return
                    body = json.dumps({"token": "tok-123", "expires_in": 300}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if not self._authorized():
                    return
                parts = self.path.split("/")
                # /v2/app/web/manifests/REF or /v2/app/web/blobs/DIGEST
                kind, ref = parts[-2], parts[-1]
                if kind == "manifests" and ref in registry.manifests:
                    mt, body = registry.manifests[ref]
                    self.send_response(200)
                    self.send_header("Content-Type", mt)
                    self.send_header("Docker-Content-Digest", _digest(body))
                elif kind == "blobs" and ref in registry.blobs:
                    import time

                    time.sleep(registry.blob_delay)
                    body = registry.blobs[ref]
                    self.send_response(200)
                else:
                    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}).encode()
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def add_image(self, tag: str, files: dict[str, bytes], *, index: bool = False, cmd: list[str] | None = None) -> str:
        layer = _layer(files)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/srv"},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.blobs[_digest(layer)] = layer
        self.blobs[_digest(config)] = config
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(layer),
                        "size": len(layer)}],
        }).encode()
        self.manifests[_digest(manifest)] = (MT_OCI_MANIFEST, manifest)
        top = manifest
        if index:
            other = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": {}, "layers": []}).encode()
            self.manifests[_digest(other)] = (MT_OCI_MANIFEST, other)
            top = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
                {"mediaType": MT_OCI_MANIFEST, "digest": _digest(other), "size": len(other),
                 "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": MT_OCI_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
                 "platform": {"os": "linux", "architecture": go_arch()}},
                {"mediaType": MT_OCI_MANIFEST, "digest": _digest(other), "size": len(other),
                 "platform": {"os": "unknown", "architecture": "unknown"}},
            ]}).encode()
            self.manifests[_digest(top)] = (MT_OCI_INDEX, top)
        self.manifests[tag] = self.manifests[_digest(top)]
        return _digest(layer)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_registry():
    regs: list[FakeRegistry] = []

    def make(**kw) -> FakeRegistry:
        r = FakeRegistry(**kw)
        regs.append(r)
        return r

    yield make
    for r in regs:
        r.close()


def test_parse_ref() -> None:
    r = parse_ref("busybox")
    assert (r.registry, r.repository, r.tag, r.digest) == ("docker.io", "library/busybox", "latest", "")
    assert str(r) == "docker.io/library/busybox:latest" and r.api_host == "registry-1.docker.io"
    r = parse_ref("127.0.0.1:5000/busybox:1")
    assert (r.registry, r.repository, r.tag) == ("127.0.0.1:5000", "busybox", "1")
    r = parse_ref("ghcr.io/org/app@sha256:" + "a" * 64)
    assert r.registry == "ghcr.io" and r.reference == "sha256:" + "a" * 64
    assert parse_ref("redis:7", "mirror.local:5000").registry == "mirror.local:5000"
    assert is_qualified("localhost/app") and is_qualified("a.b/c") and not is_qualified("library/busybox")
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:1") and is_loopback("[::1]:5000")
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("registry.example.com")
    for bad in ("", "/abs/path", "UPPER/case", "app@sha256:short"):
        with pytest.raises(Exception):
            parse_ref(bad)


def test_auth_file(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"me:secret").decode()},
        "127.0.0.1:5000": {"username": "a", "password": "b"},
    }}))
    auths = load_auth_file(f)
    assert auths["docker.io"] == Credentials("me", "secret")
    assert auths["127.0.0.1:5000"] == Credentials("a", "b")


@pytest.mark.parametrize("auth", [None, "basic", "bearer"])
def test_pull_with_auth_and_index(tmp_path: Path, fake_registry, auth) -> None:
    reg = fake_registry(auth=auth)
    reg.add_image("1", {"hello.txt": b"hi\n"}, index=True, cmd=["/bin/echo", "x"])
    store = ImageStore(tmp_path / "store")
    creds = {reg.host: Credentials("u", "p")} if auth else {}
    client = RegistryClient(RegistryConfig(auths=creds))
    info = pull_image(client, store, f"{reg.host}/app/web:1")
    assert info.ref == f"{reg.host}/app/web:1"
    image = store.resolve(f"{reg.host}/app/web:1")
    assert image.config.cmd == ("/bin/echo", "x") and image.config.working_dir == "/srv"
    (lower,) = store.lower_dirs(image)
    assert (lower / "hello.txt").read_bytes() == b"hi\n"
    # the s390x manifest and the attestation were not fetched, only ours
    assert len({p for p in reg.requests if "/manifests/" in p}) == 2
    # a second pull fetches manifests again but no blobs
    before = sum("/blobs/" in p for p in reg.requests)
    pull_image(client, store, f"{reg.host}/app/web:1")
    assert sum("/blobs/" in p for p in reg.requests) == before
    if auth == "bearer":
        assert any(p.startswith("/token") for p in reg.requests)


def test_wrong_credentials_and_missing_image(tmp_path: Path, fake_registry) -> None:
    store = ImageStore(tmp_path / "store")
    reg = fake_registry(auth="basic")
    reg.add_image("1", {"a": b"a"})
    with pytest.raises(PullError, match="requires a username and password"):
        pull_image(RegistryClient(), store, f"{reg.host}/app/web:1")
    with pytest.raises(PullError, match="refused access"):
        pull_image(RegistryClient(RegistryConfig(auths={reg.host: Credentials("u", "wrong")})), store,
                   f"{reg.host}/app/web:1")
    bearer = fake_registry(auth="bearer")
    with pytest.raises(PullError, match="token service .* refused"):
        pull_image(RegistryClient(RegistryConfig(auths={bearer.host: Credentials("u", "wrong")})), store,
                   f"{bearer.host}/app/web:1")
    open_reg = fake_registry()
    with pytest.raises(PullError, match="not found in"):
        pull_image(RegistryClient(), store, f"{open_reg.host}/app/web:nosuch")
    assert store.descriptors() == []


def test_corrupted_blob_is_refused(tmp_path: Path, fake_registry) -> None:
    reg = fake_registry()
    layer = reg.add_image("1", {"a": b"a" * 1000})
    good = reg.blobs[layer]
    reg.blobs[layer] = good[:-8] + bytes(8)  # same size, different content
    store = ImageStore(tmp_path / "store")
    with pytest.raises(PullError, match=rf"blob {layer}: digest mismatch.*corrupted"):
        pull_image(RegistryClient(), store, f"{reg.host}/app/web:1")
    assert not store.has_blob(layer) and store.descriptors() == []
    assert not [p for p in (tmp_path / "store" / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp")]
    # a manifest whose content does not match the digest it was asked by
    reg.blobs[layer] = good
    _mt, body = reg.manifests["1"]
    reg.manifests["1"] = (MT_OCI_MANIFEST, body.replace(b'"schemaVersion": 2', b'"schemaVersion":2 '))
    reg.manifests[_digest(body)] = reg.manifests["1"]
    with pytest.raises(PullError, match="manifest digest mismatch"):
        pull_image(RegistryClient(), store, f"{reg.host}/app/web@{_digest(body)}")


def test_manager_dedups_concurrent_pulls_and_collects_garbage(tmp_path: Path, fake_registry) -> None:
    reg = fake_registry()
    layer = reg.add_image("1", {"a": b"a"})
    reg.blob_delay = 0.2
    store = ImageStore(tmp_path / "store")
    mgr = ImageManager(store, RegistryConfig(default_registry=""), gc_delay=0.0)
    ref = f"{reg.host}/app/web:1"

    async def scenario():
        images = await asyncio.gather(*(mgr.get(ref) for _ in range(5)))
        return images

    images = asyncio.run(scenario())
    assert len({i.digest for i in images}) == 1 and mgr.pulls == 1
    assert sum(p.endswith(layer) for p in reg.requests) == 1
    # unqualified names are not pulled unless a default registry is set
    with pytest.raises(ImageNotFound):
        asyncio.run(mgr.get("nosuch:1"))
    # in use: kept; no longer in use and older than the delay: untagged, blobs removed
    digest = images[0].digest
    report = asyncio.run(mgr.gc({digest}, grace=0))
    assert report.untagged == [] and store.has_blob(layer)
    report = asyncio.run(mgr.gc(set(), grace=0))
    assert report.untagged == [ref] and report.blobs == 3
    assert not store.has_blob(layer) and store.descriptors() == []
