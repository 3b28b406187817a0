"""The Raft node: PySyncObj on its own thread driving the FSM, bridged to asyncio.

PySyncObj settings follow what was measured on this kind of machine (see
docs/architecture.md): no append batching (a synchronous write would wait a
tick), frames sealed with the cluster's password (their content is pickle; see
``wire``), a concrete bind address, our own msgpack+zlib snapshots (no fork),
and a deadline on every write.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.serializer import SERIALIZER_STATE

from shoal import codec
from shoal.deadline import fail_after
from shoal.errors import NoLeader, ShoalError
from shoal.raft import ops
from shoal.raft.fsm import FSM, encode_batch
from shoal.raft.wire import SealedTransport, Sealer

log = structlog.get_logger("shoal.raft")

SNAPSHOT_MAGIC = b"SHOALSNAP2"
# A write that no leader commits fails within this (plus transport): "no cluster leader" inside 10 s.
# What a user sees adds the CLI's start-up and the forwarding hops: with 8 s here, `shoal job run`
# without quorum failed after 8.7 s, 9.0-9.3 s with the machine's cores busy. An election takes
# 1-1.5 s (the Raft timeouts below), so this still waits out four of them.
DEFAULT_WRITE_TIMEOUT = 6.0
MAX_BATCH = 256
# Group commit: at most this many Raft entries of ours in flight; writes arriving meanwhile wait and
# travel together in the next entry. PySyncObj's cost is per entry (pickle, encrypt, send to each
# follower, journal), so under load the batches grow instead of the queue of entries.
MAX_IN_FLIGHT = 2
# An entry unanswered this long stops holding the next ones back (its callback may never come if the
# leadership changed under it; its writers' own deadlines fail them).
IN_FLIGHT_STALL = 0.25
CHECK_OWNED_WRITES = os.environ.get("SHOAL_CHECK_OWNED_WRITES") == "1"
# After applying entries, PySyncObj's leader (without append batching) sends every follower an
# AppendEntries at once, most often with no entries, only to tell it the new commit index. Under load
# our next entry follows within milliseconds and carries the commit index too, so that notification
# waits this long for one and goes out on its own only if none comes. It was half of all Raft
# messages, each a loopback TCP send and receive, sealed and pickled. Followers apply at most this
# much later; what is committed, and when the leader answers a write, do not change.
COMMIT_NOTIFY_DELAY = 0.005


@dataclass(slots=True)
class RaftConfig:
    bind: str  # host:port this node listens on for Raft
    peers: list[str]  # the other servers' Raft addresses
    data_dir: Path
    password: str = "shoal-dev"
    min_timeout: float = 1.0
    max_timeout: float = 1.5
    leader_fallback_timeout: float = 2.0
    compaction_min_entries: int = 20000
    compaction_min_time: float = 60.0
    dynamic_membership: bool = True


class _Replica(SyncObj):
    """The replicated object: one dispatching method keeps the journal stable."""

    def __init__(self, fsm: FSM, bind: str, peers: list[str], conf: SyncObjConf, sealer: Sealer | None):
        self._shoal_fsm = fsm
        self._shoal_sealer = sealer
        self._notify_at: float | None = None  # when a held commit notification goes out (leader only)
        super().__init__(bind, peers, conf, transportClass=SealedTransport)
        poll = self._poller.poll

        def poll_until_notify(timeout: float) -> None:
            at = self._notify_at
            poll(timeout if at is None else max(0.0, min(timeout, at - time.monotonic())))

        self._poller.poll = poll_until_notify

    # The two private methods below override PySyncObj 0.3.17's (pinned): its ``_onTick`` sends
    # AppendEntries when ``__applyLogEntries`` says so, and every ``__sendAppendEntries`` carries the
    # commit index to every follower.
    def _SyncObj__applyLogEntries(self) -> bool:
        applied = super()._SyncObj__applyLogEntries()
        if not self._isLeader():
            self._notify_at = None
            return applied
        now = time.monotonic()
        if applied and self._notify_at is None:
            self._notify_at = now + COMMIT_NOTIFY_DELAY
        return self._notify_at is not None and now >= self._notify_at

    def _SyncObj__sendAppendEntries(self) -> None:
        self._notify_at = None  # what it sends tells the followers the commit index
        super()._SyncObj__sendAppendEntries()

    @property
    def encryptor(self) -> Sealer | None:
        """What PySyncObj hands to every connection (and runs its key handshake for): our frames' sealer."""
        return self._shoal_sealer

    @replicated
    def apply(self, op: str, payload: bytes) -> tuple[int, dict[str, Any], str]:
        r = self._shoal_fsm.apply(op, payload)
        return r.index, r.value, r.error


class RaftNode:
    def __init__(self, cfg: RaftConfig, fsm: FSM, on_leadership: Callable[[bool], None] | None = None):
        self.cfg = cfg
        self.fsm = fsm
        self._on_leadership = on_leadership
        self._loop: asyncio.AbstractEventLoop | None = None
        self._replica: _Replica | None = None
        self._is_leader = False
        self._pending: list[tuple[str, bytes, asyncio.Future]] = []
        self._snap_status = SERIALIZER_STATE.NOT_SERIALIZING
        self.last_snapshot_seconds = 0.0
        self._flush_scheduled = False
        self._in_flight: dict[int, float] = {}  # entry token -> loop time it was handed to PySyncObj
        self._next_token = 0

    # --- lifecycle ---
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        d = self.cfg.data_dir
        d.mkdir(parents=True, exist_ok=True)
        check_bindable(self.cfg.bind)
        conf = SyncObjConf(
            password=None,  # frames are sealed by ``wire`` with the password, not by PySyncObj's Fernet
            bindAddress=self.cfg.bind,
            journalFile=str(d / "raft.journal"),
            fullDumpFile=str(d / "raft.snapshot"),
            appendEntriesUseBatch=False,
            raftMinTimeout=self.cfg.min_timeout,
            raftMaxTimeout=self.cfg.max_timeout,
            leaderFallbackTimeout=self.cfg.leader_fallback_timeout,
            logCompactionMinEntries=self.cfg.compaction_min_entries,
            logCompactionMinTime=self.cfg.compaction_min_time,
            dynamicMembershipChange=self.cfg.dynamic_membership,
            serializer=self._write_snapshot,
            serializeChecker=self._snapshot_state,
            deserializer=self._read_snapshot,
            onStateChanged=self._state_changed,
            useFork=False,
            # A lone node has no peer replies to wake its poller: commit happens on
            # the next tick, so tick often (cheap: the poller sleeps in between).
            autoTickPeriod=0.005 if not self.cfg.peers else 0.05,
            connectionRetryTime=1.0,
            connectionTimeout=max(3.5, self.cfg.max_timeout),
        )
        sealer = Sealer(self.cfg.password) if self.cfg.password else None
        self._replica = _Replica(self.fsm, self.cfg.bind, list(self.cfg.peers), conf, sealer)
        log.info("raft started", bind=self.cfg.bind, peers=self.cfg.peers, data_dir=str(d))

    def stop(self) -> None:
        if self._replica is not None:
            # Synchronous: the Raft thread is gone and its port closed when this returns (a restart in
            # the same process binds it again at once).
            self._replica.destroy_synchronous()
            self._replica = None

    # --- state ---
    @property
    def is_leader(self) -> bool:
        return self._replica is not None and self._replica._isLeader()

    @property
    def leader(self) -> str | None:
        if self._replica is None:
            return None
        leader = self._replica._getLeader()  # a PySyncObj Node: its id is the "host:port" it was given
        return None if leader is None else str(leader.id)

    def status(self) -> dict[str, Any]:
        if self._replica is None:
            return {}
        st = self._replica.getStatus()
        return {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None))) else v) for k, v in st.items()}

    # --- writes ---
    async def submit(self, op: str, payload: Any, timeout: float = DEFAULT_WRITE_TIMEOUT, *,
                     owned: bool = False) -> tuple[int, dict[str, Any]]:
        """Commit ``op`` through Raft; return (index, value) once a majority has it.

        Writes submitted in the same event-loop turn travel as one Raft entry (group commit).

        ``owned``: the payload's objects were built for this write alone (decoded from a request,
        not taken from the state store), so when this server applies the entry its FSM may use
        them as they are instead of decoding the entry's bytes again. Other replicas decode those
        bytes; the codec's round trip is exact, and with ``SHOAL_CHECK_OWNED_WRITES=1`` (the test
        suite) every owned write is checked to re-encode to the same bytes."""
        if self._replica is None or self._loop is None:
            raise NoLeader("no cluster leader: this server has not joined its cluster yet")
        data = codec.encode_compact(payload)  # replicas decode it with from_plain, defaults and all
        if owned:
            if CHECK_OWNED_WRITES:
                _check_round_trip(op, data)
            self.fsm.own(data, payload)
        fut: asyncio.Future[tuple[Any, int]] = self._loop.create_future()
        item = (op, data, fut)
        self._pending.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        # A timer on the future, not an asyncio.timeout scope: this is the hot path of every write.
        timer = fail_after(fut, timeout)
        try:
            result, err = await fut
        except TimeoutError:
            if self._withdraw(item):
                raise NoLeader(f"no cluster leader: the write was not committed within {timeout:g}s") from None
            raise NoLeader(f"no cluster leader: the write was not confirmed within {timeout:g}s (it may still "
                           "commit); check before retrying") from None
        except asyncio.CancelledError:
            self._withdraw(item)
            raise
        finally:
            timer.cancel()
        if err != FAIL_REASON.SUCCESS:
            if owned:
                self.fsm.disown(data)
            raise NoLeader(f"no cluster leader: write not committed ({_reason(err)}); retry")
        index, value, error = result
        if error:
            raise ShoalError(error)
        return index, value

    def _withdraw(self, item: tuple[str, bytes, asyncio.Future]) -> bool:
        """Take a write back if it has not been handed to Raft yet: then it certainly never commits."""
        try:
            self._pending.remove(item)
        except ValueError:
            return False
        self.fsm.disown(item[1])
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        replica, loop = self._replica, self._loop
        if replica is None or loop is None:
            pending, self._pending = self._pending, []
            for _, _, fut in pending:
                _resolve(fut, None, FAIL_REASON.MISSING_LEADER)
            return
        now = loop.time()
        for token in [k for k, t in self._in_flight.items() if now - t > 60.0]:
            del self._in_flight[token]  # never answered (a lost leadership): forget it
        busy = sum(1 for t in self._in_flight.values() if now - t < IN_FLIGHT_STALL)
        while self._pending and busy < MAX_IN_FLIGHT:
            chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._submit_entry(replica, loop, chunk)
            busy += 1
        if self._pending and not self._flush_scheduled:
            # wait for an entry to be answered (``_answered``), or to stall
            self._flush_scheduled = True
            loop.call_later(IN_FLIGHT_STALL, self._flush)

    def _submit_entry(self, replica: _Replica, loop: asyncio.AbstractEventLoop,
                      chunk: list[tuple[str, bytes, asyncio.Future]]) -> None:
        token = self._next_token = self._next_token + 1
        self._in_flight[token] = loop.time()
        futs = [f for _, _, f in chunk]
        if len(chunk) == 1:
            op, data, _ = chunk[0]
        else:
            op, data = ops.BATCH, encode_batch([(op, data) for op, data, _ in chunk])
        replica.apply(op, data, callback=lambda r, e: loop.call_soon_threadsafe(self._answered, token, futs, r, e))

    def _answered(self, token: int, futs: list[asyncio.Future], result: Any, err: int) -> None:
        self._in_flight.pop(token, None)
        if len(futs) == 1:
            _resolve(futs[0], result, err)
        else:
            _resolve_batch(futs, result, err)
        if self._pending:
            self._flush()

    async def barrier(self, timeout: float = DEFAULT_WRITE_TIMEOUT) -> int:
        """Commit a no-op: every write acknowledged before it is now applied here."""
        index, _ = await self.submit(ops.NOOP, {}, timeout)
        return index

    # --- membership ---
    async def add_peer(self, address: str, timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        await self._membership(self._replica.addNodeToCluster, address, timeout)

    async def remove_peer(self, address: str, timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        await self._membership(self._replica.removeNodeFromCluster, address, timeout)

    async def _membership(self, fn: Callable[..., None], address: str, timeout: float) -> None:
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()
        fn(address, callback=lambda r, e: loop.call_soon_threadsafe(_resolve, fut, r, e))
        try:
            _, err = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NoLeader(f"membership change of {address} not committed within {timeout:g}s") from None
        if err != FAIL_REASON.SUCCESS:
            raise ShoalError(f"membership change of {address} refused ({_reason(err)})")

    def peers(self) -> list[dict[str, Any]]:
        if self._replica is None:
            return []
        st = self._replica.getStatus()
        leader = str(st.get("leader")) if st.get("leader") is not None else None
        out = [{"address": self.cfg.bind, "leader": leader == self.cfg.bind, "self": True, "connected": True}]
        for k, v in st.items():
            if k.startswith("partner_node_status_server_"):
                addr = k.removeprefix("partner_node_status_server_")
                out.append({"address": addr, "leader": leader == addr, "self": False, "connected": v == 2})
        return sorted(out, key=lambda p: p["address"])

    # --- callbacks from the Raft thread ---
    def _state_changed(self, old: int, new: int) -> None:
        leader = new == 2
        if leader == self._is_leader:
            return
        self._is_leader = leader
        log.info("raft leadership changed", leader=leader, bind=self.cfg.bind)
        if self._on_leadership is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_leadership, leader)

    def _write_snapshot(self, filename: str, raft_data: Any) -> None:
        """Start a snapshot without stalling the Raft thread.

        The state is captured here in O(1) (persistent tables); encoding, compressing and
        writing happen on another thread, and ``_snapshot_state`` reports progress to
        PySyncObj, which truncates its log only once the file is safely in place. PySyncObj
        renames ``filename`` (its temporary path) right after this returns; nothing is
        written there, so that rename fails harmlessly and our own rename publishes the file.
        """
        snap = self.fsm.store.snapshot()
        final = filename[: -len(".tmp")] if filename.endswith(".tmp") else filename
        self._snap_status = SERIALIZER_STATE.SERIALIZING
        started = time.monotonic()

        def work() -> None:
            try:
                partial = final + ".partial"
                z = zlib.compressobj(1)
                with open(partial, "wb") as f:
                    f.write(SNAPSHOT_MAGIC)
                    f.write(z.compress(msgpack.packb(["raft", pickle.dumps(raft_data)], use_bin_type=True)))
                    for record in self.fsm.store.dump_records(snap):
                        f.write(z.compress(msgpack.packb(record, use_bin_type=True)))
                    f.write(z.flush())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(partial, final)
                self.last_snapshot_seconds = time.monotonic() - started
                log.info("raft snapshot written", index=snap.index, seconds=round(self.last_snapshot_seconds, 3))
                self._snap_status = SERIALIZER_STATE.SUCCESS
            except Exception as exc:
                log.error("raft snapshot failed", error=repr(exc))
                self._snap_status = SERIALIZER_STATE.FAILED

        threading.Thread(target=work, name="shoal-snapshot", daemon=True).start()

    def _snapshot_state(self) -> int:
        status = self._snap_status
        if status in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._snap_status = SERIALIZER_STATE.NOT_SERIALIZING
        return status

    def _read_snapshot(self, filename: str) -> Any:
        raft_data: list[Any] = []

        def records() -> Iterator[tuple[str, Any]]:
            z = zlib.decompressobj()
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
            with open(filename, "rb") as f:
                if f.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
                    raise ValueError(f"{filename}: not a shoal snapshot")
                while chunk := f.read(1 << 20):
                    unpacker.feed(z.decompress(chunk))
                    for kind, value in unpacker:
                        if kind == "raft":
                            raft_data.append(pickle.loads(value))
                        else:
                            yield kind, value
                unpacker.feed(z.flush())
                for kind, value in unpacker:
                    yield kind, value

        self.fsm.restore(records())
        return raft_data[0]


def check_bindable(bind: str) -> None:
    """Fail now, clearly, if the Raft address cannot be listened on: PySyncObj would retry the bind
    every second, silently, and the server would wait for a leader forever."""
    host, _, port = bind.rpartition(":")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PySyncObj binds: TIME_WAIT is fine
            s.bind((host.strip("[]"), int(port)))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ShoalError(f"cannot listen for Raft on {bind}: {reason}") from None


def _check_round_trip(op: str, data: bytes) -> None:
    again = codec.encode_compact(codec.decode(data, ops.PAYLOADS[op]))
    if again != data:
        raise AssertionError(f"{op}: the payload does not survive the codec exactly, so replicas would "
                             "differ from this server; do not submit it as owned")


def _resolve(fut: asyncio.Future, result: Any, err: int) -> None:
    if not fut.done():
        fut.set_result((result, err))


def _resolve_batch(futs: list[asyncio.Future], result: Any, err: int) -> None:
    if err != FAIL_REASON.SUCCESS or result is None:
        for f in futs:
            _resolve(f, None, err if err != FAIL_REASON.SUCCESS else FAIL_REASON.DISCARDED)
        return
    results = result[1].get("results") or []
    for f, r in zip(futs, results):
        _resolve(f, tuple(r), FAIL_REASON.SUCCESS)


_FAIL_REASONS = {
    FAIL_REASON.QUEUE_FULL: "queue full",
    FAIL_REASON.MISSING_LEADER: "missing leader",
    FAIL_REASON.DISCARDED: "discarded",
    FAIL_REASON.NOT_LEADER: "not leader",
    FAIL_REASON.LEADER_CHANGED: "leader changed",
    FAIL_REASON.REQUEST_DENIED: "request denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "unknown outcome",
}


def _reason(err: int) -> str:
    return _FAIL_REASONS.get(err, f"error {err}")
