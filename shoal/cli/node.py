"""``shoal node``: status (the servers' view, and beside it the agents' gossip view), drain, eligibility, purge."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from shoal.cli.common import add_address, add_json, add_stale, client
from shoal.cli.output import fields, out, print_json, short, table
from shoal.errors import ShoalError
from shoal.rpc.transport import RpcClient


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="inspect client nodes")
    nsub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))
    q = nsub.add_parser("status", help="list nodes, or show one")
    q.add_argument("node", nargs="?")
    add_address(q)
    add_json(q)
    add_stale(q)
    q.set_defaults(func=cmd_status)

    for verb, helptext in (("drain", "stop placing work on a node and migrate its allocations away"),
                           ("eligibility", "allow or forbid new placements on a node")):
        q = nsub.add_parser(verb, help=helptext)
        q.add_argument("node")
        g = q.add_mutually_exclusive_group(required=True)
        g.add_argument("--enable", "-enable", action="store_true")
        g.add_argument("--disable", "-disable", action="store_true")
        if verb == "drain":
            q.add_argument("--deadline", "-deadline", default="1h",
                           help="accepted for Nomad compatibility; allocations migrate at once (no migrate stanza yet)")
        add_address(q)
        q.set_defaults(func=cmd_drain if verb == "drain" else cmd_eligibility)

    q = nsub.add_parser("purge", help="forget a node: its record and overlay subnets go, its allocations are replaced")
    q.add_argument("node")
    add_address(q)
    q.set_defaults(func=cmd_purge)


def vtep_of(subnet: str) -> str:
    """A node's VTEP address: its subnet's first address (flannel's layout, ``netoverlay.ipam``)."""
    return str(ipaddress.IPv4Network(subnet).network_address)


async def cmd_status(args: argparse.Namespace) -> int:
    async with client(args) as c:
        if args.node:
            r = await c.call("Node.Get", {"node_id": args.node, "stale": args.stale})
            if args.json:
                print_json(r)
                return 0
            n = r["node"]
            res = n["resources"]
            fields(
                [
                    ("ID", n["id"]), ("Name", n["name"]), ("Datacenter", n["datacenter"]), ("Pool", n["node_pool"]),
                    ("Status", n["status"]), ("Eligibility", "eligible" if n["eligible"] else "ineligible"),
                    ("Drain", n["drain"]), ("Address", n["address"]), ("Drivers", ",".join(n["drivers"])),
                    ("CPU", f'{res["cpu"]} MHz ({res["cores"]} cores)'), ("Memory", f'{res["memory"]} MB'),
                ]
            )
            if r.get("leases"):
                out.print("\n[bold]Overlay[/]")
                table(["Network", "Subnet", "VTEP", "Underlay"],
                      [(le["network"], le["subnet"], vtep_of(le["subnet"]), le["underlay"]) for le in r["leases"]])
            out.print("\n[bold]Attributes[/]")
            fields(sorted(n["attributes"].items()))
            out.print("\n[bold]Allocations[/]")
            table(["ID", "Job", "Task Group", "Desired", "Status"],
                  [(short(a["id"]), a["job_id"], a["task_group"], a["desired_status"], a["client_status"]) for a in r["allocations"]])
            return 0
        r = await c.call("Node.List", {"stale": args.stale})
    if args.json:
        print_json(r["nodes"])
        return 0
    if not r["nodes"]:
        out.print("No nodes registered")
        return 0
    gossip = await gossip_states(r["nodes"])
    table(
        ["ID", "Name", "DC", "Pool", "Drivers", "Eligibility", "Status", "Gossip", "Allocs"],
        [
            (short(n["id"]), n["name"], n["datacenter"], n["node_pool"], ",".join(n["drivers"]),
             "eligible" if n["eligible"] else "ineligible", n["status"], gossip.get(n["id"], "-"), n["running_allocs"])
            for n in r["nodes"]
        ],
    )
    return 0


async def gossip_states(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """The agents' view beside the servers': each node's gossip state (alive, suspect, dead, left) as
    the first ready node's agent sees it; empty when no agent answers (or none gossips)."""
    for n in nodes:
        if n["status"] != "ready":
            continue
        try:
            async with RpcClient(n["address"]) as agent:
                r = await agent.call("Agent.Members", {}, timeout=2.0)
        except ShoalError:
            continue
        return {m["name"]: m["state"] for m in r["members"]}
    return {}


async def cmd_drain(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Node.UpdateDrain", {"node_id": args.node, "enable": args.enable})
    state = "draining: its allocations are being migrated" if r["drain"] else "no longer draining"
    out.print(f"Node {short(r['node_id'])} {state} ({len(r['eval_ids'])} evaluation(s) created)", markup=False)
    return 0


async def cmd_eligibility(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Node.UpdateEligibility", {"node_id": args.node, "enable": args.enable})
    out.print(f"Node {short(r['node_id'])} scheduling eligibility: {'eligible' if r['eligible'] else 'ineligible'}",
              markup=False)
    return 0


async def cmd_purge(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Node.Purge", {"node_id": args.node})
    released = ", ".join(r["released"]) or "none"
    out.print(f"Node {short(r['node_id'])} purged; overlay subnets released: {released}; "
              f"{len(r['eval_ids'])} evaluation(s) created", markup=False)
    return 0
