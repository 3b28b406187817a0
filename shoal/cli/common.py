"""Pieces every CLI noun shares: the address and namespace flags, the client, id prefixes."""

from __future__ import annotations

import argparse
import os

from shoal.config import cli_address
from shoal.ids import ALL_NAMESPACES, DEFAULT_NAMESPACE
from shoal.rpc.transport import RpcClient

NAMESPACE_ENV = "SHOAL_NAMESPACE"


def add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", "-address", help="server API address (default: $SHOAL_ADDR or 127.0.0.1:4646)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", "-json", action="store_true", help="print JSON for scripts")


def client(args: argparse.Namespace) -> RpcClient:
    return RpcClient(cli_address(getattr(args, "address", None)))


def add_stale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stale", "-stale", action="store_true", help="let any server answer from its own state")


def add_namespace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", "-namespace", metavar="NS",
                   help=f"the namespace (default: ${NAMESPACE_ENV} or {DEFAULT_NAMESPACE}); '*' means every namespace")


def add_namespaced(p: argparse.ArgumentParser, *, json: bool = False, stale: bool = False) -> None:
    """The flags of a command on jobs, allocations or evaluations: --address and --namespace, then
    --json and --stale for those that have them."""
    add_address(p)
    add_namespace(p)
    if json:
        add_json(p)
    if stale:
        add_stale(p)


def namespace(args: argparse.Namespace) -> str:
    """The command's namespace: -namespace, then $SHOAL_NAMESPACE, then "default" (as Nomad's CLI)."""
    return args.namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def across_namespaces(args: argparse.Namespace) -> bool:
    """Whether the command lists every namespace (its tables then show a Namespace column)."""
    return namespace(args) == ALL_NAMESPACES
