"""``shoal agent members`` and ``shoal operator gossip keyring``: the agents' gossip.

The servers do not gossip; the agents do. Both commands find the client nodes through the
servers and then talk to the agents themselves (their API address is on their node record),
as ``alloc logs`` does. A keyring change goes to every ready node's agent, one after the other,
and the command says which ones did not take it (exit 1): a rotation is install everywhere,
then use everywhere, then remove everywhere, so no member ever stops understanding another.
"""

from __future__ import annotations

import argparse
from typing import Any

from shoal.cli.common import add_address, add_json, client
from shoal.cli.output import out, print_json, table
from shoal.errors import NotFound, ShoalError, UsageError
from shoal.rpc.transport import RpcClient

KEYRING_OPS = ("install", "use", "remove", "list")


def register_operator(osub: argparse._SubParsersAction, parser_class: type) -> None:
    g = osub.add_parser("gossip", help="the agents' gossip")
    gsub = g.add_subparsers(dest="verb", metavar="<verb>", parser_class=parser_class)
    q = gsub.add_parser("keyring", help="install, use, remove or list gossip encryption keys on every agent")
    ops = q.add_mutually_exclusive_group(required=True)
    ops.add_argument("--install", "-install", metavar="KEY", help="add a key (base64) to every agent's keyring")
    ops.add_argument("--use", "-use", metavar="KEY", help="make an installed key the one packets are sealed with")
    ops.add_argument("--remove", "-remove", metavar="KEY", help="remove a key that is no longer in use")
    ops.add_argument("--list", "-list", action="store_true", help="each agent's keys, primary first")
    ops.add_argument("--generate", "-generate", action="store_true", help="print a new random key")
    add_address(q)
    add_json(q)
    q.set_defaults(func=cmd_keyring)


async def ready_nodes(args: argparse.Namespace) -> list[dict[str, Any]]:
    async with client(args) as c:
        nodes = (await c.call("Node.List", {}))["nodes"]
    ready = [n for n in nodes if n["status"] == "ready"]
    if not ready:
        raise NotFound("no client node is ready")
    return ready


async def cmd_members(args: argparse.Namespace) -> int:
    nodes = await ready_nodes(args)
    if args.node_name:  # `shoal agent members -node NAME`: that node's agent
        picked = [n for n in nodes if n["name"] == args.node_name or n["id"].startswith(args.node_name)]
        if not picked:
            raise NotFound(f"no ready node {args.node_name!r}")
        nodes = picked[:1]
    node = nodes[0]
    async with RpcClient(node["address"]) as agent:
        r = await agent.call("Agent.Members", {})
    names = {n["id"]: n["name"] for n in nodes}
    if args.json:
        print_json(r["members"])
        return 0
    out.print(f"Members as node {node['name']} sees them", markup=False)
    table(["Node", "ID", "Address", "State", "Incarnation", "VTEP", "Subnet"],
          [(m["meta"].get("name") or names.get(m["name"], ""), m["name"][:8], m["address"], m["state"],
            m["incarnation"], m["meta"].get("vtep", ""), m["meta"].get("subnet", "")) for m in r["members"]])
    return 0


async def cmd_keyring(args: argparse.Namespace) -> int:
    if args.generate:
        from shoal.agent.gossip.keyring import generate

        out.print(generate(), markup=False)
        return 0
    op = next(o for o in KEYRING_OPS if getattr(args, o))
    key = "" if op == "list" else getattr(args, op)
    results: dict[str, Any] = {}
    failed = []
    for n in await ready_nodes(args):
        try:
            async with RpcClient(n["address"]) as agent:
                results[n["name"]] = (await agent.call("Agent.Keyring", {"op": op, "key": key}))["keys"]
        except ShoalError as exc:
            results[n["name"]] = f"error: {exc}"
            failed.append(n["name"])
    if args.json:
        print_json(results)
    else:
        for name, keys in results.items():
            out.print(f"{name}: " + (keys if isinstance(keys, str) else ", ".join(keys)), markup=False)
    if failed:
        raise ShoalError(f"the keyring {op} failed on {len(failed)} of {len(results)} nodes: {', '.join(failed)}")
    if op != "list":
        out.print(f"==> {op} done on {len(results)} nodes", markup=False)
    return 0


def check_members_args(args: argparse.Namespace) -> None:
    if args.verb != "members":
        raise UsageError(f"shoal agent: unknown command {args.verb!r} (did you mean `shoal agent members`?)")
