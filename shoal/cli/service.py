"""``shoal service``: the service catalog (Nomad's ``nomad service list`` / ``nomad service info``)."""

from __future__ import annotations

import argparse

from shoal.cli.common import across_namespaces, add_namespaced, client, namespace
from shoal.cli.output import out, print_json, short, table
from shoal.errors import NotFound


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="inspect the service catalog")
    ssub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = ssub.add_parser("list", help="list the registered services and their tags")
    add_namespaced(q, json=True, stale=True)
    q.set_defaults(func=cmd_list)

    q = ssub.add_parser("info", help="show a service's instances: address, port, tags, health, allocation, node")
    q.add_argument("name")
    add_namespaced(q, json=True, stale=True)
    q.set_defaults(func=cmd_info)


async def cmd_list(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Service.List", {"namespace": namespace(args), "stale": args.stale})
    if args.json:
        print_json(r["namespaces"])
        return 0
    rows = [(s["service_name"], ns["namespace"], f"[{','.join(s['tags'])}]")
            for ns in r["namespaces"] for s in ns["services"]]
    if not rows:
        out.print("No service registrations found")
        return 0
    if across_namespaces(args):
        table(["Service Name", "Namespace", "Tags"], rows)
    else:
        table(["Service Name", "Tags"], [(name, tags) for name, _, tags in rows])
    return 0


async def cmd_info(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Service.Info", {"namespace": namespace(args), "name": args.name, "stale": args.stale})
    regs = r["registrations"]
    if not regs:
        raise NotFound(f"no service {args.name!r} is registered in namespace {namespace(args)!r}")
    if args.json:
        print_json(regs)
        return 0
    every = across_namespaces(args)
    table(
        ["Job ID", *(["Namespace"] if every else []), "Address", "Tags", "Health", "Node", "Alloc ID"],
        [(g["job_id"], *([g["namespace"]] if every else []), f"{g['address']}:{g['port']}",
          f"[{','.join(g['tags'])}]", "healthy" if g["healthy"] else "unhealthy",
          g["node_name"] or short(g["node_id"]), short(g["alloc_id"])) for g in regs],
    )
    return 0
