"""The asyncio shell around one ``Swim`` member: UDP for probes and gossip, TCP for push-pull,
every packet and frame sealed with the keyring. The core decides everything; this moves bytes.

- One UDP socket and one TCP listener on the same address (port 0: a free port for both).
- A timer task sleeps until ``Swim.next_deadline()`` (or until a packet changed it) and ticks.
- A packet that does not open or decode (a wrong key, truncated, garbage, too big) is dropped and
  counted in ``counters``; the first from each source in a minute is logged with the reason.
- A push-pull opens a TCP connection per exchange, bounded in time and size; the listener
  answers one exchange per connection.

The clock is the event loop's (monotonic), the core's ``now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from shoal.agent.gossip import wire
from shoal.agent.gossip.keyring import Keyring, KeyringError
from shoal.agent.gossip.messages import KINDS, Addr, PushPull
from shoal.agent.gossip.swim import Event, Member, Output, ReplyStream, SendStream, SendUdp, Swim, SwimConfig

log = structlog.get_logger("shoal.agent.gossip")

for _kind, _cls in KINDS.items():
    wire.register(_kind, _cls)

STREAM_TIMEOUT = 5.0  # seconds for one push-pull exchange
MAX_STREAMS = 64  # push-pulls in progress, either way
LOG_EVERY = 60.0  # seconds between two logged drops from one source


@dataclass(slots=True)
class GossipCounters:
    packets_in: int = 0
    packets_out: int = 0
    dropped: int = 0  # did not open or decode
    streams_in: int = 0
    streams_out: int = 0
    stream_errors: int = 0


class GossipNode:
    def __init__(self, name: str, meta: Mapping[str, str], keyring: Keyring, config: SwimConfig,
                 bind: Addr, on_event: Callable[[Event], None], *, advertise_host: str = "",
                 rng: random.Random | None = None):
        self.name = name
        self.keyring = keyring
        self.config = config
        self.bind = bind
        self.advertise_host = advertise_host or bind[0]
        self.on_event = on_event
        self.counters = GossipCounters()
        self._meta = dict(meta)
        self._rng = rng or random.Random()
        self.swim: Swim | None = None
        self.address: Addr | None = None  # where others reach us, once started
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams = 0
        self._logged: dict[str, float] = {}

    # --- lifecycle ---
    async def start(self) -> Addr:
        loop = asyncio.get_running_loop()
        host, port = self.bind
        for attempt in range(5):
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            bound = udp.get_extra_info("sockname")[:2]
            try:
                self._tcp = await asyncio.start_server(self._serve_stream, bound[0], bound[1])
            except OSError:
                udp.close()
                if port != 0 or attempt == 4:
                    raise
                continue
            self._udp = udp
            break
        self.address = (self.advertise_host, int(bound[1]))
        self.swim = Swim(self.name, self.address, self._meta, self.config, self._rng, loop.time())
        self._timer = loop.create_task(self._run_timers(), name="gossip-timers")
        log.info("gossip listening", address=f"{self.address[0]}:{self.address[1]}")
        return self.address

    async def join(self, seeds: list[Addr]) -> None:
        """Push-pull with each seed (any member's address); members found are gossiped with from then on."""
        self._act(self._core().join(seeds, self._now()))

    async def leave(self, timeout: float = 2.0) -> None:
        """Say we leave, and keep gossiping until that has gone out (or ``timeout``)."""
        swim = self._core()
        self._act(swim.leave(self._now()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while swim.pending_broadcasts and loop.time() < deadline:
            await asyncio.sleep(self.config.gossip_interval)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    def members(self) -> list[Member]:
        return self._core().members()

    def update_meta(self, meta: Mapping[str, str]) -> None:
        self._meta = dict(meta)
        if self.swim is not None:
            self._act(self.swim.update_meta(self._meta, self._now()))

    # --- the core's outputs ---
    def _core(self) -> Swim:
        if self.swim is None:
            raise RuntimeError("the gossip node has not started")
        return self.swim

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _act(self, outputs: list[Output], reply: Callable[[PushPull], None] | None = None) -> None:
        for out in outputs:
            if isinstance(out, SendUdp):
                self._send_udp(out)
            elif isinstance(out, Event):
                try:
                    self.on_event(out)
                except Exception:
                    log.exception("a gossip event handler failed", kind=out.kind, member=out.member.name)
            elif isinstance(out, SendStream):
                self._spawn(self._push_pull(out))
            elif isinstance(out, ReplyStream) and reply is not None:
                reply(out.message)
        self._wake.set()  # the next deadline may have moved

    def _send_udp(self, out: SendUdp) -> None:
        if self._udp is None or self._udp.is_closing():
            return
        try:
            payloads = wire.pack([wire.to_fields(m) for m in out.messages])
        except wire.WireError as exc:
            log.warning("a gossip message could not be packed", error=str(exc))
            return
        for payload in payloads:
            self._udp.sendto(wire.seal_packet(self.keyring, payload), out.addr)
            self.counters.packets_out += 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._streams >= MAX_STREAMS:
            coro.close()
            self.counters.stream_errors += 1
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        swim = self._core()
        while True:
            self._wake.clear()
            delay = swim.next_deadline() - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._act(swim.tick(loop.time()))

    # --- UDP ---
    def datagram(self, data: bytes, src: Addr) -> None:
        self.counters.packets_in += 1
        try:
            messages = [wire.from_fields(kind, fields) for kind, fields in wire.open_packet(self.keyring, data)]
        except (wire.WireError, KeyringError) as exc:
            self._dropped(src, exc)
            return
        swim = self._core()
        for msg in messages:
            self._act(swim.receive(src, msg, self._now()))

    def _dropped(self, src: Addr, exc: Exception) -> None:
        self.counters.dropped += 1
        who = f"{src[0]}:{src[1]}"
        now = self._now()
        if now - self._logged.get(who, -LOG_EVERY) >= LOG_EVERY:
            self._logged[who] = now
            reason = getattr(exc, "reason", "") or str(exc)
            hint = " (does this member have the cluster's gossip key?)" if isinstance(exc, KeyringError) else ""
            log.warning("gossip packet dropped", source=who, reason=reason + hint)

    # --- TCP: push-pull ---
    async def _read_push_pull(self, reader: asyncio.StreamReader) -> PushPull:
        length = wire.frame_length(await reader.readexactly(wire.FRAME_HEADER))
        [(kind, fields)] = wire.open_frame(self.keyring, await reader.readexactly(length))
        msg = wire.from_fields(kind, fields)
        if not isinstance(msg, PushPull):
            raise wire.WireError(f"a stream carries push-pull only, not {kind!r}")
        return msg

    def _frame(self, msg: PushPull) -> bytes:
        kind, fields = wire.to_fields(msg)
        return wire.seal_frame(self.keyring, wire.encode(kind, fields))

    async def _push_pull(self, out: SendStream) -> None:
        self._streams += 1
        self.counters.streams_out += 1
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                reader, writer = await asyncio.open_connection(*out.addr)
                writer.write(self._frame(out.message))
                await writer.drain()
                reply = await self._read_push_pull(reader)
            self._act(self._core().receive_stream(reply, self._now()))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyringError) as exc:
            self.counters.stream_errors += 1
            if isinstance(exc, (wire.WireError, KeyringError)):
                self._dropped(out.addr, exc)
            else:
                log.debug("push-pull failed", peer=f"{out.addr[0]}:{out.addr[1]}", error=str(exc))
        finally:
            self._streams -= 1
            if writer is not None:
                writer.close()

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        if self._streams >= MAX_STREAMS:
            writer.close()
            return
        self._streams += 1
        self.counters.streams_in += 1
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                msg = await self._read_push_pull(reader)
                replies: list[PushPull] = []
                self._act(self._core().receive_stream(msg, self._now()), replies.append)
                for r in replies:
                    writer.write(self._frame(r))
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyringError) as exc:
            self.counters.stream_errors += 1
            if isinstance(exc, (wire.WireError, KeyringError)):
                self._dropped(tuple(peer[:2]), exc)
        finally:
            self._streams -= 1
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, node: GossipNode):
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.node.datagram(data, (addr[0], addr[1]))
        except Exception:  # a bug must not stop the member from gossiping
            self.node.counters.dropped += 1
            log.exception("handling a gossip packet failed")

    def error_received(self, exc: Exception) -> None:
        log.debug("gossip UDP error", error=str(exc))
