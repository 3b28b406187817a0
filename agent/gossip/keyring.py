"""The gossip encryption keyring: AES-GCM keys, one primary, and the file that keeps them.

Every gossip packet and TCP frame is sealed with the primary key and opened with any installed
key (memberlist's keyring and ``security.go``), which is what makes a rotation lose no member:
install the new key everywhere (members still seal with the old one, everyone opens both), make
it primary everywhere (members seal with the new one, everyone still opens the old one), then
remove the old key (``shoal operator gossip keyring -install|-use|-remove|-list``).

A sealed message is ``VERSION || nonce (12 random bytes) || AES-GCM(ciphertext || tag)``; the
version byte is authenticated with the caller's associated data, so a flipped version byte fails
like any other tampering. Keys are 16, 24 or 32 bytes (AES-128/192/256), written in base64 as
``generate`` makes them.

Nonces are random, as memberlist's, so a key is good for about 2**32 sealed messages across the
cluster (NIST SP 800-38D's bound): some three days for 1,000 members at the default gossip rates
(about 17 packets a second each). Rotate keys well within that.

Nothing here logs, and no error message, ``repr`` or ``str`` names a key: a key is a secret.
The file (``<data_dir>/gossip.keyring``) is JSON ``{"keys": [...], "primary": "..."}``, mode
0600, replaced atomically and fsynced, because a rotation lost to a power cut would leave the
member unable to talk to anyone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal.errors import ShoalError

KEYRING_FILE = "gossip.keyring"
VERSION = 1
KEY_SIZES = (16, 24, 32)
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE  # bytes a sealed message has beyond its plaintext
MAX_FILE_SIZE = 64 * 1024  # a keyring file is a few keys; anything bigger is not one
FILE_MODE = 0o600

NO_KEY = "no installed key decrypts it"
TRUNCATED = "truncated"

Key = bytes | str  # raw bytes, or base64 text as the CLI and the file carry it


class KeyringError(ShoalError):
    """A packet that cannot be opened, a keyring operation refused, or a bad keyring file.

    ``reason`` says why in words that never include a key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def generate() -> str:
    """A new random 32-byte (AES-256) key, base64, for ``-install`` or the agent's ``encrypt``."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def decode_key(key: Key) -> bytes:
    """``key`` as raw bytes, checked: base64 text is decoded; the length must be an AES key's."""
    if isinstance(key, str):
        try:
            key = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError("a key must be base64") from None
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"a key must be 16, 24 or 32 bytes, not {len(key)}")
    return bytes(key)


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


class Keyring:
    """The installed keys, the primary first; seals with the primary, opens with any.

    With a ``path``, every change (``install``, ``use``, ``remove``) is written to the file before
    it takes effect, so a member that restarts comes back with the keys it last had."""

    __slots__ = ("_ring", "path")

    def __init__(self, keys: list[Key], primary: Key, *, path: Path | None = None):
        self.path = path
        self._ring: tuple[tuple[bytes, AESGCM], ...] = ()
        self._set(list(dict.fromkeys([decode_key(primary), *map(decode_key, keys)])))

    def __repr__(self) -> str:
        return f"Keyring({len(self._ring)} key(s), path={self.path})"

    @property
    def _keys(self) -> list[bytes]:
        return [key for key, _ in self._ring]

    def _set(self, keys: list[bytes]) -> None:
        """Make ``keys`` (the primary first, no duplicates) the installed ones, in one assignment:
        a packet sealed or opened meanwhile (from another thread) sees the old ring or the new."""
        ciphers = dict(self._ring)
        self._ring = tuple((k, ciphers.get(k) or AESGCM(k)) for k in keys)

    def _change(self, keys: list[bytes]) -> None:
        """Persist ``keys`` (when the keyring has a file), then install them."""
        if self.path is not None:
            _write(self.path, keys)
        self._set(keys)

    # Sealing.

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """``plaintext`` encrypted and authenticated with the primary key (and ``aad``, not sent)."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        header = bytes((VERSION,))
        return header + nonce + self._ring[0][1].encrypt(nonce, plaintext, header + aad)

    def open(self, data: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of a sealed message, trying every installed key, the primary first.

        Raises ``KeyringError`` with the reason: truncated, an unknown version, or no key fits."""
        if not data:
            raise KeyringError(TRUNCATED)
        if data[0] != VERSION:
            raise KeyringError(f"unknown version {data[0]}")
        if len(data) < OVERHEAD:
            raise KeyringError(TRUNCATED)
        header, nonce, sealed = data[:1], data[1:1 + NONCE_SIZE], data[1 + NONCE_SIZE:]
        for _, cipher in self._ring:
            try:
                return cipher.decrypt(nonce, sealed, header + aad)
            except InvalidTag:
                continue
        raise KeyringError(NO_KEY)

    # The operator's commands.

    def install(self, key: Key) -> None:
        """Add a key for opening (a no-op when it is already installed); the primary is unchanged."""
        raw = decode_key(key)
        if raw not in self._keys:
            self._change([*self._keys, raw])

    def use(self, key: Key) -> None:
        """Make an installed key the primary: from now on everything is sealed with it."""
        raw = decode_key(key)
        if raw not in self._keys:
            raise KeyringError("the key is not installed: install it first")
        if raw != self._ring[0][0]:
            self._change([raw, *(k for k in self._keys if k != raw)])

    def remove(self, key: Key) -> None:
        """Drop an installed key; messages sealed with it no longer open. Not the primary."""
        raw = decode_key(key)
        if raw not in self._keys:
            raise KeyringError("the key is not installed")
        if raw == self._ring[0][0]:
            raise KeyringError("the primary key cannot be removed: make another key primary first")
        self._change([k for k in self._keys if k != raw])

    def list(self) -> list[str]:
        """The installed keys in base64, the primary first and marked ``" (primary)"``."""
        primary, *others = map(_b64, self._keys)
        return [f"{primary} (primary)", *others]

    @property
    def primary(self) -> str:
        """The primary key in base64."""
        return _b64(self._ring[0][0])

    # The file.

    def save(self) -> None:
        """Write the keyring to its file (atomically, mode 0600)."""
        if self.path is None:
            raise KeyringError("the keyring has no file")
        _write(self.path, self._keys)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """The keyring kept in ``path``; every later change is written back there.

        Raises ``KeyringError`` naming the file and what is wrong with it (never a key)."""
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise KeyringError(f"{path}: cannot read the keyring: {exc.strerror}") from None
        if len(data) > MAX_FILE_SIZE:
            raise KeyringError(f"{path}: not a keyring: larger than {MAX_FILE_SIZE} bytes")
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise KeyringError(f"{path}: not a keyring: not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
            raise KeyringError(f'{path}: not a keyring: expected {{"keys": [...], "primary": "..."}}')
        if not isinstance(doc.get("primary"), str):
            raise KeyringError(f"{path}: the primary key is missing")
        keys = []
        for i, text in enumerate(doc["keys"]):
            if not isinstance(text, str):
                raise KeyringError(f"{path}: key {i + 1} is not a string")
            try:
                keys.append(decode_key(text))
            except KeyringError as exc:
                raise KeyringError(f"{path}: key {i + 1}: {exc.reason}") from None
        try:
            primary = decode_key(doc["primary"])
        except KeyringError as exc:
            raise KeyringError(f"{path}: the primary key: {exc.reason}") from None
        if primary not in keys:
            raise KeyringError(f"{path}: the primary key is not among the keys")
        return cls(keys, primary, path=path)


def _write(path: Path, keys: list[bytes]) -> None:
    """Replace ``path`` with ``keys`` (the primary first): a 0600 temporary file, fsynced, renamed."""
    body = json.dumps({"keys": [_b64(k) for k in keys], "primary": _b64(keys[0])}, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
            f.write(body.encode())
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise KeyringError(f"{path}: cannot write the keyring: {exc.strerror}") from None
