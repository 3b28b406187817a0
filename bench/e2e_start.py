"""Time from `shoal job run` to N busybox containers running on one dev agent.

Prints a human summary, then one JSON line of figures. Needs root, runc and busybox-static.
Usage: python bench/e2e_start.py [--count 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.cluster import DevAgent, build_busybox_rootfs  # noqa: E402

JOB = """
job "bench" {{
  group "g" {{
    count = {count}
    task "sleep" {{
      driver = "container"
      config {{
        image   = "busybox:latest"
        command = "/bin/sleep"
        args    = ["3600"]
      }}
      resources {{
        cpu    = 10
        memory = 16
      }}
    }}
  }}
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    from shoal.agent.images import ImageStore

    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        rootfs = build_busybox_rootfs(root / "rootfs")
        ImageStore(root / "images").import_rootfs(rootfs, "busybox:latest")
        agent = DevAgent(root=root / "agent", image_dir=root / "images")
        try:
            agent.start()
            job = root / "bench.hcl"
            job.write_text(JOB.format(count=args.count))
            t0 = time.monotonic()
            r = agent.cli("job", "run", str(job), timeout=900)
            elapsed = time.monotonic() - t0
            if r.code != 0:
                print(r.out, r.err, file=sys.stderr)
                return 1
            status = agent.cli("job", "status", "bench", "--json").json()
            running = sum(1 for a in status["allocations"] if a["client_status"] == "running")
            t1 = time.monotonic()
            agent.cli("job", "stop", "bench", timeout=900)
            stop_elapsed = time.monotonic() - t1
        finally:
            agent.stop()
    print(f"{running} containers running {elapsed:.2f}s after `shoal job run`; stopped in {stop_elapsed:.2f}s")
    print(json.dumps({
        "containers": running,
        "shoal_start_seconds": round(elapsed, 3),
        "shoal_stop_seconds": round(stop_elapsed, 3),
        "containers_per_s": round(running / elapsed, 2) if elapsed else None,
    }))
    return 0 if running == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
