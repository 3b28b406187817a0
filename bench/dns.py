"""The agent's DNS server under load: queries/s and latency of ``DnsServer`` against the floor of
the DNS library, on 127.0.0.1 UDP.

The view holds ``--services`` services (default 50) of ``--instances`` healthy instances each
(default 3). The queries cycle through the services: ``svcN.service.shoal`` A, and every
``--srv-every``-th (default 10th) ``_svcN._tcp.service.shoal`` SRV (three SRV records and their
targets' A records). Every reply is checked to be NOERROR with answers.

Two servers, the same socket setup (an asyncio datagram endpoint on uvloop, pinned to CPU 0 in
a process of its own):

- **shoal**: the agent's ``DnsServer`` with its answer cache, as the agent runs it.
- **floor**: a hand-written loop answering the same questions from a dict of dnslib records:
  dnslib's parse, reply and pack, with the same shuffle. What the library costs on its own.

The load generator runs in this process, pinned to CPU 1, on a plain UDP socket, in two ways:

- **saturated** (closed loop, ``--outstanding`` queries in flight, default 8): each reply sends
  the next query. ``qps`` is the most the server answers; its latencies include the queueing of
  the queries in flight.
- **at rate** (open loop, ``--rate``, default 10,000 queries/s): queries are sent on a fixed
  schedule whatever the replies do, each latency counted from when its query was due (no
  coordinated omission): the latency a client sees at the target rate.

Then (unless ``--no-cluster``, or without root) the seconds from an allocation becoming healthy to
its address being answered by every agent of a dev cluster, ``--samples`` times (p50/p99; see
``dns_propagation.py``; target: within 1 s).

Each measurement is bounded by ``--seconds`` and by a query count. A query with no reply within
half a second is counted in ``lost_queries`` (and sent again). ``ratio_to_floor`` = shoal's
queries/s over the floor's. The server's CPU time per query is read from /proc.
Prints a table, then one JSON line.
Usage: python bench/dns.py [--seconds 5] [--outstanding 8] [--rate 10000] [--samples 20] [--no-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import select
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import dnslib
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dns_propagation import measure_propagation  # noqa: E402
from raft_write import cpu_seconds, cpu_times, quantile, steal_percent  # noqa: E402

from shoal import log  # noqa: E402
from shoal.jobs.structs import ServiceRegistration  # noqa: E402
from shoal.netoverlay.dnsanswer import DnsSettings  # noqa: E402
from shoal.netoverlay.dnsserver import DnsServer  # noqa: E402
from shoal.netoverlay.dnsview import CatalogView  # noqa: E402

SERVER_CPU, CLIENT_CPU = 0, 1
REPLY_TIMEOUT = 0.5  # seconds: a query unanswered this long is lost
MAX_QUERIES_PER_SECOND = 200_000  # the count bound of a measurement: seconds x this
WARMUP_SECONDS = 0.5


def registrations(services: int, instances: int) -> list[ServiceRegistration]:
    return [ServiceRegistration(id=f"svc{s}-{i}", service_name=f"svc{s}", alloc_id=f"{s:04x}{i:04x}",
                                address=f"10.200.{s}.{i + 2}", port=20000 + i, healthy=True)
            for s in range(services) for i in range(instances)]


def queries(services: int, srv_every: int) -> list[bytes]:
    """Wire queries (id 0, no EDNS0), A for each service with every ``srv_every``-th one SRV."""
    out = []
    for n in range(max(services, srv_every) * 2):
        s = n % services
        srv = srv_every > 0 and n % srv_every == srv_every - 1
        name, qtype = (f"_svc{s}._tcp.service.shoal", "SRV") if srv else (f"svc{s}.service.shoal", "A")
        query = dnslib.DNSRecord.question(name, qtype)
        query.header.id = 0
        out.append(bytes(query.pack()))
    return out


# --- the servers, each in a process of its own ---
class FloorProtocol(asyncio.DatagramProtocol):
    """dnslib answering from a dict: (lower-case name, qtype) -> (answers, additional records)."""

    def __init__(self, table: dict[tuple[str, int], tuple[list[dnslib.RR], list[dnslib.RR]]]):
        self.table = table
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        request = dnslib.DNSRecord.parse(data)
        reply = request.reply()
        found = self.table.get((str(request.q.qname).lower(), request.q.qtype))
        if found is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        else:
            answers = list(found[0])
            random.shuffle(answers)
            for rr in answers:
                reply.add_answer(rr)
            for rr in found[1]:
                reply.add_ar(rr)
        self.transport.sendto(reply.pack(), addr)


def floor_table(regs: list[ServiceRegistration]) -> dict[tuple[str, int], tuple[list[dnslib.RR], list[dnslib.RR]]]:
    table: dict[tuple[str, int], tuple[list[dnslib.RR], list[dnslib.RR]]] = {}
    for reg in regs:
        a_name, srv_name = f"{reg.service_name}.service.shoal.", f"_{reg.service_name}._tcp.service.shoal."
        target = f"{bytes(map(int, reg.address.split('.'))).hex()}.addr.shoal."
        table.setdefault((a_name, dnslib.QTYPE.A), ([], []))[0].append(
            dnslib.RR(a_name, dnslib.QTYPE.A, rdata=dnslib.A(reg.address), ttl=0))
        answers, extra = table.setdefault((srv_name, dnslib.QTYPE.SRV), ([], []))
        answers.append(dnslib.RR(srv_name, dnslib.QTYPE.SRV, rdata=dnslib.SRV(1, 1, reg.port, target), ttl=0))
        extra.append(dnslib.RR(target, dnslib.QTYPE.A, rdata=dnslib.A(reg.address), ttl=0))
    return table


async def serve(kind: str, regs: list[ServiceRegistration], conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    if kind == "shoal":
        view = CatalogView()
        view.replace(regs, 1)
        server = DnsServer(view, DnsSettings(), [])
        _, port = await server.listen("127.0.0.1", 0)
        conn.send(port)
        await stop.wait()
        await server.close()
        return
    transport, _ = await loop.create_datagram_endpoint(lambda: FloorProtocol(floor_table(regs)),
                                                       local_addr=("127.0.0.1", 0))
    conn.send(transport.get_extra_info("sockname")[1])
    await stop.wait()
    transport.close()


def server_process(kind: str, regs: list[ServiceRegistration], conn: Connection) -> None:
    os.sched_setaffinity(0, {SERVER_CPU})
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(serve(kind, regs, conn))
    finally:
        loop.close()


@contextmanager
def running(kind: str, regs: list[ServiceRegistration]) -> Iterator[tuple[int, int]]:
    """A server process (``shoal`` or ``floor``): yields its UDP port and pid; stopped on the way out."""
    parent, child = multiprocessing.get_context("fork").Pipe()
    proc = multiprocessing.get_context("fork").Process(target=server_process, args=(kind, regs, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(10):
            raise RuntimeError(f"the {kind} server did not start")
        yield parent.recv(), proc.pid or 0
    finally:
        parent.send("stop")
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


# --- the load generator ---
@dataclass(slots=True)
class Run:
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    seconds: float = 0.0

    def figures(self, prefix: str) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {f"{prefix}qps": round(len(lat) / self.seconds, 1),
                f"{prefix}p50_ms": round(1000 * quantile(lat, 0.5), 3),
                f"{prefix}p99_ms": round(1000 * quantile(lat, 0.99), 3)}


class Client:
    """One UDP socket to the server; the query with id ``i`` is ``queries[i % len]``."""

    def __init__(self, port: int, wire: list[bytes]):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.wire = wire
        self.stamp = [0.0] * 65536  # by id: when the query was sent (closed loop) or due (open loop)

    def send(self, n: int, stamp: float) -> None:
        ident = n & 0xFFFF
        self.stamp[ident] = stamp
        self.sock.send(ident.to_bytes(2, "big") + self.wire[n % len(self.wire)][2:])

    def received(self, data: bytes, run: Run) -> None:
        if data[3] & 0x0F or not (data[6] or data[7]):
            raise RuntimeError(f"the server answered a bench query with no records: {data[:12].hex()}")
        run.latencies.append(time.perf_counter() - self.stamp[int.from_bytes(data[:2], "big")])

    def close(self) -> None:
        self.sock.close()


def closed_loop(client: Client, outstanding: int, seconds: float) -> Run:
    run = Run()
    limit = int(seconds * MAX_QUERIES_PER_SECOND)
    client.sock.settimeout(REPLY_TIMEOUT)
    start = time.perf_counter()
    stop = start + seconds
    for sent in range(outstanding):
        client.send(sent, time.perf_counter())
    sent = outstanding
    while sent < limit and time.perf_counter() < stop:
        try:
            data = client.sock.recv(4096)
        except TimeoutError:  # every query in flight is lost: start over
            run.lost += outstanding
            for _ in range(outstanding):
                client.send(sent, time.perf_counter())
                sent += 1
            continue
        client.received(data, run)
        client.send(sent, time.perf_counter())
        sent += 1
    drain(client, run, outstanding)
    run.seconds = time.perf_counter() - start
    return run


def open_loop(client: Client, rate: float, seconds: float) -> Run:
    run, sent = Run(), 0
    total = int(rate * seconds)
    client.sock.setblocking(False)
    start = time.perf_counter()
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            client.send(sent, start + sent / rate)
            sent += 1
        ready, _, _ = select.select([client.sock], [], [], max(0.0, start + sent / rate - time.perf_counter()))
        while ready:
            try:
                client.received(client.sock.recv(4096), run)
            except BlockingIOError:
                break
    run.seconds = time.perf_counter() - start
    client.sock.setblocking(True)
    drain(client, run, total - len(run.latencies))
    return run


def drain(client: Client, run: Run, pending: int) -> None:
    """Take the replies still to come; what does not come within REPLY_TIMEOUT is lost."""
    client.sock.settimeout(REPLY_TIMEOUT)
    for _ in range(pending):
        try:
            client.received(client.sock.recv(4096), run)
        except TimeoutError:
            run.lost += pending
            return
        pending -= 1


def measure(kind: str, regs: list[ServiceRegistration], wire: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    prefix = "" if kind == "shoal" else "floor_"
    with running(kind, regs) as (port, pid):
        client = Client(port, wire)
        try:
            closed_loop(client, args.outstanding, WARMUP_SECONDS)
            cpu = cpu_seconds(pid)
            saturated = closed_loop(client, args.outstanding, args.seconds)
            cpu = cpu_seconds(pid) - cpu
            paced = open_loop(client, args.rate, args.seconds)
        finally:
            client.close()
    out: dict[str, Any] = saturated.figures(prefix)
    paced_figures = paced.figures(f"{prefix}at_rate_")
    out[f"{prefix}at_rate_p50_ms"] = paced_figures[f"{prefix}at_rate_p50_ms"]
    out[f"{prefix}at_rate_p99_ms"] = paced_figures[f"{prefix}at_rate_p99_ms"]
    out[f"{prefix}cpu_us_per_query"] = round(1e6 * cpu / max(1, len(saturated.latencies)), 2)
    out[f"{prefix}lost_queries"] = saturated.lost + paced.lost
    return out


def measure_server(args: argparse.Namespace) -> dict[str, Any]:
    """The DNS server against the floor: saturated and at rate. The client runs pinned to CPU 1
    (its affinity is restored afterwards)."""
    regs = registrations(args.services, args.instances)
    wire = queries(args.services, args.srv_every)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})
    machine = cpu_times()
    try:
        out = measure("shoal", regs, wire, args) | measure("floor", regs, wire, args)
    finally:
        os.sched_setaffinity(0, affinity)
    out["ratio_to_floor"] = round(out["qps"] / out["floor_qps"], 3)
    out.update({"services": args.services, "instances_per_service": args.instances, "srv_every": args.srv_every,
                "outstanding": args.outstanding, "at_rate_offered_qps": args.rate,
                "seconds_per_measurement": args.seconds, "cpu_steal_percent": steal_percent(machine, cpu_times())})
    return out


def print_table(f: dict[str, Any]) -> None:
    at_rate = f"at {f['at_rate_offered_qps']:g}/s p50"
    print(f"{'server':24}{'queries/s':>12}{'p50 ms':>9}{'p99 ms':>9}{at_rate:>20}{'p99 ms':>9}{'CPU us/query':>14}"
          f"{'lost':>7}")
    for name, p in (("shoal DnsServer", ""), ("dnslib floor (dict)", "floor_")):
        print(f"{name:24}{f[f'{p}qps']:12,.0f}{f[f'{p}p50_ms']:9.3f}{f[f'{p}p99_ms']:9.3f}"
              f"{f[f'{p}at_rate_p50_ms']:20.3f}{f[f'{p}at_rate_p99_ms']:9.3f}{f[f'{p}cpu_us_per_query']:14.2f}"
              f"{f[f'{p}lost_queries']:7d}")
    print(f"ratio to floor {f['ratio_to_floor']:.2f}; {f['services']} services x {f['instances_per_service']} "
          f"instances, every {f['srv_every']}th query SRV, {f['outstanding']} in flight when saturated; "
          f"target >= 10,000 queries/s, p99 <= 2 ms; CPU steal {f['cpu_steal_percent']}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--outstanding", type=int, default=8, help="queries in flight in the saturated run")
    ap.add_argument("--rate", type=float, default=10_000.0, help="queries/s of the open-loop run")
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--srv-every", type=int, default=10, help="every Nth query is SRV (0: none)")
    ap.add_argument("--samples", type=int, default=20, help="healthy -> resolvable everywhere: how many times")
    ap.add_argument("--no-cluster", action="store_true", help="leave out the dev-cluster measurement")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs (0 and 1): the server and the load generator each get one")
    log.configure(level="warning", stream=sys.stderr)
    figures = measure_server(args)  # each measurement adds its figures to the one JSON line
    print_table(figures)
    if not args.no_cluster and os.geteuid() == 0:
        figures |= measure_propagation(args.samples)
        print(f"healthy -> resolvable on every agent ({figures['agents']} agents, {figures['healthy_to_resolvable_samples']}"
              f" samples): p50 {figures['healthy_to_resolvable_p50_seconds']:.3f} s, p99 "
              f"{figures['healthy_to_resolvable_p99_seconds']:.3f} s (target <= 1 s)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
