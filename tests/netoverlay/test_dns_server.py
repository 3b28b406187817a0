"""The agent's DNS server on real sockets, all on 127.0.0.1: UDP and TCP answers, forwarding to
an upstream resolver the test runs itself, and the bounds on what a client can make it do."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dnslib
import pytest

from shoal.jobs.structs import ServiceRegistration
from shoal.netoverlay.dnsanswer import DnsSettings
from shoal.netoverlay.dnsserver import DnsLimits, DnsServer, recursors_from_resolv_conf
from shoal.netoverlay.dnsview import CatalogView

T = TypeVar("T")
LOCAL = "127.0.0.1"
TIMEOUT = 5.0  # seconds: a safety net for a broken server, never a synchronisation


def reg(name: str, address: str, port: int, healthy: bool = True) -> ServiceRegistration:
    return ServiceRegistration(id=f"{name}-{address}-{port}", service_name=name, alloc_id=address, node_id="n1",
                               address=address, port=port, healthy=healthy)


def catalog(*regs: ServiceRegistration) -> CatalogView:
    view = CatalogView()
    view.replace(list(regs), 1)
    return view


WEB = [reg("web", "10.200.0.2", 8080), reg("web", "10.200.0.3", 8081)]


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)
    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(view: CatalogView, recursors: list[tuple[str, int]] | None = None,
                  limits: DnsLimits | None = None) -> AsyncIterator[tuple[DnsServer, int]]:
    server = DnsServer(view, DnsSettings(), recursors or [], limits)
    try:
        _, port = await server.listen(LOCAL, 0)
        yield server, port
    finally:
        await server.close()


async def udp(port: int, name: str, qtype: str = "A", **kw: Any) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, qtype, **kw), LOCAL, port=port, timeout=TIMEOUT)


async def tcp(port: int, name: str, qtype: str = "A") -> dns.message.Message:
    return await dns.asyncquery.tcp(dns.message.make_query(name, qtype), LOCAL, port=port, timeout=TIMEOUT)


def addresses(msg: dns.message.Message) -> set[str]:
    return {r.address for rrset in msg.answer for r in rrset}


# --- an upstream resolver of our own ---
class Upstream(asyncio.DatagramProtocol):
    """Answers every A question with 192.0.2.1 (``big.`` names: 60 records, TC over UDP),
    or SERVFAIL, or nothing, over UDP and TCP on one port; records the query ids it saw."""

    def __init__(self, mode: str = "answer"):
        self.mode = mode
        self.ids: list[int] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.reply(data, tcp=False)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        request = dnslib.DNSRecord.parse(data)
        self.ids.append(request.header.id)
        if self.mode == "silent":
            return None
        reply = request.reply()
        if self.mode == "servfail":
            reply.header.rcode = dnslib.RCODE.SERVFAIL
        elif str(request.q.qname).startswith("big.") and not tcp:
            reply.header.tc = 1
        else:
            count = 60 if str(request.q.qname).startswith("big.") else 1
            for i in range(count):
                reply.add_answer(dnslib.RR(request.q.qname, rdata=dnslib.A(f"192.0.2.{i + 1}"), ttl=60))
        return bytes(reply.pack())

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = self.reply(await reader.readexactly(size), tcp=True)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def upstream(mode: str = "answer") -> AsyncIterator[tuple[Upstream, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    proto = Upstream(mode)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(LOCAL, 0))
    port = transport.get_extra_info("sockname")[1]
    tcp_server = await asyncio.start_server(proto.serve_tcp, LOCAL, port)
    try:
        yield proto, (LOCAL, port)
    finally:
        transport.close()
        tcp_server.close()
        await tcp_server.wait_closed()


# --- answers ---
def test_udp_and_tcp_answer_service_names():
    async def main() -> None:
        async with serving(catalog(*WEB, reg("web", "10.200.0.4", 8082, healthy=False))) as (server, port):
            for ask in (udp, tcp):
                msg = await ask(port, "Web.Service.Shoal.")
                assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == {"10.200.0.2", "10.200.0.3"}
                assert msg.answer[0].name.to_text() == "Web.Service.Shoal."  # the question's case
                srv = await ask(port, "_web._tcp.service.shoal.", "SRV")
                assert {r.port for r in srv.answer[0]} == {8080, 8081}
                assert {r.name.to_text() for r in srv.additional} == {"0ac80002.addr.shoal.", "0ac80003.addr.shoal."}
                nx = await ask(port, "nothing.service.shoal.")
                assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority
            assert server.counters.answers == 6 and server.counters.nxdomain == 2 and server.counters.errors == 0
    run(main())


def test_a_replaced_view_is_answered_at_once():
    async def main() -> None:
        view = catalog(*WEB)
        async with serving(view) as (_, port):
            assert addresses(await udp(port, "web.service.shoal.")) == {"10.200.0.2", "10.200.0.3"}
            view.replace([reg("web", "10.200.0.2", 8080, healthy=False), WEB[1]], 2)
            assert addresses(await udp(port, "web.service.shoal.")) == {"10.200.0.3"}
            view.replace([], 3)
            assert (await udp(port, "web.service.shoal.")).rcode() == dns.rcode.NXDOMAIN
    run(main())


def test_a_big_answer_is_truncated_over_udp_and_whole_over_tcp():
    async def main() -> None:
        view = catalog(*(reg("big", f"10.200.0.{i + 2}", 8000 + i) for i in range(60)))
        async with serving(view) as (server, port):
            cut = await udp(port, "big.service.shoal.")
            assert cut.flags & dns.flags.TC and len(addresses(cut)) < 60
            assert len(addresses(await udp(port, "big.service.shoal.", use_edns=0, payload=4096))) == 60
            whole, used_tcp = await dns.asyncquery.udp_with_fallback(
                dns.message.make_query("big.service.shoal.", "A"), LOCAL, port=port, timeout=TIMEOUT)
            assert used_tcp and len(addresses(whole)) == 60
            assert server.counters.truncated == 2
    run(main())


def test_both_listen_addresses_serve():
    async def main() -> None:
        server = DnsServer(catalog(*WEB), DnsSettings(), [])
        try:
            first = await server.listen(LOCAL, 0)
            second = await server.listen("127.0.0.2", 0)
            for host, port in (first, second):
                msg = await dns.asyncquery.udp(dns.message.make_query("web.service.shoal.", "A"), host, port=port,
                                               timeout=TIMEOUT)
                assert len(addresses(msg)) == 2
        finally:
            await server.close()
    run(main())


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (dnsutils)")
def test_dig_reads_the_answers():
    async def main() -> None:
        async with serving(catalog(*WEB)) as (_, port):
            for extra in ([], ["+tcp"]):
                proc = await asyncio.create_subprocess_exec(
                    "dig", f"@{LOCAL}", "-p", str(port), "web.service.shoal", "+short", "+tries=1", "+time=5", *extra,
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                assert proc.returncode == 0 and set(out.decode().split()) == {"10.200.0.2", "10.200.0.3"}
    run(main())


# --- forwarding ---
def test_other_names_are_forwarded_and_relayed_with_the_clients_id():
    async def main() -> None:
        async with upstream() as (up, address), serving(catalog(*WEB), [address]) as (server, port):
            query = dns.message.make_query("example.org.", "A")
            msg = await dns.asyncquery.udp(query, LOCAL, port=port, timeout=TIMEOUT)  # checks the id itself
            assert msg.id == query.id and addresses(msg) == {"192.0.2.1"} and msg.flags & dns.flags.RA
            assert addresses(await tcp(port, "example.org.")) == {"192.0.2.1"}
            assert server.counters.forwarded == 2 and len(up.ids) == 2
    run(main())


def test_a_truncated_upstream_answer_is_fetched_over_tcp_for_a_tcp_client():
    async def main() -> None:
        async with upstream() as (_, address), serving(catalog(), [address]) as (_, port):
            cut = await udp(port, "big.example.org.")
            assert cut.flags & dns.flags.TC and not cut.answer  # the UDP client asks again over TCP
            assert len(addresses(await tcp(port, "big.example.org."))) == 60
    run(main())


def test_a_failing_recursor_is_skipped_and_silence_is_servfail():
    async def main() -> None:
        async with upstream("servfail") as (bad, bad_address), upstream() as (_, good_address):
            async with serving(catalog(), [bad_address, good_address]) as (_, port):
                assert addresses(await udp(port, "example.org.")) == {"192.0.2.1"} and len(bad.ids) == 1
        limits = DnsLimits(forward_deadline=0.3)  # the test's wait for the SERVFAIL
        async with upstream("silent") as (silent, address), serving(catalog(), [address], limits) as (server, port):
            msg = await udp(port, "example.org.")
            assert msg.rcode() == dns.rcode.SERVFAIL and len(silent.ids) == 1
            assert server.counters.servfail == 1
        async with serving(catalog()) as (server, port):  # no recursor at all
            assert (await tcp(port, "example.org.")).rcode() == dns.rcode.SERVFAIL
    run(main())


def test_recursors_come_from_resolv_conf_without_our_own_addresses():
    text = ("# generated\nsearch example.org\nnameserver 10.0.0.53\nnameserver 127.0.0.1 # us\n"
            "nameserver 10.0.0.53\nnameserver not-an-address\n  nameserver   fd00::53\noptions ndots:2\n"
            "nameserver 10.200.0.1\n")
    assert recursors_from_resolv_conf(text, {"127.0.0.1", "10.200.0.1"}) == [("10.0.0.53", 53), ("fd00::53", 53)]
    assert recursors_from_resolv_conf("", set()) == []


# --- bounds ---
def test_garbage_is_counted_and_the_server_keeps_answering():
    async def main() -> None:
        async with serving(catalog(*WEB)) as (server, port):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_connect(sock, (LOCAL, port))
                garbage = [b"", b"\x00", b"\xff" * 11, bytes(range(256)) * 2, b"\x00" * 5000,
                           struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0),  # a response: never answered
                           struct.pack("!HHHHHH", 2, 0, 1, 0, 0, 0) + b"\x05short",  # FORMERR
                           struct.pack("!HHHHHH", 3, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"]  # FORMERR
                for data in garbage:
                    await loop.sock_sendall(sock, data)
                good = dns.message.make_query("web.service.shoal.", "A")
                await loop.sock_sendall(sock, good.to_wire())
                rcodes = []
                while True:  # datagrams from one socket are handled in order: the good one comes last
                    reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 65535), TIMEOUT))
                    if reply.id == good.id:
                        break
                    rcodes.append(reply.rcode())
            finally:
                sock.close()
            assert len(addresses(reply)) == 2
            assert dns.rcode.FORMERR in rcodes
            assert server.counters.queries == len(garbage) + 1
            assert server.counters.errors == len(garbage)
            assert server.counters.dropped == 5  # too short, too long, a response: no reply; the rest FORMERR
    run(main())


def test_a_tcp_message_over_the_limit_closes_the_connection():
    async def main() -> None:
        async with serving(catalog(*WEB)) as (server, port):
            reader, writer = await asyncio.open_connection(LOCAL, port)
            writer.write(b"\xff\xff" + b"\x00" * 100)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed, nothing answered
            writer.close()
            assert server.counters.dropped == 1 and server.counters.errors == 1
            assert addresses(await tcp(port, "web.service.shoal.")) == {"10.200.0.2", "10.200.0.3"}
    run(main())


def test_idle_and_surplus_tcp_connections_are_closed():
    async def main() -> None:
        limits = DnsLimits(tcp_idle=0.2, max_tcp_connections=1)
        async with serving(catalog(*WEB), limits=limits) as (server, port):
            reader, writer = await asyncio.open_connection(LOCAL, port)
            query = dns.message.make_query("web.service.shoal.", "A").to_wire()
            writer.write(len(query).to_bytes(2, "big") + query)
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TIMEOUT), "big")
            await reader.readexactly(size)  # the first connection is being served
            second_reader, second_writer = await asyncio.open_connection(LOCAL, port)
            assert await asyncio.wait_for(second_reader.read(), TIMEOUT) == b""  # over the cap
            second_writer.close()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # the first one, idle, is closed too
            writer.close()
            assert server.counters.dropped == 1
    run(main())
