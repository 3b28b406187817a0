"""``shoal job``: init, validate, run, status, stop."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from shoal import codec
from shoal.cli.common import across_namespaces, add_namespaced, client, namespace
from shoal.cli.output import ago, fields, out, print_json, short, table, when
from shoal.errors import ShoalError, UsageError
from shoal.ids import ALL_NAMESPACES
from shoal.jobs.loader import LoadedJob, example_job_text, load_job_file
from shoal.jobs.structs import PlacementFailure
from shoal.rpc.transport import RpcClient

EVAL_DONE = ("complete", "failed", "canceled", "blocked")
ALLOC_DONE = ("complete", "failed", "lost")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("job", help="submit and manage jobs")
    jsub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = jsub.add_parser("init", help="write an example job file")
    q.add_argument("file", nargs="?", default="example.hcl")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_init)

    q = jsub.add_parser("validate", help="check a job file without submitting it")
    q.add_argument("file")
    _add_vars(q)
    q.set_defaults(func=cmd_validate)

    q = jsub.add_parser("run", help="submit a job and follow it until its allocations run")
    q.add_argument("file")
    q.add_argument("--detach", "-detach", action="store_true", help="return once the job is submitted")
    q.add_argument("--timeout", type=float, default=300.0, help="seconds to follow the job (default 300)")
    _add_vars(q)
    add_namespaced(q)
    q.set_defaults(func=cmd_run)

    q = jsub.add_parser("plan", help="dry run: what `job run` would change (exit 1 when it would change something)")
    q.add_argument("file")
    _add_vars(q)
    add_namespaced(q, json=True)
    q.set_defaults(func=cmd_plan)

    q = jsub.add_parser("status", help="list jobs, or show one")
    q.add_argument("job", nargs="?")
    add_namespaced(q, json=True, stale=True)
    q.set_defaults(func=cmd_status)

    q = jsub.add_parser("stop", help="stop a job's allocations")
    q.add_argument("job")
    q.add_argument("--purge", "-purge", action="store_true", help="also remove the job from the state")
    q.add_argument("--detach", "-detach", action="store_true", help="return once the stop is submitted")
    q.add_argument("--timeout", type=float, default=120.0)
    add_namespaced(q)
    q.set_defaults(func=cmd_stop)


def _add_vars(p: argparse.ArgumentParser) -> None:
    p.add_argument("--var", "-var", action="append", default=[], metavar="KEY=VALUE", help="set an HCL variable")


def _variables(args: argparse.Namespace) -> dict[str, str]:
    out_: dict[str, str] = {}
    for kv in args.var:
        if "=" not in kv:
            raise UsageError(f"-var {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        out_[k] = v
    return out_


# --- init / validate ---
def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise ShoalError(f"{path} already exists; use --force to overwrite it")
    path.write_text(example_job_text())
    out.print(f"Example job file written to {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_job_file(args.file, variables=_variables(args))
    for w in loaded.warnings:
        out.print(f"Warning: {w}", markup=False)
    out.print(f"Job validation successful: {args.file} (job {loaded.job.id!r})", markup=False)
    return 0


def _load_for_submit(args: argparse.Namespace, verb: str) -> LoadedJob:
    """The job file's job; the namespace flag (or $SHOAL_NAMESPACE) applies only when the file names
    none, as in Nomad. ``*`` is refused: a job is submitted to one namespace."""
    ns = namespace(args)
    if ns == ALL_NAMESPACES:
        raise UsageError(f"shoal job {verb}: -namespace '*' means every namespace, and a job goes to one: "
                         "give -namespace NAME, or set namespace in the job file")
    loaded = load_job_file(args.file, variables=_variables(args), namespace=ns)
    for w in loaded.warnings:
        out.print(f"Warning: {w}", markup=False)
    return loaded


# --- run ---
async def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load_for_submit(args, "run")
    async with client(args) as c:
        resp = await c.call("Job.Register", {"job": codec.to_plain(loaded.job), "source": str(args.file)})
        eval_id = resp["eval_id"]
        if args.detach:
            out.print("Job registration successful")
            out.print(f"Evaluation ID: {eval_id}")
            return 0
        job = loaded.job
        return await monitor(c, job.namespace, job.id, eval_id, int(resp.get("version", 0)), args.timeout)


async def monitor(c: RpcClient, ns: str, job_id: str, eval_id: str, version: int, timeout: float) -> int:
    """Follow an evaluation, then its job's allocations, until they run or fail (like Nomad)."""
    deadline = time.monotonic() + timeout
    out.print(f'==> {when(time.time())}: Monitoring evaluation "{short(eval_id)}"')
    index, status, seen = 0, "", set()
    ev: dict[str, Any] = {}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ShoalError(f"timed out after {timeout:g}s waiting for evaluation {short(eval_id)}")
        r = await c.call("Eval.Get", {"eval_id": eval_id, "namespace": ns, "min_index": index,
                                      "wait": min(10.0, remaining)}, timeout=30)
        index, ev = r["index"], r["eval"]
        if not status:
            out.print(f'    Evaluation triggered by job "{job_id}"')
        for a in r["allocations"]:
            if a["id"] not in seen:
                seen.add(a["id"])
                out.print(f'    Allocation "{short(a["id"])}" created: node "{short(a["node_id"])}", group "{a["task_group"]}"')
        if ev["status"] != status:
            if status:
                out.print(f'    Evaluation status changed: "{status}" -> "{ev["status"]}"')
            status = ev["status"]
        if status in EVAL_DONE:
            break
    out.print(f'==> {when(time.time())}: Evaluation "{short(eval_id)}" finished with status "{status}"')
    failures = [codec.from_plain(PlacementFailure, f) for f in (ev.get("failed_tg_allocs") or {}).values()]
    for f in failures:
        out.print("==> Failed to place all allocations:", markup=False)
        for line in f.explain():
            out.print(f"    {line}", markup=False)
    if status != "complete":
        raise ShoalError(f"evaluation {short(eval_id)} {status}: {ev.get('status_description') or 'see shoal job status'}")
    if failures and not seen:
        return 1  # nothing placed: the explanation above says why; a blocked evaluation retries on new capacity
    code = await _follow_allocs(c, ns, job_id, version, deadline)
    return 1 if failures else code


async def _follow_allocs(c: RpcClient, ns: str, job_id: str, version: int, deadline: float) -> int:
    index, states = 0, {}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ShoalError(f"timed out waiting for allocations to start; see `shoal job status -namespace {ns} {job_id}`")
        r = await c.call("Job.Get", {"job_id": job_id, "namespace": ns, "min_index": index,
                                     "wait": min(10.0, remaining)}, timeout=30)
        index = r["index"]
        job_type = r["job"]["type"]
        allocs = [a for a in r["allocations"] if a["desired_status"] == "run" and a["job_version"] == version]
        for a in allocs:
            if states.get(a["id"]) != a["client_status"]:
                states[a["id"]] = a["client_status"]
                out.print(f'    Allocation "{short(a["id"])}" status "{a["client_status"]}" ({a["name"]})', markup=False)
        failed = [a for a in allocs if a["client_status"] in ("failed", "lost")]
        if failed:
            out.print(f"==> {len(failed)} allocation(s) failed; see `shoal alloc status -namespace {ns} "
                      f"{short(failed[0]['id'])}`", markup=False)
            return 1
        ok = ("running", "complete") if job_type in ("batch", "sysbatch") else ("running",)
        if allocs and all(a["client_status"] in ok for a in allocs):
            out.print(f"==> {when(time.time())}: {len(allocs)} allocation(s) of job \"{job_id}\" {'/'.join(ok)}", markup=False)
            return 0
        if not allocs and r["status"] == "dead":
            return 0


# --- plan ---
async def cmd_plan(args: argparse.Namespace) -> int:
    loaded = _load_for_submit(args, "plan")
    async with client(args) as c:
        r = await c.call("Job.Plan", {"job": codec.to_plain(loaded.job), "source": str(args.file)})
    if args.json:
        print_json({k: v for k, v in r.items() if k != "index"})
        return 1 if r["changes"] else 0
    diff = r["diff"]
    head = "+" if diff and all(d["kind"] == "added" for d in diff) and not r["job_modify_index"] else "~" if diff else " "
    out.print(f'{head} Job: "{r["job_id"]}"', markup=False)
    if not r["job_modify_index"]:
        pass  # a new job: every field is new; the groups below say what gets created
    else:
        for d in diff:
            sign = {"added": "+", "deleted": "-", "edited": "~"}[d["kind"]]
            shown = d["new"] if d["kind"] == "added" else d["old"] if d["kind"] == "deleted" else f'{d["old"]!r} => {d["new"]!r}'
            out.print(f"  {sign} {d['path']}: {shown}", markup=False)
    for g, counts in r["groups"].items():
        parts = [f"{n} {k}" for k, n in counts.items() if n]
        out.print(f'  Task Group: "{g}" ({", ".join(parts) or "no change"})', markup=False)
    out.print("\nScheduler dry-run:")
    if not r["failed_tg_allocs"]:
        out.print("- All tasks successfully allocated.")
    for f in r["failed_tg_allocs"].values():
        out.print("- WARNING: Failed to place all allocations.", markup=False)
        for line in codec.from_plain(PlacementFailure, f).explain():
            out.print(f"  {line}", markup=False)
    out.print(f"\nJob Modify Index: {r['job_modify_index']}")
    out.print(f"To submit the job with version verification run:\n\nshoal job run {args.file}", markup=False)
    return 1 if r["changes"] else 0


# --- status ---
async def cmd_status(args: argparse.Namespace) -> int:
    ns = namespace(args)
    async with client(args) as c:
        if not args.job:
            r = await c.call("Job.List", {"namespace": ns, "stale": args.stale})
            if args.json:
                print_json(r["jobs"])
                return 0
            if not r["jobs"]:
                out.print("No running jobs")
                return 0
            every = across_namespaces(args)  # Nomad's list shows a Namespace column across namespaces
            table(
                ["ID", *(["Namespace"] if every else []), "Type", "Priority", "Status", "Submit Date"],
                [(j["id"], *([j["namespace"]] if every else []), j["type"], j["priority"], j["status"],
                  when(j["submit_time"])) for j in r["jobs"]],
            )
            return 0
        r = await c.call("Job.Get", {"job_id": args.job, "namespace": ns, "stale": args.stale})
    if args.json:
        print_json({k: v for k, v in r.items() if k != "index"})
        return 0
    render_job(r)
    return 0


def render_job(r: dict[str, Any]) -> None:
    j = r["job"]
    fields(
        [
            ("ID", j["id"]),
            ("Name", j["name"] or j["id"]),
            ("Submit Date", when(j["submit_time"])),
            ("Type", j["type"]),
            ("Priority", j["priority"]),
            ("Datacenters", ",".join(j["datacenters"])),
            ("Namespace", j["namespace"]),
            ("Status", r["status"]),
            ("Version", j["version"]),
        ]
    )
    out.print("\n[bold]Summary[/]")
    cols = ["pending", "running", "failed", "complete", "lost"]
    table(
        ["Task Group", "Starting", "Running", "Failed", "Complete", "Lost"],
        [(g, *(counts.get(k, 0) for k in cols)) for g, counts in r["summary"].items()],
    )
    evals = r.get("evaluations") or []
    latest = evals[0] if evals else None
    if latest and latest.get("failed_tg_allocs"):
        out.print("\n[bold]Placement Failure[/]")
        for f in latest["failed_tg_allocs"].values():
            for line in codec.from_plain(PlacementFailure, f).explain():
                out.print(line, markup=False)
    out.print("\n[bold]Allocations[/]")
    allocs = r["allocations"]
    if not allocs:
        out.print("No allocations placed")
        return
    table(
        ["ID", "Node ID", "Task Group", "Version", "Desired", "Status", "Created", "Modified"],
        [
            (short(a["id"]), short(a["node_id"]), a["task_group"], a["job_version"], a["desired_status"],
             a["client_status"], ago(a["create_time"]), ago(a["modify_time"]))
            for a in allocs
        ],
    )


# --- stop ---
async def cmd_stop(args: argparse.Namespace) -> int:
    async with client(args) as c:
        r = await c.call("Job.Deregister", {"job_id": args.job, "namespace": namespace(args), "purge": args.purge})
        eval_id, ns, job_id = r["eval_id"], r["namespace"], r["job_id"]
        if args.detach:
            out.print(f"Evaluation ID: {eval_id}")
            return 0
        deadline = time.monotonic() + args.timeout
        out.print(f'==> {when(time.time())}: Monitoring evaluation "{short(eval_id)}"')
        index = 0
        while True:
            ev = await c.call("Eval.Get", {"eval_id": eval_id, "namespace": ns, "min_index": index, "wait": 10.0},
                              timeout=30)
            index = ev["index"]
            if ev["eval"]["status"] in EVAL_DONE:
                break
            if time.monotonic() > deadline:
                raise ShoalError(f"timed out waiting for evaluation {short(eval_id)}")
        out.print(f'==> {when(time.time())}: Evaluation "{short(eval_id)}" finished with status "{ev["eval"]["status"]}"')
        # Wait until every allocation of the job has stopped on its node.
        index = 0
        while time.monotonic() < deadline:
            r = await c.call("Alloc.List", {"job_id": job_id, "namespace": ns, "min_index": index, "wait": 10.0},
                             timeout=30)
            index = r["index"]
            live = [a for a in r["allocations"] if a["client_status"] not in ALLOC_DONE]
            if not live:
                out.print(f"==> Job {job_id!r} stopped", markup=False)
                return 0
        raise ShoalError("timed out waiting for the job's allocations to stop")
