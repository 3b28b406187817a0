"""``shoal agent``: run a server, a client, or both (``--dev``) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import structlog

from shoal.config import (
    DEFAULT_ADDRESS,
    DEFAULT_DNS_PORT,
    DEFAULT_GOSSIP_PORT,
    GOSSIP_KEY_ENV,
    DEFAULT_RAFT_PORT,
    ClientConfig,
    ServerConfig,
    parse_host_port,
)
from shoal.cli.common import add_address, add_json
from shoal.cli.gossip import check_members_args, cmd_members
from shoal.errors import UsageError
from shoal.gcpolicy import freeze_long_lived_objects
from shoal.jobs.network import IpamError, OverlayConfig
from shoal.jobs.structs import (
    DEFAULT_MAX_DYNAMIC_PORT,
    DEFAULT_MIN_DYNAMIC_PORT,
    dynamic_range_error,
    parse_port_ranges,
)
from shoal.log import configure

log = structlog.get_logger("shoal.agent.cmd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run a shoal server and/or client agent; `agent members`: its gossip members")
    p.add_argument("verb", nargs="?", metavar="members",
                   help="members: list the gossip members (state, incarnation, address, VTEP) an agent sees: the "
                        "agent of -node NAME, or of the first ready node")
    add_address(p)
    add_json(p)
    mode = p.add_argument_group("mode")
    mode.add_argument("--dev", "-dev", action="store_true", help="server and client in one process, temporary state")
    mode.add_argument("--server", "-server", action="store_true", help="run a server")
    mode.add_argument("--client", "-client", action="store_true", help="run a client (runs allocations)")
    p.add_argument("--data-dir", "-data-dir", type=Path, help="state directory (dev: a temporary one)")
    p.add_argument("--bind", "-bind", default=None, help=f"server API address (default {DEFAULT_ADDRESS})")
    p.add_argument("--raft-bind", default=None, help="server Raft address (default: the API host, port 4647)")
    p.add_argument("--join", "-join", default="", help="comma-separated API addresses of the other servers")
    p.add_argument("--bootstrap-expect", "-bootstrap-expect", type=int, default=1)
    p.add_argument("--heartbeat-ttl", type=float, default=5.0, metavar="SECONDS",
                   help="server: a client node missing heartbeats this long is marked down (its work replaced)")
    p.add_argument("--scheduler-algorithm", choices=("binpack", "spread"), default="binpack",
                   help="server: pack allocations onto few nodes (binpack) or spread them over many")
    p.add_argument("--preempt-service-batch", action="store_true",
                   help="server: let service and batch jobs preempt lower-priority allocations (system jobs always may)")
    p.add_argument("--overlay-cidr", default="10.200.0.0/16",
                   help="server: the cluster's overlay network; every node leases a subnet of it")
    p.add_argument("--overlay-subnet-prefix", type=int, default=24, metavar="BITS",
                   help="server: the size of each node's overlay subnet (default /24)")
    p.add_argument("--overlay-vni", type=int, default=4200, help="server: the overlay's VXLAN network id")
    p.add_argument("--overlay-port", type=int, default=4789, help="server: the overlay's VXLAN UDP port")
    p.add_argument("--network-address", default="", metavar="ADDR",
                   help="client: this host's address other hosts send overlay traffic to (default: the "
                        "--client-bind host)")
    p.add_argument("--servers", "-servers", default="", help="comma-separated server API addresses (client)")
    p.add_argument("--client-bind", default="127.0.0.1:0", help="the client's own API address (logs)")
    p.add_argument("--node-name", "-node", default="", help="this node's name (default: hostname)")
    p.add_argument("--datacenter", "-dc", default="dc1")
    p.add_argument("--image-dir", type=Path, default=Path("/var/lib/shoal/images"), help="local OCI image layout")
    p.add_argument("--raw-exec", action="store_true", help="enable the raw_exec driver (no isolation)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                   help="pull from this registry over plain http (loopback registries always are)")
    p.add_argument("--registry-auth", type=Path, metavar="FILE", help="registry credentials (a Docker config.json)")
    p.add_argument("--default-registry", default="docker.io",
                   help='registry for image names without one ("" = local images only)')
    p.add_argument("--allow-volume", action="append", default=[], type=Path, metavar="DIR",
                   help="host directory tasks may bind-mount with volumes = [...] (repeatable)")
    p.add_argument("--image-gc-delay", type=float, default=180.0, metavar="SECONDS",
                   help="how long an unused pulled image is kept")
    p.add_argument("--reserved-cpu", type=int, default=0, metavar="MHZ", help="CPU kept for the host")
    p.add_argument("--reserved-memory", type=int, default=0, metavar="MB", help="memory kept for the host")
    p.add_argument("--reserved-ports", type=port_list, default=[], metavar="PORTS",
                   help='host ports no allocation may take, e.g. "22,80,8000-8100"')
    p.add_argument("--min-dynamic-port", type=int, default=DEFAULT_MIN_DYNAMIC_PORT, metavar="PORT",
                   help=f"lowest host port given to dynamic ports (default {DEFAULT_MIN_DYNAMIC_PORT})")
    p.add_argument("--max-dynamic-port", type=int, default=DEFAULT_MAX_DYNAMIC_PORT, metavar="PORT",
                   help=f"highest host port given to dynamic ports (default {DEFAULT_MAX_DYNAMIC_PORT})")
    p.add_argument("--dns-port", type=int, default=DEFAULT_DNS_PORT, metavar="PORT",
                   help=f"client: the DNS server's port on 127.0.0.1 (default {DEFAULT_DNS_PORT}; 0: not on loopback). "
                        "It also answers on every bridge gateway, port 53, for the allocations there")
    p.add_argument("--dns-ttl", type=int, default=0, metavar="SECONDS", help="client: the TTL of service answers")
    p.add_argument("--dns-recursor", action="append", default=[], metavar="IP[:PORT]",
                   help="client: where names outside .shoal are forwarded (repeatable; default: the nameservers "
                        "of /etc/resolv.conf)")
    p.add_argument("--gossip-bind", default="", metavar="HOST:PORT",
                   help=f"client: where the agent gossips with the others, UDP and TCP (default: the --client-bind "
                        f"host, port {DEFAULT_GOSSIP_PORT}; port 0: any free one)")
    p.add_argument("--gossip-key", default="", metavar="BASE64",
                   help=f"client: the cluster's gossip encryption key (16, 24 or 32 bytes, base64; also "
                        f"${GOSSIP_KEY_ENV}); default: the keyring kept in the data dir, a fresh key on the first start")
    p.add_argument("--no-gossip", action="store_true",
                   help="client: no gossip; the servers notice a dead host by its missed heartbeats only")
    p.add_argument("--no-dns", action="store_true",
                   help="client: run no DNS server; allocations keep the host's /etc/resolv.conf")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-json", action="store_true", default=None, help="JSON logs (default when not on a terminal)")
    p.set_defaults(func=cmd_agent)


def check_overlay_flags(args: argparse.Namespace) -> None:
    try:
        OverlayConfig(args.overlay_cidr, args.overlay_subnet_prefix).check()
    except IpamError as exc:
        raise UsageError(f"--overlay-cidr/--overlay-subnet-prefix: {exc}") from None
    if not 1 <= args.overlay_vni < 1 << 24:
        raise UsageError(f"--overlay-vni {args.overlay_vni}: a VXLAN network id is 1 to 16777215")
    if not 1 <= args.overlay_port <= 65535:
        raise UsageError(f"--overlay-port {args.overlay_port}: not a UDP port")
    if args.network_address:
        try:
            ipaddress.IPv4Address(args.network_address)
        except ValueError:
            raise UsageError(f"--network-address {args.network_address!r} is not an IPv4 address") from None


def check_gossip_flags(args: argparse.Namespace) -> None:
    from shoal.agent.gossip.keyring import KeyringError, decode_key

    if args.gossip_bind:
        try:
            parse_host_port(args.gossip_bind, DEFAULT_GOSSIP_PORT, allow_zero=True)
        except ValueError as exc:
            raise UsageError(f"--gossip-bind {args.gossip_bind!r}: {exc}") from None
    key = args.gossip_key or os.environ.get(GOSSIP_KEY_ENV, "")
    if key:
        try:
            decode_key(key)
        except (KeyringError, ValueError) as exc:
            raise UsageError(f"--gossip-key: {exc}") from None


def check_dns_flags(args: argparse.Namespace) -> None:
    if not 0 <= args.dns_port <= 65535:
        raise UsageError(f"--dns-port {args.dns_port}: a port is 0 (none) to 65535")
    if args.dns_ttl < 0:
        raise UsageError(f"--dns-ttl {args.dns_ttl}: a TTL is 0 or more seconds")
    for r in args.dns_recursor:
        try:
            parse_host_port(r, 53)
        except ValueError as exc:
            raise UsageError(f"--dns-recursor {r!r}: {exc}") from None


def port_list(text: str) -> list[int]:
    """``--reserved-ports``: Nomad's port list, ``22,80,8000-8100``."""
    try:
        return parse_port_ranges(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_agent(args: argparse.Namespace) -> int:
    if args.verb is not None:
        check_members_args(args)
        return asyncio.run(cmd_members(args))
    if not (args.dev or args.server or args.client):
        raise UsageError("shoal agent: choose --dev, --server and/or --client")
    check_overlay_flags(args)
    if args.dev or args.client:
        check_dns_flags(args)
        check_gossip_flags(args)
        flags = ("--min-dynamic-port", "--max-dynamic-port")
        why = dynamic_range_error(args.min_dynamic_port, args.max_dynamic_port, flags)
        if why is not None:
            raise UsageError(f"shoal agent: {why}")
    configure(level=args.log_level, json=args.log_json)
    if args.dev or args.server:
        freeze_long_lived_objects()  # the cluster state must not stall the process in collections
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_agent(args))


def dump_tasks() -> None:
    """SIGUSR1: print every thread's and every asyncio task's stack to stderr (what is a stuck agent doing?)."""
    faulthandler.dump_traceback(all_threads=True)
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task.get_coro()!r}", file=sys.stderr)
        try:
            task.print_stack(limit=12, file=sys.stderr)
        except Exception as exc:  # compiled coroutines (grpc's) have no Python frames to show
            print(f"    (no stack: {exc!r})", file=sys.stderr)
    sys.stderr.flush()


async def run_agent(args: argparse.Namespace) -> int:
    from shoal.agent.agent import Agent
    from shoal.server.server import Server

    temp = None
    data_dir = args.data_dir
    if data_dir is None:
        if not args.dev:
            raise UsageError("shoal agent: --data-dir is required outside dev mode")
        temp = data_dir = Path(tempfile.mkdtemp(prefix="shoal-dev-"))
    data_dir = data_dir.resolve()
    api = args.bind or DEFAULT_ADDRESS
    server = client = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        if args.dev or args.server:
            host = api.rsplit(":", 1)[0]
            raft = args.raft_bind or f"{host}:{DEFAULT_RAFT_PORT if api == DEFAULT_ADDRESS else int(api.rsplit(':', 1)[1]) + 1}"
            join = [p for p in args.join.split(",") if p and p != api]
            if args.bootstrap_expect > 1 and len(join) < args.bootstrap_expect - 1:
                raise UsageError(f"--bootstrap-expect {args.bootstrap_expect} needs --join with at least "
                                 f"{args.bootstrap_expect - 1} other server address(es)")
            server = Server(
                ServerConfig(
                    data_dir=data_dir / "server",
                    rpc_bind=api,
                    raft_bind=raft,
                    join=join,
                    name=args.node_name,
                    bootstrap_expect=args.bootstrap_expect,
                    heartbeat_ttl=args.heartbeat_ttl,
                    scheduler_algorithm=args.scheduler_algorithm,
                    preempt_service_batch=args.preempt_service_batch,
                    overlay_cidr=args.overlay_cidr,
                    overlay_subnet_prefix=args.overlay_subnet_prefix,
                    overlay_vni=args.overlay_vni,
                    overlay_port=args.overlay_port,
                    raft_min_timeout=0.4 if args.dev else 1.0,
                    raft_max_timeout=0.8 if args.dev else 1.5,
                )
            )
            await server.start()
        if args.dev or args.client:
            servers = [s for s in args.servers.split(",") if s] or [api]
            client = Agent(
                ClientConfig(
                    data_dir=data_dir / "client",
                    servers=servers,
                    rpc_bind=args.client_bind,
                    node_name=args.node_name,
                    datacenter=args.datacenter,
                    image_dir=args.image_dir,
                    raw_exec=args.raw_exec or args.dev,
                    destroy_on_shutdown=args.dev,
                    insecure_registries=list(args.insecure_registry),
                    registry_auth=args.registry_auth,
                    default_registry=args.default_registry,
                    allowed_volumes=list(args.allow_volume),
                    image_gc_delay=args.image_gc_delay,
                    reserved_cpu=args.reserved_cpu,
                    reserved_memory=args.reserved_memory,
                    network_address=args.network_address,
                    reserved_ports=args.reserved_ports,
                    min_dynamic_port=args.min_dynamic_port,
                    max_dynamic_port=args.max_dynamic_port,
                    dns=not args.no_dns,
                    dns_port=args.dns_port,
                    dns_ttl=args.dns_ttl,
                    dns_recursors=list(args.dns_recursor),
                    gossip=not args.no_gossip,
                    gossip_bind=args.gossip_bind,
                    gossip_key=args.gossip_key or os.environ.get(GOSSIP_KEY_ENV, ""),
                )
            )
            await client.start()
        log.info("shoal agent running", dev=args.dev, api=api, data_dir=str(data_dir))
        await stop.wait()
        log.info("shutting down")
    finally:
        if client is not None:
            await client.stop()
        if server is not None:
            await server.stop()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    return 0
