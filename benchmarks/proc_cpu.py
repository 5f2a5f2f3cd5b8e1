"""Where the CPU goes: every process's CPU time, read from /proc and grouped by what the process is.

Shared by the benchmarks that explain a ratio (``train_throughput.py``: the training worker against Ray's own
processes; ``serve_throughput.py``: proxy, ingress, model replica and clients per request). Linux only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")

Classify = Callable[[int, str, str], str]  # (pid, comm, cmdline) -> group


def ray_group(pid: int, comm: str, cmd: str) -> str:
    """Ray's own processes (raylet, GCS, agents, workers) as `ray system`, this process as `driver`."""
    if pid == os.getpid():
        return "driver"
    if comm in {"raylet", "gcs_server"} or cmd.startswith("ray::") or "/ray/" in cmd:
        return "ray system"
    return "other"


def cpu_by_process(classify: Classify = ray_group) -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far) for every process this machine shows."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        out[int(entry)] = (classify(int(entry), comm, cmd), seconds)
    return out


def cpu_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group between two readings (a process started in between counts from 0)."""
    used: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        used[group] = used.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return used


@contextmanager
def cpu_profile(window: dict[str, float], classify: Classify = ray_group, settle_s: float = 10.0) -> Iterator[None]:
    """Fill ``window`` with CPU cores used per process group while the block runs (after ``settle_s``).

    Read every second, so a process that exits inside the block (a training worker) still counts up to the last
    reading that saw it, under the group its newest title names.
    """
    stop = threading.Event()
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = []

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append((time.monotonic(), cpu_by_process(classify)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        settled = [s for s in samples if s[0] >= samples[0][0] + settle_s] if samples else []
        if len(settled) >= 2:
            t0, t1 = settled[0][0], settled[-1][0]
            seen: dict[int, tuple[str, float]] = {}
            for _, procs in settled:
                seen.update(procs)
            for group, seconds in cpu_between(settled[0][1], seen).items():
                window[group] = window.get(group, 0.0) + seconds / (t1 - t0)
