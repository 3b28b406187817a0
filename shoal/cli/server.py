"""``shoal server``, ``shoal operator raft`` and ``shoal event``: the control plane itself."""

from __future__ import annotations

import argparse
import json
import sys

from shoal.cli.common import add_address, add_json, client
from shoal.cli.gossip import register_operator
from shoal.cli.output import out, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="inspect the servers")
    ssub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))
    q = ssub.add_parser("members", help="list the servers of the cluster")
    add_address(q)
    add_json(q)
    q.set_defaults(func=cmd_members)

    p = sub.add_parser("operator", help="cluster operations")
    osub = p.add_subparsers(dest="area", metavar="<area>", parser_class=type(p))
    r = osub.add_parser("raft", help="the Raft group")
    rsub = r.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))
    q = rsub.add_parser("list-peers", help="list Raft peers as the asked server sees them")
    add_address(q)
    add_json(q)
    q.set_defaults(func=cmd_list_peers)
    q = rsub.add_parser("remove-peer", help="remove a server from the Raft group")
    q.add_argument("peer", help="its Raft address, API address or name")
    add_address(q)
    q.set_defaults(func=cmd_remove_peer)
    register_operator(osub, type(p))

    p = sub.add_parser("event", help="the event stream")
    esub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))
    q = esub.add_parser("stream", help="print committed changes as JSON lines")
    q.add_argument("--topic", "-topic", action="append", default=[],
                   help="Job, Allocation, Node, Evaluation or Server (repeat or comma-separate; default all)")
    add_address(q)
    q.set_defaults(func=cmd_event_stream)


async def cmd_members(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Server.Members", {})
    if args.json:
        print_json(r["members"])
        return 0
    table(["Name", "API", "Raft", "Status", "Leader"],
          [(m["name"], m["api"], m["raft"], m["status"], str(m["leader"]).lower()) for m in r["members"]])
    return 0


async def cmd_list_peers(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Operator.RaftPeers", {})
    if args.json:
        print_json(r)
        return 0
    table(["Node", "Address", "API", "State", "Voter"],
          [(p["name"], p["address"], p["api"], "leader" if p["leader"] else "follower", "true") for p in r["peers"]])
    return 0


async def cmd_remove_peer(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Operator.RaftRemovePeer", {"raft": args.peer})
    out.print(f"Removed peer {args.peer}; peers now: {', '.join(r['peers'])}", markup=False)
    return 0


async def cmd_event_stream(args: argparse.Namespace) -> int:
    topics = [t.strip() for arg in args.topic for t in arg.split(",") if t.strip()]
    async with client(args) as c:
        async for batch in c.stream("Event.Stream", {"topics": topics}):
            for ev in batch["events"]:
                sys.stdout.write(json.dumps(ev, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
    return 0
