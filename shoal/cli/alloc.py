"""``shoal alloc``: status, logs, exec, restart and stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty as ttymod

from shoal.cli.common import add_namespaced, client, namespace
from shoal.cli.output import ago, fields, out, print_json, short, table, when
from shoal.errors import ShoalError, UsageError
from shoal.rpc.transport import RpcClient


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alloc", help="inspect allocations")
    asub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = asub.add_parser("status", help="show an allocation and its task events")
    q.add_argument("alloc")
    add_namespaced(q, json=True)
    q.set_defaults(func=cmd_status)

    q = asub.add_parser("logs", help="print a task's stdout (or stderr)")
    q.add_argument("alloc")
    q.add_argument("task", nargs="?")
    q.add_argument("-f", "--follow", action="store_true", help="keep printing as the task writes")
    q.add_argument("--stderr", "-stderr", action="store_true", help="stderr instead of stdout")
    q.add_argument("--tail", "-tail", type=int, default=None, metavar="N", help="only the last N lines")
    add_namespaced(q)
    q.set_defaults(func=cmd_logs)

    q = asub.add_parser("exec", help="run a command inside a running task (-t for a terminal)")
    q.add_argument("-t", "--tty", "-tty", action="store_true", help="allocate a terminal (default: when stdin is one)")
    q.add_argument("-T", "--no-tty", action="store_true", help="never allocate a terminal")
    q.add_argument("-i", "--interactive", action="store_true", default=True, help="forward stdin (the default)")
    q.add_argument("--task", "-task", default=None, help="the task (default: the allocation's only running task)")
    q.add_argument("alloc")
    q.add_argument("command", nargs=argparse.REMAINDER, metavar="[TASK] -- COMMAND [ARGS...]")
    add_namespaced(q)
    q.set_defaults(func=cmd_exec)

    q = asub.add_parser("restart", help="restart an allocation's running tasks (or one task) in place")
    q.add_argument("alloc")
    q.add_argument("task", nargs="?")
    add_namespaced(q)
    q.set_defaults(func=cmd_restart)

    q = asub.add_parser("stop", help="stop an allocation; the scheduler replaces it")
    q.add_argument("alloc")
    q.add_argument("--detach", "-detach", action="store_true", help="return at once")
    add_namespaced(q, json=True)
    q.set_defaults(func=cmd_stop)


def tail_lines(data: bytes, n: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""


async def _get(args: argparse.Namespace) -> dict:
    """``Alloc.Get`` of the command's allocation id prefix, looked up in its namespace."""
    async with client(args) as c:
        return await c.call("Alloc.Get", {"alloc_id": args.alloc, "namespace": namespace(args)})


async def cmd_status(args: argparse.Namespace) -> int:
    r = await _get(args)
    if args.json:
        print_json(r)
        return 0
    a = r["allocation"]
    node = r.get("node") or {}
    fields(
        [
            ("ID", a["id"]), ("Name", a["name"]), ("Node ID", short(a["node_id"])), ("Node Name", node.get("name")),
            ("Job ID", a["job_id"]), ("Namespace", a["namespace"]), ("Job Version", a["job_version"]), ("Client Status", a["client_status"]),
            ("Client Description", a["client_description"]), ("Desired Status", a["desired_status"]),
            ("Desired Description", a["desired_description"]), ("Created", ago(a["create_time"])),
            ("Modified", ago(a["modify_time"])),
            ("Healthy", {True: "true", False: "false"}.get(a.get("healthy"), "")),
        ]
    )
    net = a.get("network_status") or {}
    if net or a.get("ports"):
        out.print("\n[bold]Network:[/]")
        fields([("Mode", net.get("mode", "")), ("Network", net.get("network", "")),
                ("Address", net.get("address", ""))])
        host = (node.get("address") or "").rsplit(":", 1)[0]
        if a.get("ports"):
            table(["Label", "Host Address", "To"],
                  [(p["label"], f'{host}:{p["value"]}', str(p["to"] or p["value"])) for p in a["ports"]])
    if a.get("checks"):
        out.print("\n[bold]Checks:[/]")
        table(["Check", "Status"], sorted(a["checks"].items()))
    for name, ts in sorted(a["task_states"].items()):
        out.print(f'\n[bold]Task "{name}" is "{ts["state"]}"[/]')
        fields([("Restarts", ts["restarts"]), ("Exit Code", ts["exit_code"]), ("Started At", when(ts["started_at"])),
                ("Finished At", when(ts["finished_at"]))])
        out.print("\n[bold]Recent Events:[/]")
        table(["Time", "Type", "Description"], [(when(e["time"]), e["type"], e["message"]) for e in reversed(ts["events"])])
    return 0


async def cmd_logs(args: argparse.Namespace) -> int:
    a, node = await _locate(args)
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


async def _locate(args: argparse.Namespace) -> tuple[dict, dict]:
    """The allocation and the node that runs it (the agent answers logs, exec and restart)."""
    r = await _get(args)
    a, node = r["allocation"], r.get("node")
    if not node or not node.get("address"):
        raise ShoalError(f"allocation {short(a['id'])}: its node is unknown")
    return a, node


async def cmd_restart(args: argparse.Namespace) -> int:
    a, node = await _locate(args)
    async with RpcClient(node["address"]) as agent:
        r = await agent.call("Agent.AllocRestart", {"alloc_id": a["id"], "task": args.task})
    out.print(f"Restarted {', '.join(r['restarted'])} of allocation {short(a['id'])}", markup=False)
    return 0


async def cmd_stop(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Alloc.Stop", {"alloc_id": args.alloc, "namespace": namespace(args)})
        if args.json:
            print_json(r)
            return 0
        out.print(f"Allocation {short(r['alloc_id'])} stopped; evaluation {short(r['eval_id'])} places its "
                  "replacement", markup=False)
        if args.detach:
            return 0
        deadline = asyncio.get_running_loop().time() + 60
        index = 0
        while asyncio.get_running_loop().time() < deadline:
            g = await c.call("Alloc.Get", {"alloc_id": r["alloc_id"], "namespace": r["namespace"], "min_index": index,
                                           "wait": 5})
            index = int(g.get("index") or 0)
            status = g["allocation"]["client_status"]
            if status in ("complete", "failed", "lost"):
                out.print(f"Allocation {short(r['alloc_id'])} is {status}", markup=False)
                return 0
    return 0


def _split_exec(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    rest = list(args.command)
    task = args.task
    if rest and rest[0] != "--" and "--" in rest:
        i = rest.index("--")
        if i == 1 and task is None:
            task = rest[0]
        rest = rest[i:]
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("shoal alloc exec: give a command: shoal alloc exec ID [TASK] -- COMMAND [ARGS...]")
    return task, rest


async def cmd_exec(args: argparse.Namespace) -> int:
    task, command = _split_exec(args)
    stdin_fd = sys.stdin.fileno() if sys.stdin is not None else -1
    is_tty = stdin_fd >= 0 and os.isatty(stdin_fd)
    use_tty = (args.tty or is_tty) and not args.no_tty
    a, node = await _locate(args)
    size = shutil.get_terminal_size((80, 24)) if use_tty else None
    loop = asyncio.get_running_loop()
    async with RpcClient(node["address"]) as agent:
        r = await agent.call("Agent.ExecStart", {
            "alloc_id": a["id"], "task": task, "command": command, "tty": use_tty,
            "rows": size.lines if size else 0, "cols": size.columns if size else 0,
        })
        session = r["session"]
        saved = None
        pending: set[asyncio.Task] = set()

        async def send(req: dict) -> None:
            with contextlib.suppress(ShoalError):
                await agent.call("Agent.ExecInput", {"session": session, **req})

        def forward(req: dict) -> None:
            t = loop.create_task(send(req))
            pending.add(t)
            t.add_done_callback(pending.discard)

        input_queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def on_stdin() -> None:
            try:
                data = os.read(stdin_fd, 32 * 1024)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(stdin_fd)
            input_queue.put_nowait(data or None)

        async def pump_input() -> None:
            while True:
                data = await input_queue.get()
                if data is None:
                    await send({"eof": True})
                    return
                await send({"data": data})

        reading = False
        if args.interactive and stdin_fd >= 0:
            try:
                loop.add_reader(stdin_fd, on_stdin)
                reading = True
            except (PermissionError, ValueError, OSError):  # a regular file: read it in one go
                data = sys.stdin.buffer.read()
                input_queue.put_nowait(data)
                input_queue.put_nowait(None)
        else:
            input_queue.put_nowait(None)
        pump = loop.create_task(pump_input())
        if use_tty and is_tty:
            saved = termios.tcgetattr(stdin_fd)
            ttymod.setraw(stdin_fd)
            loop.add_signal_handler(signal.SIGWINCH, lambda: forward(
                {"rows": shutil.get_terminal_size().lines, "cols": shutil.get_terminal_size().columns}))
        code = 1
        try:
            async for item in agent.stream("Agent.ExecOutput", {"session": session}):
                if "exit_code" in item:
                    code = int(item["exit_code"] if item["exit_code"] is not None else 1)
                    break
                sink = sys.stderr.buffer if item.get("stream") == "stderr" else sys.stdout.buffer
                sink.write(item["data"])
                sink.flush()
        finally:
            if reading:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(stdin_fd)
            pump.cancel()
            if saved is not None:
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
                loop.remove_signal_handler(signal.SIGWINCH)
            for t in list(pending):
                t.cancel()
    return code
