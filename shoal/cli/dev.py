"""``shoal dev cluster``: a real multi-host cluster on this machine (network namespaces)."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from shoal.cli.output import out
from shoal.errors import ShoalError, UsageError
from shoal.jobs.network import DEFAULT_OVERLAY_CIDR, DEFAULT_SUBNET_PREFIX, IpamError, OverlayConfig
from shoal.jobs.structs import DEFAULT_MAX_DYNAMIC_PORT, DEFAULT_MIN_DYNAMIC_PORT, dynamic_range_error, parse_port_ranges


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="development helpers")
    dsub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))
    q = dsub.add_parser(
        "cluster",
        help="run N server hosts and M client hosts as network namespaces until interrupted",
        description="Each host is a network namespace with its own address on a bridge in 198.18.K.0/24, "
                    "running real shoal agents with their own data dirs and logs. Ctrl-C tears everything down.",
    )
    q.add_argument("--servers", type=int, default=3, help="server hosts (default 3)")
    q.add_argument("--clients", type=int, default=5, help="client hosts (default 5)")
    q.add_argument("--dir", type=Path, default=None, help="where hosts keep data and logs (default: a temporary dir, removed)")
    q.add_argument("--no-busybox", action="store_true", help="do not import a busybox:latest image on the clients")
    q.add_argument("--overlay-cidr", default=None, help=f"the servers' overlay network (default {DEFAULT_OVERLAY_CIDR})")
    q.add_argument("--overlay-subnet-prefix", type=int, default=None, metavar="BITS",
                   help=f"the size of each host's overlay subnet (default /{DEFAULT_SUBNET_PREFIX})")
    q.add_argument("--min-dynamic-port", type=int, default=None, metavar="PORT",
                   help=f"the clients' lowest dynamic host port (default {DEFAULT_MIN_DYNAMIC_PORT})")
    q.add_argument("--max-dynamic-port", type=int, default=None, metavar="PORT",
                   help=f"the clients' highest dynamic host port (default {DEFAULT_MAX_DYNAMIC_PORT})")
    q.add_argument("--reserved-ports", default=None, metavar="PORTS",
                   help='host ports no allocation may take on the clients, e.g. "22,80,8000-8100"')
    q.add_argument("--log-level", default="info")
    q.set_defaults(func=cmd_cluster)


def agent_flags(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ``shoal agent`` flags given to every server and every client, checked here so that a bad
    value is a usage error now, not an agent that fails to start in a host namespace."""
    server: list[str] = []
    if args.overlay_cidr is not None or args.overlay_subnet_prefix is not None:
        cfg = OverlayConfig(args.overlay_cidr or DEFAULT_OVERLAY_CIDR,
                            args.overlay_subnet_prefix or DEFAULT_SUBNET_PREFIX)
        try:
            cfg.check()
        except IpamError as exc:
            raise UsageError(f"shoal dev cluster: --overlay-cidr/--overlay-subnet-prefix: {exc}") from None
        server += ["--overlay-cidr", cfg.cidr, "--overlay-subnet-prefix", str(cfg.subnet_prefix)]
    client: list[str] = []
    low = DEFAULT_MIN_DYNAMIC_PORT if args.min_dynamic_port is None else args.min_dynamic_port
    high = DEFAULT_MAX_DYNAMIC_PORT if args.max_dynamic_port is None else args.max_dynamic_port
    why = dynamic_range_error(low, high, ("--min-dynamic-port", "--max-dynamic-port"))
    if why is not None:
        raise UsageError(f"shoal dev cluster: {why}")
    if (low, high) != (DEFAULT_MIN_DYNAMIC_PORT, DEFAULT_MAX_DYNAMIC_PORT):
        client += ["--min-dynamic-port", str(low), "--max-dynamic-port", str(high)]
    if args.reserved_ports is not None:
        try:
            parse_port_ranges(args.reserved_ports)
        except ValueError as exc:
            raise UsageError(f"shoal dev cluster: --reserved-ports {exc}") from None
        client += ["--reserved-ports", args.reserved_ports]
    return server, client


def cmd_cluster(args: argparse.Namespace) -> int:
    from shoal.devcluster import DevCluster
    from shoal.devcluster.rootfs import build_busybox_rootfs

    if args.servers < 1 or args.clients < 0:
        raise UsageError("shoal dev cluster: --servers must be >= 1 and --clients >= 0")
    server_flags, client_flags = agent_flags(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    images = {}
    with tempfile.TemporaryDirectory(prefix="shoal-dev-rootfs-") as tmp:
        if not args.no_busybox and Path("/bin/busybox").exists():
            images["busybox:latest"] = build_busybox_rootfs(Path(tmp) / "busybox")
        cluster = DevCluster(args.dir, servers=args.servers, clients=args.clients, images=images,
                             log_level=args.log_level, server_flags=server_flags, client_flags=client_flags)
        try:
            try:
                cluster.start(timeout=90)
            except (RuntimeError, TimeoutError, OSError) as exc:
                raise ShoalError(f"the dev cluster did not come up: {exc}") from exc
            out.print(cluster.describe(), markup=False, highlight=False)
            out.print("Running; Ctrl-C tears it down.", markup=False)
            while not stop.wait(1.0):
                pass
        finally:
            out.print("Tearing down...", markup=False)
            cluster.close()
    return 0
