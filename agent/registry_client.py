"""The client side of the OCI Distribution API (Docker Registry HTTP API v2): references, credentials, HTTP.

``GET /v2/<repo>/manifests/<tag|digest>`` (:meth:`RegistryClient.fetch_manifest`, verified
against its digest) and ``GET /v2/<repo>/blobs/<digest>`` (:meth:`RegistryClient.blob`, a
stream the caller hashes). ``imagepull.py`` uses these to pull an image into the store.

Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Bearer``
(a token from the realm, with the credentials as basic auth when there are any)
or ``Basic``. Plain http is used only for registries marked insecure; loopback
registries (127.0.0.0/8, ::1, localhost) are insecure by default.

Blocking code (stdlib ``http.client``): the agent runs it in a thread.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import re
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from shoal.agent.imagetypes import MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, ImageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_ACCEPT = ", ".join((MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST))
MAX_MANIFEST = 4 << 20
MAX_REDIRECTS = 5
USER_AGENT = "shoal-agent"
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class PullError(ImageError):
    """A pull failed. ``recoverable``: worth retrying later (the network, the registry being down)."""


@dataclass(slots=True, frozen=True)
class ImageRef:
    registry: str  # host[:port] as written ("docker.io" for Docker Hub)
    repository: str  # "library/busybox"
    tag: str = ""
    digest: str = ""

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        name = f"{self.registry}/{self.repository}"
        return f"{name}@{self.digest}" if self.digest else f"{name}:{self.tag or 'latest'}"


def is_qualified(ref: str) -> bool:
    """True if ``ref`` names its registry (``host.domain/...``, ``host:port/...``, ``localhost/...``)."""
    first, sep, _rest = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def parse_ref(ref: str, default_registry: str = DOCKER_HUB) -> ImageRef:
    """Split an image reference the way Docker does: ``[registry/]repo[:tag][@digest]``."""
    ref = ref.strip()
    if not ref or ref.startswith("/"):
        raise ImageError(f"invalid image reference {ref!r}")
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ImageError(f"invalid image reference {ref!r}: only sha256 digests are supported")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not re.match(r"^[\w][\w.-]{0,127}$", tag):
            raise ImageError(f"invalid image reference {ref!r}: bad tag {tag!r}")
    if is_qualified(name):
        registry, _, repo = name.partition("/")
    else:
        registry, repo = default_registry or DOCKER_HUB, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repo:
        repo = f"library/{repo}"
    if not repo or not all(_REPO_COMPONENT.match(c) for c in repo.split("/")):
        raise ImageError(f"invalid image reference {ref!r}: bad repository name {repo!r}")
    if not tag and not digest:
        tag = "latest"
    return ImageRef(registry, repo, tag, digest)


def is_loopback(registry: str) -> bool:
    host = registry
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True, frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    token: str = ""  # an identity/registry token used as the bearer token directly

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def load_auth_file(path: Path | str) -> dict[str, Credentials]:
    """Credentials per registry from a Docker ``config.json`` (``auths`` with ``auth`` or username/password)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read registry credentials from {path}: {exc}") from exc
    out: dict[str, Credentials] = {}
    for host, entry in (data.get("auths") or {}).items():
        if not isinstance(entry, dict):
            continue
        user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ImageError(f"{path}: the auth entry for {host} is not base64 of user:password") from None
        host = re.sub(r"^https?://", "", str(host)).split("/", 1)[0]
        if host in ("index.docker.io", "registry-1.docker.io"):
            host = DOCKER_HUB
        out[host] = Credentials(user, password, str(entry.get("identitytoken") or ""))
    return out


@dataclass(slots=True)
class RegistryConfig:
    insecure: frozenset[str] = frozenset()  # registries (host:port) reached over plain http
    auths: dict[str, Credentials] = field(default_factory=dict)
    default_registry: str = DOCKER_HUB  # for names without a registry ("busybox:1"); "" = local store only
    timeout: float = 30.0
    ca_file: str | None = None

    def scheme(self, registry: str) -> str:
        return "http" if registry in self.insecure or is_loopback(registry) else "https"


@dataclass(slots=True)
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            self.conn.close()


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


class RegistryClient:
    """One registry conversation per pull; tokens are cached per (registry, repository)."""

    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.cfg = config or RegistryConfig()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._basic: set[str] = set()  # registries that asked for basic auth: send it up front

    # ---------------------------------------------------------------- http
    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self.cfg.ca_file)
        return self._ssl

    def _open(self, url: str, headers: dict[str, str], what: str) -> _Response:
        """GET ``url`` following redirects (credentials are not sent to another host)."""
        origin = urllib.parse.urlsplit(url).netloc
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn: http.client.HTTPConnection
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.netloc, timeout=self.cfg.timeout, context=self._context())
            else:
                conn = http.client.HTTPConnection(parts.netloc, timeout=self.cfg.timeout)
            send = dict(headers)
            send.setdefault("User-Agent", USER_AGENT)
            if parts.netloc != origin:
                send.pop("Authorization", None)
            try:
                conn.request("GET", path, headers=send)
                resp = conn.getresponse()
            except ssl.SSLError as exc:
                conn.close()
                raise PullError(f"{what}: TLS error talking to {parts.netloc}: {exc} (is it a plain-http registry? "
                                "mark it insecure in the agent config)", recoverable=False) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise PullError(f"{what}: cannot reach {parts.scheme}://{parts.netloc}: {exc}", recoverable=True) from None
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location", ""))
                resp.close()
                conn.close()
                continue
            return _Response(resp.status, resp.headers, resp, conn)
        raise PullError(f"{what}: too many redirects", recoverable=False)

    def _url(self, ref: ImageRef, kind: str, reference: str) -> str:
        return f"{self.cfg.scheme(ref.registry)}://{ref.api_host}/v2/{ref.repository}/{kind}/{reference}"

    def _token(self, ref: ImageRef, params: dict[str, str], creds: Credentials | None, what: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise PullError(f"{what}: the registry asked for a bearer token without a realm", recoverable=False)
        query = {k: v for k, v in (("service", params.get("service")),
                                   ("scope", params.get("scope") or f"repository:{ref.repository}:pull")) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if creds is not None and (creds.username or creds.password):
            headers["Authorization"] = creds.basic()
        resp = self._open(url, headers, what)
        try:
            body = resp.body.read(1 << 20)
        finally:
            resp.close()
        if resp.status in (401, 403):
            raise PullError(f"{what}: the token service at {realm} refused the "
                            f"{'credentials' if creds else 'anonymous request'} (HTTP {resp.status})")
        if resp.status != 200:
            raise PullError(f"{what}: the token service at {realm} answered HTTP {resp.status}",
                            recoverable=resp.status >= 500)
        try:
            data = json.loads(body)
            token = str(data.get("token") or data.get("access_token") or "")
        except (ValueError, AttributeError):
            token = ""
        if not token:
            raise PullError(f"{what}: the token service at {realm} returned no token")
        ttl = float(data.get("expires_in") or 60)
        self._tokens[(ref.registry, ref.repository)] = (token, time.monotonic() + max(10.0, ttl - 5))
        return token

    def _get(self, ref: ImageRef, kind: str, reference: str, accept: str, what: str,
             creds: Credentials | None) -> _Response:
        """GET with authentication: answer the registry's challenge once, then retry."""
        url = self._url(ref, kind, reference)
        headers = {"Accept": accept}
        cached = self._tokens.get((ref.registry, ref.repository))
        if cached and cached[1] > time.monotonic():
            headers["Authorization"] = f"Bearer {cached[0]}"
        elif ref.registry in self._basic and creds is not None:
            headers["Authorization"] = creds.basic()
        elif creds is not None and creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        for attempt in range(2):
            resp = self._open(url, headers, what)
            if resp.status != 401 or attempt == 1:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            scheme, params = _parse_challenge(challenge)
            if scheme == "bearer":
                headers["Authorization"] = "Bearer " + self._token(ref, params, creds, what)
            elif scheme == "basic":
                if creds is None or not (creds.username or creds.password):
                    raise PullError(f"{what}: {ref.registry} requires a username and password "
                                    "(give config {{ auth {{ ... }} }} or the agent's --registry-auth file)")
                headers["Authorization"] = creds.basic()
                self._basic.add(ref.registry)
            else:
                raise PullError(f"{what}: {ref.registry} asked for unsupported authentication {challenge!r}")
        raise AssertionError("unreachable")

    @staticmethod
    def _status_error(resp: _Response, what: str, ref: ImageRef) -> PullError:
        try:
            detail = resp.body.read(4096).decode("utf-8", "replace")
            errors = json.loads(detail).get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or detail
        except (ValueError, AttributeError, OSError):
            pass
        finally:
            resp.close()
        if resp.status == 404:
            return PullError(f"{what}: not found in {ref.registry} ({detail.strip() or 'HTTP 404'})")
        if resp.status in (401, 403):
            return PullError(f"{what}: {ref.registry} refused access (HTTP {resp.status}; check the credentials)")
        return PullError(f"{what}: {ref.registry} answered HTTP {resp.status}: {detail.strip()[:300]}",
                         recoverable=resp.status >= 500 or resp.status == 429)

    # ----------------------------------------------------------- manifests
    def fetch_manifest(self, ref: ImageRef, reference: str, creds: Credentials | None) -> tuple[bytes, str, str]:
        """(body, media type, digest) of one manifest or index, verified."""
        what = f"pulling {ref.registry}/{ref.repository}:{reference}" if not reference.startswith("sha256:") \
            else f"pulling {ref.registry}/{ref.repository}@{reference}"
        resp = self._get(ref, "manifests", reference, MANIFEST_ACCEPT, what, creds)
        if resp.status != 200:
            raise self._status_error(resp, what, ref)
        try:
            body = resp.body.read(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise PullError(f"{what}: reading the manifest failed: {exc}", recoverable=True) from None
        finally:
            resp.close()
        if len(body) > MAX_MANIFEST:
            raise PullError(f"{what}: the manifest is larger than {MAX_MANIFEST} bytes; refusing it")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith("sha256:") else resp.headers.get("Docker-Content-Digest", "")
        if expected.startswith("sha256:") and expected != digest:
            raise PullError(f"{what}: manifest digest mismatch: the registry sent content with digest {digest}, "
                            f"expected {expected}; refusing the image")
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise PullError(f"{what}: the manifest is not JSON: {exc}") from None
        media_type = str(parsed.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0])
        if parsed.get("schemaVersion") == 1:
            raise PullError(f"{what}: schema 1 manifests are not supported (push the image again with a current tool)")
        return body, media_type, digest

    # --------------------------------------------------------------- blobs
    @contextlib.contextmanager
    def blob(self, ref: ImageRef, digest: str, creds: Credentials | None) -> Iterator[BinaryIO]:
        """The body of one blob, streaming (the reader hashes it: ``imagepull`` refuses a mismatch).

        A read that fails (the connection) inside the ``with`` is a recoverable :class:`PullError`.
        """
        what = f"pulling {ref.registry}/{ref.repository} blob {digest}"
        resp = self._get(ref, "blobs", digest, "*/*", what, creds)
        if resp.status != 200:
            raise self._status_error(resp, what, ref)
        try:
            yield resp.body
        except (OSError, http.client.HTTPException) as exc:
            raise PullError(f"{what}: download failed: {exc}", recoverable=True) from None
        finally:
            resp.close()
