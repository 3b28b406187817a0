"""``shoal dev cluster``: a real multi-host cluster on this machine (network namespaces)."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from shoal.cli.output import out
from shoal.errors import ShoalError, UsageError


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
    q.add_argument("--log-level", default="info")
    q.set_defaults(func=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    from shoal.devcluster import DevCluster
    from shoal.devcluster.rootfs import build_busybox_rootfs

    if args.servers < 1 or args.clients < 0:
        raise UsageError("shoal dev cluster: --servers must be >= 1 and --clients >= 0")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    images = {}
    with tempfile.TemporaryDirectory(prefix="shoal-dev-rootfs-") as tmp:
        if not args.no_busybox and Path("/bin/busybox").exists():
            images["busybox:latest"] = build_busybox_rootfs(Path(tmp) / "busybox")
        cluster = DevCluster(args.dir, servers=args.servers, clients=args.clients, images=images,
                             log_level=args.log_level)
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
