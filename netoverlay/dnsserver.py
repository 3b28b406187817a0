"""The DNS server every agent runs: cluster names from the catalog view, every other name relayed
to the host's resolvers.

The agent binds it on 127.0.0.1:8600 and on each bridge's gateway, port 53 (``listen`` once per
address), UDP and TCP on each. What to answer is decided by ``dnsanswer.answer`` alone; the
server keeps that function's encoded replies in a cache keyed by the question (its name in
lower case, its type and class) and emptied whenever the view is replaced, so the common query
costs a parse, a dict lookup, a shuffle and a join (``dnswire``): about what the socket costs.

Forwarding: a name outside the domain is relayed as it came (EDNS0 and all) under an id of
our own, from a fresh socket, to each recursor in turn within one deadline (2 s by default,
shared out among the recursors not yet tried); a recursor's SERVFAIL or REFUSED moves on to the
next, as Consul does. A truncated UDP answer is fetched again over TCP for a TCP client, and
relayed truncated to a UDP client, which will ask again over TCP. The answer goes back with the
client's id. No recursor answering, or none configured: SERVFAIL. The recursors usually come
from the host's /etc/resolv.conf (``recursors_from_resolv_conf``), less our own addresses.

Bounds on what the network can make it do: a UDP reply fits in 512 bytes, or in the client's
EDNS0 size up to 4096 (TC set when answers were left out); a query over 4 KiB is dropped, a TCP
message is length-prefixed and a TCP connection closes after an idle time; TCP connections and
forwarded queries in flight are capped (beyond the caps, connections are closed and queries
dropped); the answer cache is bounded. A malformed message is dropped or answered FORMERR and
counted, and nothing read from the network is evaluated. Counters live in ``counters``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, cast

import structlog

from shoal.netoverlay.dnsanswer import FORMERR, FORWARD, NOERROR, NXDOMAIN, SERVFAIL, DnsSettings, Forward, answer
from shoal.netoverlay.dnsview import CatalogView
from shoal.netoverlay.dnswire import (
    HEADER_SIZE,
    MAX_QUERY,
    TC,
    TCP_MAX,
    Encoded,
    Query,
    WireError,
    encode,
    error_response,
    is_truncated,
    parse_query,
    question,
    rcode_of,
    response,
    truncated_copy,
    upstream_answer_end,
    with_id,
)

log = structlog.get_logger("shoal.netoverlay.dns")

Recursor = tuple[str, int]
DNS_PORT = 53
BIND_ATTEMPTS = 5  # port 0: UDP picks the port, TCP may find it taken


@dataclass(slots=True, frozen=True)
class DnsLimits:
    forward_deadline: float = 2.0  # seconds for one forwarded query, all recursors together
    tcp_idle: float = 10.0  # seconds a TCP connection may wait for a query or for us to write
    max_tcp_connections: int = 128
    max_forwards: int = 256  # forwarded queries in flight
    cache_entries: int = 10_000  # distinct questions; the cache is emptied when full


@dataclass(slots=True)
class DnsCounters:
    queries: int = 0  # messages received
    answers: int = 0  # responses from the catalog (every rcode)
    nxdomain: int = 0  # of which NXDOMAIN
    truncated: int = 0  # of which with TC set
    forwarded: int = 0  # queries relayed to the recursors
    servfail: int = 0  # of which no recursor answered
    errors: int = 0  # messages that are no query we take (malformed, a response...), failures inside the server
    dropped: int = 0  # messages not answered: unreadable, a response, too big, over a cap


def recursors_from_resolv_conf(text: str, exclude: set[str]) -> list[Recursor]:
    """The ``nameserver`` addresses of a resolv.conf, in order, port 53, leaving out those in
    ``exclude`` and anything that is not an IP address. ``exclude`` holds the addresses this
    server listens on at port 53 (the bridge gateways): relaying to ourselves would loop. A
    resolv.conf names no port, so 127.0.0.1 stays a recursor while we listen on 127.0.0.1:8600."""
    skip = {_canonical(e) for e in exclude}
    found: list[Recursor] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        address = _canonical(fields[1])
        if address and address not in skip and (address, DNS_PORT) not in found:
            found.append((address, DNS_PORT))
    return found


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


class DnsServer:
    """Answers from ``view`` (which the agent replaces as the catalog changes), forwards the rest
    to ``recursors`` (a public attribute: the agent may update it)."""

    def __init__(self, view: CatalogView, settings: DnsSettings, recursors: list[Recursor],
                 limits: DnsLimits | None = None):
        self.view = view
        self.settings = settings
        self.recursors = list(recursors)
        self.limits = limits or DnsLimits()
        self.counters = DnsCounters()
        self._cache: dict[bytes, Encoded | Forward] = {}
        self._generation = -1
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tcp_open = 0
        self._forwarding = 0

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Serve UDP and TCP on ``host``:``port`` (0: a free port, the same for both); returns
        the address bound. Call it once per address."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, port))
            bound: tuple[str, int] = udp.get_extra_info("sockname")[:2]
            try:
                tcp = await asyncio.start_server(self._serve_tcp, bound[0], bound[1])
            except OSError:
                udp.close()
                if port != 0 or attempt >= BIND_ATTEMPTS:
                    raise
                continue
            self._udp.append(udp)
            self._tcp.append(tcp)
            log.info("DNS server listening", host=bound[0], port=bound[1], domain=self.settings.domain)
            return bound

    async def close(self) -> None:
        """Stop listening everywhere, end TCP connections and forwards in progress."""
        for udp in self._udp:
            udp.close()
        for tcp in self._tcp:
            tcp.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tcp in self._tcp:
            await tcp.wait_closed()
        self._udp.clear()
        self._tcp.clear()

    # --- one message, either transport ---
    def _handle(self, data: bytes, tcp: bool) -> bytes | Query | None:
        """The response to ``data``, or its parsed query when it is to be forwarded, or None to drop it."""
        counters = self.counters
        counters.queries += 1
        recursion = bool(self.recursors)
        try:
            query = parse_query(data)
        except WireError as exc:
            counters.errors += 1
            if exc.rcode is None:
                counters.dropped += 1
                return None
            return error_response(data, exc.rcode, None, recursion)
        if self._generation != self.view.generation:
            self._cache.clear()
            self._generation = self.view.generation
        entry = self._cache.get(query.key)
        if entry is None:
            entry = self._decide(data, query)
        if entry is FORWARD:
            return query
        assert isinstance(entry, Encoded)
        if not query.plain:  # more than a question and an OPT record: nothing we answer
            counters.errors += 1
            return error_response(data, FORMERR, query, recursion)
        out = response(data, query, entry, TCP_MAX if tcp else query.udp_size, recursion)
        counters.answers += 1
        if entry.rcode == NXDOMAIN:
            counters.nxdomain += 1
        if out[2] & (TC >> 8):
            counters.truncated += 1
        return out

    def _decide(self, data: bytes, query: Query) -> Encoded | Forward:
        asked = question(data, query)
        decision = answer(self.view, self.settings, asked)
        entry = FORWARD if isinstance(decision, Forward) else encode(decision, asked)
        if len(self._cache) >= self.limits.cache_entries:
            self._cache.clear()
        self._cache[query.key] = entry
        return entry

    def _failed(self, where: str) -> None:
        self.counters.errors += 1
        self.counters.dropped += 1
        log.warning("DNS message handling failed", where=where, exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- UDP ---
    def _datagram(self, transport: asyncio.DatagramTransport, data: bytes, addr: Any) -> None:
        try:
            out = self._handle(data, tcp=False)
        except Exception:
            self._failed("udp")
            return
        if isinstance(out, bytes):
            transport.sendto(out, addr)
        elif out is not None:
            self._spawn(self._relay_udp(transport, data, out, addr))

    async def _relay_udp(self, transport: asyncio.DatagramTransport, data: bytes, query: Query, addr: Any) -> None:
        try:
            out = await self._forward(data, query, tcp=False)
        except Exception:
            self._failed("forward")
            return
        if out is not None and not transport.is_closing():
            transport.sendto(out, addr)

    # --- TCP ---
    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self._tcp_open >= self.limits.max_tcp_connections:
            self.counters.dropped += 1
            writer.close()
            self._tasks.discard(task)
            return
        self._tcp_open += 1
        try:
            while await self._tcp_message(reader, writer):
                pass
        except (TimeoutError, EOFError, ConnectionError):
            pass  # idle, gone, or reset: the connection ends
        except Exception:
            self._failed("tcp")
        finally:
            self._tcp_open -= 1
            writer.close()
            self._tasks.discard(task)

    async def _tcp_message(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one length-prefixed query and write its response; False to end the connection."""
        idle = self.limits.tcp_idle
        async with asyncio.timeout(idle):
            size = int.from_bytes(await reader.readexactly(2), "big")
            if not HEADER_SIZE <= size <= MAX_QUERY:
                self.counters.queries += 1
                self.counters.errors += 1
                self.counters.dropped += 1
                return False
            data = await reader.readexactly(size)
        out = self._handle(data, tcp=True)
        if isinstance(out, Query):
            out = await self._forward(data, out, tcp=True)
        if out is not None:
            writer.write(len(out).to_bytes(2, "big") + out)
            async with asyncio.timeout(idle):
                await writer.drain()
        return True

    # --- forwarding ---
    async def _forward(self, data: bytes, query: Query, tcp: bool) -> bytes | None:
        """The recursors' answer to ``data`` under the client's id, SERVFAIL when none answers,
        None when too many forwards are in flight (dropped: the client will retry)."""
        counters = self.counters
        if self._forwarding >= self.limits.max_forwards:
            counters.dropped += 1
            return None
        counters.forwarded += 1
        self._forwarding += 1
        try:
            got = await self._ask_recursors(data, query, tcp)
        finally:
            self._forwarding -= 1
        if got is None:
            counters.servfail += 1
            return error_response(data, SERVFAIL, query, bool(self.recursors))
        upstream, end = got
        if not tcp and len(upstream) > query.udp_size:
            upstream = truncated_copy(upstream, end)
        return with_id(upstream, query.id)

    async def _ask_recursors(self, data: bytes, query: Query, tcp: bool) -> tuple[bytes, int] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.forward_deadline
        ident = secrets.randbelow(1 << 16)
        message = with_id(data, ident)
        recursors = list(self.recursors)
        for i, recursor in enumerate(recursors):
            share = (deadline - loop.time()) / (len(recursors) - i)
            try:
                async with asyncio.timeout(share):
                    got = await _exchange_udp(recursor, message, ident, query.key)
                    if tcp and is_truncated(got[0]):
                        got = await _exchange_tcp(recursor, message, ident, query.key)
            except (TimeoutError, OSError, EOFError) as exc:
                log.debug("recursor did not answer", recursor=recursor, error=repr(exc))
                continue
            if rcode_of(got[0]) in (NOERROR, NXDOMAIN):
                return got
            log.debug("recursor failed the query", recursor=recursor, rcode=rcode_of(got[0]))
        return None


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport = cast(asyncio.DatagramTransport, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._datagram(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS socket error", error=repr(exc))  # an ICMP error for a client that left


class _Upstream(asyncio.DatagramProtocol):
    """One forwarded query's socket: takes the first datagram that answers it."""

    def __init__(self, done: asyncio.Future[tuple[bytes, int]], ident: int, key: bytes):
        self.done = done
        self.ident = ident
        self.key = key

    def datagram_received(self, data: bytes, addr: Any) -> None:
        end = upstream_answer_end(data, self.ident, self.key)
        if end is not None and not self.done.done():
            self.done.set_result((data, end))

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():  # ICMP port unreachable: nothing listens there
            self.done.set_exception(exc)


async def _exchange_udp(recursor: Recursor, message: bytes, ident: int, key: bytes) -> tuple[bytes, int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes, int]] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Upstream(done, ident, key), remote_addr=recursor)
    try:
        transport.sendto(message)
        return await done
    finally:
        transport.close()


async def _exchange_tcp(recursor: Recursor, message: bytes, ident: int, key: bytes) -> tuple[bytes, int]:
    reader, writer = await asyncio.open_connection(*recursor)
    try:
        writer.write(len(message).to_bytes(2, "big") + message)
        await writer.drain()
        while True:
            data = await reader.readexactly(int.from_bytes(await reader.readexactly(2), "big"))
            end = upstream_answer_end(data, ident, key)
            if end is not None:
                return data, end
    finally:
        writer.close()
