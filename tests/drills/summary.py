"""Summary table of the drills' figures: ``python tests/drills/summary.py RESULTS.jsonl``.

RESULTS.jsonl holds one JSON line per drill run (written by the drills when
$SHOAL_DRILL_RESULTS is set; ``make drills`` sets it and runs the suite three times).
Prints every numeric figure per run, the median, and the target where there is one;
exits 1 when a median misses its target or a must-be-zero figure is not zero.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

# (drill, figure) -> (comparison, bound); medians for <=, every run for ==
TARGETS = {
    ("1-leader-kill", "new_leader_s"): ("<=", 2.0),
    ("1-leader-kill", "lost"): ("==", 0),
    ("2-follower-catch-up", "lost"): ("==", 0),
    ("3-agent-host-kill", "replacement_s"): ("<=", 10.0),
    ("3-agent-host-kill", "duplicates"): ("==", 0),
    ("4-agent-host-partition", "duplicates"): ("==", 0),
    ("5-quorum-loss", "refused_s"): ("<=", 10.0),
    ("5-quorum-loss", "lost"): ("==", 0),
    ("6-full-restart", "restarted"): ("==", 0),
    ("6-full-restart", "duplicates"): ("==", 0),
    ("7-rolling-restart", "lost"): ("==", 0),
    ("7-rolling-restart", "errors"): ("==", 0),
    ("1-leader-kill", "replicas_disagreeing"): ("==", 0),
    ("2-follower-catch-up", "replicas_disagreeing"): ("==", 0),
    ("7-rolling-restart", "replicas_disagreeing"): ("==", 0),
}


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{v:.1f}"
    return str(v)


def summarize(lines: list[dict]) -> tuple[str, bool]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        runs[line["drill"]].append(line)
    n = max((len(v) for v in runs.values()), default=0)
    header = ["drill", "figure", *[f"run{i + 1}" for i in range(n)], "median", "target", ""]
    rows: list[list[str]] = []
    ok = True
    for drill in sorted(runs):
        results = runs[drill]
        figures = [k for k, v in results[0].items() if k not in ("drill", "run") and isinstance(v, (int, float))
                   and not isinstance(v, bool)]
        for fig in figures:
            values = [r.get(fig) for r in results]
            nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            med = statistics.median(nums) if nums else None
            target = TARGETS.get((drill, fig))
            verdict = ""
            if target is not None and med is not None:
                op, bound = target
                good = med <= bound if op == "<=" else (all(v == bound for v in nums))
                verdict = "ok" if good else "MISSED"
                ok = ok and good
            rows.append([drill, fig, *[_fmt(v) for v in values], *[""] * (n - len(values)), _fmt(med),
                         f"{target[0]} {target[1]}" if target else "", verdict])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = []
    for i, r in enumerate([header, *rows]):
        out.append("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    missing = sorted({d for d in runs if len(runs[d]) < n})
    if missing:
        out.append(f"(fewer runs reported figures for: {', '.join(missing)}: a failed drill reports nothing)")
    return "\n".join(out), ok


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            lines = [json.loads(x) for x in f if x.strip()]
    except FileNotFoundError:
        print(f"no drill results in {argv[1]}", file=sys.stderr)
        return 1
    table, ok = summarize(lines)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
