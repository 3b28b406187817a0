"""Time from `shoal job run` to N busybox containers running on one dev agent, and, in the same
run, a plain loop of N sequential `runc run -d` of the same busybox rootfs (no orchestrator, no
overlayfs, no shoal): the floor any orchestrator on this machine pays.

Prints a human summary, then one JSON line of figures (``shoal_start_seconds``,
``runc_loop_seconds``, ``ratio`` = shoal / loop). Needs root, runc and busybox-static.
Usage: python bench/e2e_start.py [--count 100] [--no-runc-loop]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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


def runc_loop(rootfs: Path, work: Path, count: int) -> float:
    """Seconds for ``count`` sequential ``runc run -d`` of ``rootfs`` running sleep (all cleaned up after)."""
    spec_dir = _mkdir(work / "spec")
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True, capture_output=True)
    base = json.loads((spec_dir / "config.json").read_text())
    base["root"] = {"path": str(rootfs.resolve()), "readonly": True}
    base["process"]["terminal"] = False
    base["process"]["args"] = ["/bin/sleep", "3600"]
    group = f"shoal-bench-raw-{os.getpid()}"
    ids = [f"{group}-{i}" for i in range(count)]
    bundles = []
    for cid in ids:  # bundles prepared beforehand: only the runc calls are timed
        b = _mkdir(work / cid)
        cfg = dict(base, hostname="raw")
        cfg["linux"] = dict(base["linux"], cgroupsPath=f"/{group}/{cid}")
        (b / "config.json").write_text(json.dumps(cfg))
        bundles.append(b)
    started: list[str] = []
    log = open(work / "runc.out", "wb")  # the containers inherit it: never a pipe we would wait on
    try:
        t0 = time.monotonic()
        for cid, b in zip(ids, bundles):
            subprocess.run(["runc", "run", "-d", "--bundle", str(b), cid], check=True,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            started.append(cid)
        return time.monotonic() - t0
    finally:
        log.close()
        for cid in started:
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True)
        for parent in Path("/sys/fs/cgroup").glob(f"*/{group}"):
            for d in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [parent]:
                if d.is_dir():
                    try:
                        d.rmdir()
                    except OSError:
                        pass
        shutil.rmtree(work, ignore_errors=True)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--no-runc-loop", action="store_true", help="time shoal only")
    ap.add_argument("--agent-log", type=Path, help="keep the dev agent's log here")
    args = ap.parse_args()
    from shoal.agent.imageimport import import_rootfs
    from shoal.agent.imagestore import ImageStore

    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        rootfs = build_busybox_rootfs(root / "rootfs")
        import_rootfs(ImageStore(root / "images"), rootfs, "busybox:latest")
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
            if args.agent_log:
                shutil.copy(agent.root / "agent.log", args.agent_log)
        loop = None if args.no_runc_loop else runc_loop(rootfs, root / "raw", args.count)
    print(f"{running} containers running {elapsed:.2f}s after `shoal job run`; stopped in {stop_elapsed:.2f}s")
    if loop is not None:
        print(f"{args.count} sequential `runc run -d` of the same rootfs: {loop:.2f}s; "
              f"shoal / loop = {elapsed / loop:.2f}")
    print(json.dumps({
        "containers": running,
        "shoal_start_seconds": round(elapsed, 3),
        "shoal_stop_seconds": round(stop_elapsed, 3),
        "containers_per_s": round(running / elapsed, 2) if elapsed else None,
        "runc_loop_seconds": round(loop, 3) if loop is not None else None,
        "ratio": round(elapsed / loop, 3) if loop else None,
    }))
    return 0 if running == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
