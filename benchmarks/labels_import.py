"""Label intake speed: import the 8 weeks of the moderation stream (about 11k events), then `labels status`.

Targets (issue #17): all 8 imports under 10 s together, status under 2 s, on these 2 cores. Measured in process
(the library calls the CLI makes), into a fresh local home; Python and pandas start-up are reported apart.

    HARMGUARD_DATA_MIRROR=../shared/datasets .venv/bin/python benchmarks/labels_import.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

t0 = time.perf_counter()
from harmguard.labels.status import labels_status  # noqa: E402
from harmguard.labels.store import import_events  # noqa: E402
from harmguard.policy import load_policy  # noqa: E402
from harmguard.storage import LocalStore  # noqa: E402

IMPORTS_S = time.perf_counter() - t0


def main() -> None:
    mirror = Path(os.environ.get("HARMGUARD_DATA_MIRROR") or "../shared/datasets") / "stormfront_moderation"
    policy = load_policy("davidson2017")
    with tempfile.TemporaryDirectory() as home:
        store = LocalStore(home)
        t = time.perf_counter()
        counts = []
        for week in sorted(mirror.glob("week-*.jsonl")):
            result = import_events(store, policy.name, policy.categories, str(week), by="benchmark")
            counts.append((week.name, result.new, result.duplicates))
        import_s = time.perf_counter() - t
        t = time.perf_counter()
        status = labels_status(store, policy.name, policy.categories)
        status_s = time.perf_counter() - t
    print("| week | new | redelivered |\n|---|---|---|")
    for name, new, dup in counts:
        print(f"| {name} | {new} | {dup} |")
    print(f"\nmodule imports (pandas, pyarrow): {IMPORTS_S:.2f} s")
    print(f"8 imports: {import_s:.2f} s for {status['events']} events ({status['events'] / import_s:.0f} events/s); "
          f"target < 10 s: {'met' if import_s < 10 else 'NOT met'}")  # fmt: skip
    print(f"labels status: {status_s:.2f} s; target < 2 s: {'met' if status_s < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
