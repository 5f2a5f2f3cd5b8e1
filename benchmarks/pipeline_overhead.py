"""Per-step overhead of the local training pipeline (#22 item 4): every step's wall time, own work and overhead.

Runs the training pipeline through kfp.local (as `make demo` does: `harmguard run --policy davidson2017`) in a
temporary home, then prints, per step, the wall time (task start to task end in kfp.local's log), the step's own
work (the step function, as the step process reports it) and the overhead (wall minus work: process start, KFP
executor, importing the step module, writing outputs, exiting), with the goal (overhead at most 1.5 s per step,
the whole run under 45 s on a quiet machine). It also times the floor of a step process here: a Python interpreter
that imports the step module and exits, the part of the overhead no step can avoid. The load average is printed at
the start and the end: on shared cores the figures are only comparable at similar load.

Run: `.venv/bin/python benchmarks/pipeline_overhead.py [--policy davidson2017] [--family baseline]` (about a minute
on a quiet 2-core machine; needs the dataset mirror, HARMGUARD_DATA_MIRROR).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from rich.console import Console

from harmguard.runners.local import run_training
from harmguard.settings import load_settings

GOAL_OVERHEAD_S = 1.5
GOAL_RUN_S = 45.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def process_floor(repeats: int = 3) -> float:
    """Median seconds of a fresh interpreter importing the step module (what every step process starts with)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import kfp.dsl.executor_main, harmguard.steps.training"], check=True)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="davidson2017")
    ap.add_argument("--family", default="baseline")
    args = ap.parse_args()
    print(f"start: {load()}")
    floor = process_floor()
    print(f"step process floor (interpreter + kfp executor + step module import): {floor:.2f} s")
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings({**os.environ, "HARMGUARD_HOME": home})
        t0 = time.perf_counter()
        summary = run_training(
            settings, policy=args.policy, family=args.family, console=Console(stderr=True, quiet=True)
        )
        total = time.perf_counter() - t0
    if not summary["ok"]:
        raise SystemExit(f"the run failed: {summary['error']}")
    print(f"\n{'step':<10} {'wall s':>8} {'work s':>8} {'overhead s':>11}")
    for step, t in summary["timing"].items():
        print(f"{step:<10} {t['wall_s']:>8.2f} {t.get('work_s', float('nan')):>8.2f} {t.get('overhead_s', 0):>11.2f}")
    worst = max(t.get("overhead_s") or 0.0 for t in summary["timing"].values())
    print(f"\nrun: {total:.1f} s (goal < {GOAL_RUN_S:.0f} s on a quiet machine); worst step overhead {worst:.2f} s "
          f"(goal <= {GOAL_OVERHEAD_S} s)")  # fmt: skip
    print(f"end: {load()}")
    print(json.dumps({"run_s": round(total, 1), "floor_s": round(floor, 2), "timing": summary["timing"]}))


if __name__ == "__main__":
    main()
