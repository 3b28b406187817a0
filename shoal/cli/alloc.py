"""``shoal alloc``: status and logs."""

from __future__ import annotations

import argparse
import sys

from shoal.cli.common import add_address, add_json, client
from shoal.cli.output import ago, fields, out, print_json, short, table, when
from shoal.errors import ShoalError
from shoal.rpc.transport import RpcClient


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alloc", help="inspect allocations")
    asub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = asub.add_parser("status", help="show an allocation and its task events")
    q.add_argument("alloc")
    add_address(q)
    add_json(q)
    q.set_defaults(func=cmd_status)

    q = asub.add_parser("logs", help="print a task's stdout (or stderr)")
    q.add_argument("alloc")
    q.add_argument("task", nargs="?")
    q.add_argument("-f", "--follow", action="store_true", help="keep printing as the task writes")
    q.add_argument("--stderr", "-stderr", action="store_true", help="stderr instead of stdout")
    q.add_argument("--tail", "-tail", type=int, default=None, metavar="N", help="only the last N lines")
    add_address(q)
    q.set_defaults(func=cmd_logs)


def tail_lines(data: bytes, n: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""


async def cmd_status(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Alloc.Get", {"alloc_id": args.alloc})
    if args.json:
        print_json(r)
        return 0
    a = r["allocation"]
    node = r.get("node") or {}
    fields(
        [
            ("ID", a["id"]), ("Name", a["name"]), ("Node ID", short(a["node_id"])), ("Node Name", node.get("name")),
            ("Job ID", a["job_id"]), ("Job Version", a["job_version"]), ("Client Status", a["client_status"]),
            ("Client Description", a["client_description"]), ("Desired Status", a["desired_status"]),
            ("Desired Description", a["desired_description"]), ("Created", ago(a["create_time"])),
            ("Modified", ago(a["modify_time"])),
        ]
    )
    for name, ts in sorted(a["task_states"].items()):
        out.print(f'\n[bold]Task "{name}" is "{ts["state"]}"[/]')
        fields([("Restarts", ts["restarts"]), ("Exit Code", ts["exit_code"]), ("Started At", when(ts["started_at"])),
                ("Finished At", when(ts["finished_at"]))])
        out.print("\n[bold]Recent Events:[/]")
        table(["Time", "Type", "Description"], [(when(e["time"]), e["type"], e["message"]) for e in reversed(ts["events"])])
    return 0


async def cmd_logs(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Alloc.Get", {"alloc_id": args.alloc})
    a, node = r["allocation"], r.get("node")
    if not node or not node.get("address"):
        raise ShoalError(f"allocation {short(a['id'])}: its node is unknown, logs cannot be fetched")
    req = {"alloc_id": a["id"], "task": args.task, "stderr": args.stderr, "follow": args.follow}
    if args.tail is not None and not args.follow:
        req["tail_bytes"] = max(4096, args.tail * 512)
    sink = sys.stdout.buffer
    async with RpcClient(node["address"]) as agent:
        if args.tail is not None and not args.follow:
            data = b"".join([chunk["data"] async for chunk in agent.stream("Agent.Logs", req)])
            sink.write(tail_lines(data, args.tail))
        else:
            async for chunk in agent.stream("Agent.Logs", req):
                sink.write(chunk["data"])
                sink.flush()
    sink.flush()
    return 0
