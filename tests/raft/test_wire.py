"""The Raft wire: sealed frames open only once, in order, on their own connection, with the right password."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

from shoal.raft.wire import FrameError, SealedConnection, Sealer, _seal

SEALER = Sealer("shoal-test")


def test_session_frames_open_once_and_in_order():
    key = os.urandom(32)
    tx, rx = SEALER.session(key), SEALER.session(key)
    first, second, third, fourth = (tx.seal(m) for m in (b"one", b"two", b"three", b"four"))
    assert rx.open(first) == b"one"
    with pytest.raises(FrameError, match="out of order"):
        rx.open(first)  # replayed
    assert rx.open(second) == b"two"
    with pytest.raises(FrameError, match="out of order"):
        rx.open(fourth)  # the third was dropped
    assert rx.open(third) == b"three"


def test_frames_do_not_open_under_another_password_connection_or_tampering():
    assert Sealer("shoal-test").open_first(SEALER.seal_first(b"hello")) == b"hello"  # same password, another process
    with pytest.raises(FrameError, match="another Raft password"):
        Sealer("other").open_first(SEALER.seal_first(b"hello"))
    with pytest.raises(FrameError, match="did not authenticate"):
        SEALER.session(os.urandom(32)).open(SEALER.session(os.urandom(32)).seal(b"hello"))
    key = os.urandom(32)
    frame = bytearray(SEALER.session(key).seal(b"hello"))
    frame[-1] ^= 1
    with pytest.raises(FrameError, match="did not authenticate"):
        SEALER.session(key).open(bytes(frame))


class Pair:
    """Two connected SealedConnections on a socket pair, driven by PySyncObj's own poller."""

    def __init__(self, left: Sealer | None, right: Sealer | None):
        self.poller = createPoller("auto")
        self.got: dict[str, list[object]] = {"left": [], "right": []}
        a, b = socket.socketpair()
        self.left = self._conn(a, left, "left")
        self.right = self._conn(b, right, "right")

    def _conn(self, sock: socket.socket, sealer: Sealer | None, name: str) -> TcpConnection:
        sock.setblocking(False)
        conn = TcpConnection(self.poller, onMessageReceived=self.got[name].append, socket=sock, timeout=30)
        _seal(conn)
        conn.encryptor = sealer
        return conn

    def pump(self, until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 5
        while not until() and time.monotonic() < deadline:
            self.poller.poll(0.02)

    def handshake(self) -> None:
        """What PySyncObj's TCP transport does when the left end connects to the right one."""
        self.left.recvRandKey = os.urandom(32)
        self.left.send(self.left.recvRandKey)
        self.pump(lambda: bool(self.got["right"]))
        self.right.sendRandKey = self.got["right"].pop()
        self.right.recvRandKey = os.urandom(32)
        self.right.send(self.right.recvRandKey)
        self.pump(lambda: bool(self.got["left"]))
        self.left.sendRandKey = self.got["left"].pop()

    def close(self) -> None:
        self.left.disconnect()
        self.right.disconnect()


def test_messages_cross_a_sealed_connection_both_ways():
    pair = Pair(SEALER, SEALER)
    try:
        pair.handshake()
        entries = [(os.urandom(3000), i, 7) for i in range(40)]  # an append_entries-sized message
        pair.left.send({"type": "append_entries", "entries": entries})
        pair.right.send({"type": "next_node_idx", "next_node_idx": 41})
        pair.left.send("third")
        pair.pump(lambda: len(pair.got["right"]) == 2 and len(pair.got["left"]) == 1)
        assert pair.got["right"] == [{"type": "append_entries", "entries": entries}, "third"]
        assert pair.got["left"] == [{"type": "next_node_idx", "next_node_idx": 41}]
        assert isinstance(pair.left, SealedConnection) and pair.left.state == CONNECTION_STATE.CONNECTED
    finally:
        pair.close()


def test_a_peer_with_another_password_is_disconnected_before_anything_is_read():
    pair = Pair(SEALER, Sealer("another password"))
    try:
        pair.left.recvRandKey = os.urandom(32)
        pair.left.send(pair.left.recvRandKey)
        pair.pump(lambda: pair.right.state == CONNECTION_STATE.DISCONNECTED)
        assert pair.right.state == CONNECTION_STATE.DISCONNECTED
        assert pair.got["right"] == []
    finally:
        pair.close()


def test_without_a_password_frames_are_bare_pickle():
    pair = Pair(None, None)
    try:
        pair.left.send({"type": "request_vote", "term": 3})
        pair.pump(lambda: bool(pair.got["right"]))
        assert pair.got["right"] == [{"type": "request_vote", "term": 3}]
    finally:
        pair.close()
