"""Pieces every CLI noun shares: the address flag, the client, id prefixes."""

from __future__ import annotations

import argparse

from shoal.config import cli_address
from shoal.rpc.transport import RpcClient


def add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", "-address", help="server API address (default: $SHOAL_ADDR or 127.0.0.1:4646)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", "-json", action="store_true", help="print JSON for scripts")


def client(args: argparse.Namespace) -> RpcClient:
    return RpcClient(cli_address(getattr(args, "address", None)))


def add_stale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stale", "-stale", action="store_true", help="let any server answer from its own state")
