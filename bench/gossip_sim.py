"""Gossip failure detection at full size: the SWIM + Lifeguard core in the deterministic simulation.

The real ``Swim`` objects (agent/gossip/swim.py) on tests/agent/gossip_sim.py's in-process network:
a virtual clock, seeded loss, 0.1-1 ms links, push-pull streams delivered reliably. Three runs:

1. detection: ``--members`` (1,000) join through one seed with ``--loss`` (5%) on every packet,
   converge (every member sees every member alive) and settle (the joins are gossiped out); one
   member is killed; every other member's time to declare it dead (p50, p99, the bound derived
   from the configuration: gossip_sim.detection_bound), the live members anyone declared dead
   over at least 10,000 protocol periods, and the UDP packets each member sends a second.
2. Lifeguard against plain SWIM at the same size, 10% of the members slow (everything they
   receive handled ``--slow-delay`` seconds late), same seed: the dead declarations about live
   members (all of them, and the healthy ones alone) and the suspicions raised.
3. the same comparison at ``--sweep-members`` (100) for several slowdowns, from late answers
   (0.6-1 s, past the probe timeout) to stalls comparable to the suspicion timeout (6-18 s).

The runs go to ``--jobs`` processes (the full-size ones take minutes each). A table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))
import gossip_sim  # noqa: E402

SWEEP = ((0.6, 1.0), (2.0, 6.0), (6.0, 18.0))


def _delay(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.split(","))
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow-fraction", type=float, default=0.1)
    ap.add_argument("--slow-delay", type=_delay, default=(0.6, 1.0), help="seconds, lo,hi")
    ap.add_argument("--sweep-members", type=int, default=100, help="0: no sweep")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    wall = time.monotonic()
    slow = {"slow_fraction": args.slow_fraction, "loss": args.loss, "seed": args.seed}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        comparison = {lg: pool.submit(gossip_sim.run_slow_members, args.members, args.slow_delay, lifeguard=lg, **slow)
                      for lg in (True, False)}
        detection = pool.submit(gossip_sim.run_detection, args.members, loss=args.loss, seed=args.seed)
        sweep: dict[tuple[float, float], dict[bool, Future[gossip_sim.SlowRun]]] = {
            delay: {lg: pool.submit(gossip_sim.run_slow_members, args.sweep_members, delay, lifeguard=lg, **slow)
                    for lg in (True, False)}
            for delay in (SWEEP if args.sweep_members else ())}
        d = detection.result()
        print(f"detection: {d.members} members, {d.loss:.0%} loss, converged in {d.converge_s:.0f} s")
        print(f"  declared dead by all {d.members - 1} others: p50 {d.detect_p50_s:.2f} s, p99 {d.detect_p99_s:.2f} s,"
              f" max {d.detect_max_s:.2f} s (bound {d.bound_s:.1f} s, undetected {d.undetected})")
        print(f"  false positives {d.false_positives} over {d.member_periods} member-periods"
              f" ({d.false_suspicions} suspicions, all refuted); {d.messages_per_member_per_s:.1f} packets"
              f" and {d.updates_per_member_per_s:.1f} messages a member a second")
        print(f"{'members':>8}{'slow delay s':>14}{'protocol':>12}{'false pos.':>12}{'of healthy':>12}"
              f"{'suspicions':>12}{'packets/s':>11}")
        rows = [(args.members, args.slow_delay, comparison)]
        rows += [(args.sweep_members, delay, runs) for delay, runs in sweep.items()]
        for members, delay, runs in rows:
            for lg, run in runs.items():
                r = run.result()
                print(f"{members:>8}{f'{delay[0]:g}-{delay[1]:g}':>14}{'lifeguard' if lg else 'plain SWIM':>12}"
                      f"{r.false_positives + r.false_positives_slow:>12}{r.false_positives:>12}"
                      f"{r.false_suspicions:>12}{r.messages_per_member_per_s:>11.1f}")
    lg, plain = comparison[True].result(), comparison[False].result()
    print(json.dumps({
        "members": d.members, "loss": d.loss, "converge_s": round(d.converge_s, 1),
        "detect_p50_s": round(d.detect_p50_s, 2), "detect_p99_s": round(d.detect_p99_s, 2),
        "detect_bound_s": round(d.bound_s, 1), "false_positives": d.false_positives,
        "member_periods": d.member_periods, "messages_per_member_per_s": round(d.messages_per_member_per_s, 2),
        "slow_fraction": args.slow_fraction, "slow_delay_s": list(args.slow_delay),
        "false_positives_lifeguard": lg.false_positives + lg.false_positives_slow,
        "false_positives_plain_swim": plain.false_positives + plain.false_positives_slow,
        "healthy_false_positives_lifeguard": lg.false_positives,
        "healthy_false_positives_plain_swim": plain.false_positives,
        "false_suspicions_lifeguard": lg.false_suspicions, "false_suspicions_plain_swim": plain.false_suspicions,
        "wall_s": round(time.monotonic() - wall, 1),
    }))


if __name__ == "__main__":
    main()
