"""The wire between Raft servers: PySyncObj's TCP transport, with frames sealed by AES-256-GCM.

PySyncObj frames a message as ``zlib(pickle(message))`` in a Fernet token (AES-CBC, then
HMAC-SHA256, then base64; the receiver checks the HMAC twice). On the leader that was a quarter of
its Raft thread's CPU under a sustained write load: every entry goes to every follower, and every
follower answers each message. Shoal's entries are compact msgpack already, so here a frame is

    [u32 length][12-byte nonce][pickle(message) sealed with AES-256-GCM, 16-byte tag]

one pass of an AEAD, no compression, no base64. Under 64 clients' job registrations (three servers
and the clients on two cores), the leader's Raft thread used 0.30 cores for 2,000-2,400 writes/s
with PySyncObj's frames and 0.22 cores for 3,200-3,500 writes/s with these (per-thread CPU read
from /proc); ``bench/raft_write.py``, run alternately without and with them (3 pairs), went from
1,930-2,450 to 2,570-2,880 writes/s.

Keys. The master key is derived from the cluster's Raft password (PBKDF2-SHA256). PySyncObj's
handshake has each end of a connection send a fresh random 32-byte key; once a side knows the key
of the receiving end, its frames are sealed with a key of their own, HKDF(master, that random key),
under a counting nonce, and the receiver takes only the next count. So a frame cannot be replayed,
dropped, reordered or moved to another connection (Fernet tokens only carried a timestamp checked
to the second), and no nonce repeats under a key. The first frame of a connection, which carries
the connecting side's random key, is sealed with the master key under a random nonce.

Pickle is only ever read from a frame that authenticated, as before. A cluster without a password
sends bare pickled frames, as PySyncObj does.

The servers of one cluster must all speak this wire: it does not interoperate with PySyncObj's.
"""

from __future__ import annotations

import os
import pickle
import struct
import time

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

log = structlog.get_logger("shoal.raft.wire")

SALT = b"shoal raft wire v1"
PBKDF2_ITERATIONS = 100_000  # as PySyncObj's
NONCE = 12
_LENGTH = struct.Struct("<I")
_COUNTER = struct.Struct(">4xQ")  # 12-byte nonce: 4 zero bytes, then a 64-bit count
WARN_EVERY = 30.0  # seconds between warnings about frames that did not open


class FrameError(Exception):
    """A frame that did not authenticate, or came out of order."""


class Sealer:
    """Seals and opens the frames of one cluster (one Raft password)."""

    def __init__(self, password: str):
        kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=SALT, iterations=PBKDF2_ITERATIONS)
        self._master = kdf.derive(password.encode())
        self._master_aead = AESGCM(self._master)

    def session(self, rand_key: bytes) -> Session:
        """The key for frames sent to the end of a connection that chose ``rand_key``."""
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=b"session " + rand_key).derive(self._master)
        return Session(AESGCM(key))

    def seal_first(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._master_aead.encrypt(nonce, data, None)

    def open_first(self, frame: bytes) -> bytes:
        try:
            return self._master_aead.decrypt(frame[:NONCE], frame[NONCE:], None)
        except InvalidTag:
            raise FrameError("a frame did not authenticate (another Raft password?)") from None


class Session:
    """One direction of one connection: frames numbered 0, 1, 2, ... under a key of their own."""

    __slots__ = ("_aead", "_count")

    def __init__(self, aead: AESGCM):
        self._aead = aead
        self._count = 0

    def seal(self, data: bytes) -> bytes:
        nonce = _COUNTER.pack(self._count)
        self._count += 1
        return nonce + self._aead.encrypt(nonce, data, None)

    def open(self, frame: bytes) -> bytes:
        nonce = frame[:NONCE]
        if len(nonce) != NONCE or nonce != _COUNTER.pack(self._count):
            raise FrameError("a frame came out of order (replayed or dropped)")
        try:
            data = self._aead.decrypt(nonce, frame[NONCE:], None)
        except InvalidTag:
            raise FrameError("a frame did not authenticate") from None
        self._count += 1
        return data


class SealedConnection(TcpConnection):
    """PySyncObj's connection with shoal's frames. ``encryptor`` is the cluster's ``Sealer`` (or None).

    It adds no state of its own to ``TcpConnection`` before its first frame (sessions are made
    lazily), so ``SealedTransport`` can turn a connection PySyncObj built into one of these. A
    connection's random keys are set once by the handshake and cleared by ``disconnect``, which
    drops the sessions with them."""

    _tx: Session | None = None
    _rx: Session | None = None

    def send(self, message: object) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        sealer: Sealer | None = self.encryptor
        if sealer is not None:
            if not self.sendRandKey:
                data = sealer.seal_first(data)
            else:
                if self._tx is None:
                    self._tx = sealer.session(self.sendRandKey)
                data = self._tx.seal(data)
        self._TcpConnection__writeBuffer += _LENGTH.pack(len(data)) + data
        self._TcpConnection__trySendBuffer()

    def _TcpConnection__processParseMessage(self) -> object | None:  # noqa: N802 (PySyncObj's name)
        buf = self._TcpConnection__readBuffer
        if len(buf) < 4:
            return None
        (size,) = _LENGTH.unpack_from(buf)
        if len(buf) - 4 < size:
            return None
        frame = buf[4:4 + size]
        try:
            message = pickle.loads(self._open(frame))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise FrameError("a frame was meant for another connection")
        except Exception as exc:  # never into PySyncObj's loop: the connection goes, it reconnects
            _warn_bad_frame(str(exc) or type(exc).__name__)
            self.disconnect()
            return None
        self._TcpConnection__readBuffer = buf[4 + size:]
        return message

    def _open(self, frame: bytes) -> bytes:
        sealer: Sealer | None = self.encryptor
        if sealer is None:
            return frame
        if not self.recvRandKey:
            return sealer.open_first(frame)
        if self._rx is None:
            self._rx = sealer.session(self.recvRandKey)
        return self._rx.open(frame)

    def disconnect(self) -> None:
        self._tx = self._rx = None
        super().disconnect()


_last_warning = -WARN_EVERY


def _warn_bad_frame(reason: str) -> None:
    # A peer with another password (or an older shoal) reconnects every second: say so now and then.
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY:
        _last_warning = now
        log.warning("raft connection closed: a peer's frame did not open; do all servers share the Raft "
                    "password and the shoal version?", reason=reason)


def _seal(conn: TcpConnection) -> None:
    # PySyncObj builds its connections itself (``addNode``, its ``TcpServer``); each becomes a
    # SealedConnection at once, before it has sent or read a byte.
    conn.__class__ = SealedConnection


class SealedTransport(TCPTransport):
    """PySyncObj's TCP transport whose connections are SealedConnections. Pass the ``Sealer`` as
    the SyncObj's ``encryptor`` (PySyncObj hands that to every connection and runs its key
    handshake when there is one)."""

    def addNode(self, node) -> None:  # noqa: N802 (PySyncObj's name)
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None:
            _seal(conn)

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:  # noqa: N802
        _seal(conn)
        super()._onNewIncomingConnection(conn)
