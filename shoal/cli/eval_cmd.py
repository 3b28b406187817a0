"""``shoal eval``: list and status (Nomad's ``nomad eval list`` / ``nomad eval status``)."""

from __future__ import annotations

import argparse

from shoal import codec
from shoal.cli.common import across_namespaces, add_namespaced, client, namespace
from shoal.cli.output import fields, out, print_json, short, table, when
from shoal.jobs.structs import PlacementFailure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="inspect evaluations")
    esub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = esub.add_parser("list", help="list evaluations, newest first")
    q.add_argument("--job", "-job", default=None, metavar="JOB", help="only the evaluations of this job id")
    q.add_argument("--status", "-status", default=None, help="only evaluations in this status (pending, complete, ...)")
    add_namespaced(q, json=True, stale=True)
    q.set_defaults(func=cmd_list)

    q = esub.add_parser("status", help="show one evaluation and why it could not place allocations")
    q.add_argument("eval")
    add_namespaced(q, json=True, stale=True)
    q.set_defaults(func=cmd_status)


async def cmd_list(args: argparse.Namespace) -> int:
    req = {"namespace": namespace(args), "job_id": args.job, "status": args.status, "stale": args.stale}
    async with client(args) as c:
        r = await c.call("Eval.List", req)
    evals = r["evaluations"]
    if args.json:
        print_json(evals)
        return 0
    if not evals:
        out.print("No evaluations found")
        return 0
    every = across_namespaces(args)
    table(
        ["ID", "Priority", "Triggered By", "Job ID", *(["Namespace"] if every else []), "Node ID", "Status",
         "Placement Failures"],
        [(short(e["id"]), e["priority"], e["triggered_by"], e["job_id"], *([e["namespace"]] if every else []),
          short(e["node_id"]), e["status"], str(bool(e["failed_tg_allocs"])).lower()) for e in evals],
    )
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Eval.Get", {"eval_id": args.eval, "namespace": namespace(args), "stale": args.stale})
    if args.json:
        print_json({k: v for k, v in r.items() if k != "index"})
        return 0
    ev = r["eval"]
    failures = [codec.from_plain(PlacementFailure, f) for f in ev["failed_tg_allocs"].values()]
    fields(
        [
            ("ID", ev["id"]), ("Create Time", when(ev["create_time"])), ("Modify Time", when(ev["modify_time"])),
            ("Status", ev["status"]), ("Status Description", ev["status_description"]), ("Type", ev["type"]),
            ("TriggeredBy", ev["triggered_by"]), ("Job ID", ev["job_id"]), ("Namespace", ev["namespace"]),
            ("Node ID", short(ev["node_id"])), ("Priority", ev["priority"]),
            ("Previous Eval", short(ev["previous_eval"])), ("Blocked Eval", short(ev["blocked_eval"])),
            ("Placement Failures", str(bool(failures)).lower()),
        ]
    )
    if failures:
        out.print("\n[bold]Failed Placements[/]")
        for f in failures:
            for line in f.explain():
                out.print(line, markup=False)
    if r["allocations"]:
        out.print("\n[bold]Allocations Placed[/]")
        table(["ID", "Node ID", "Task Group", "Desired", "Status"],
              [(short(a["id"]), short(a["node_id"]), a["task_group"], a["desired_status"], a["client_status"])
               for a in r["allocations"]])
    return 0
