"""How long a step's own work takes, told to the runner; and a quick exit for a step process that succeeded.

A pipeline step is a process (kfp.local here, a pod on a cluster). Its wall time is process start, the KFP executor,
importing the step's module, the step's own work (the library function, including the libraries only it needs) and
the interpreter's teardown. The step function reports its own work as one line on stdout starting with
``STEP_TIME_PREFIX``; ``harmguard run`` reads it from the step's log and puts wall, work and overhead (wall minus
work) of every step in its summary.

Teardown: once the executor has written its outputs, a step that imported Great Expectations, MLflow or matplotlib
spends seconds freeing millions of objects nobody reads again. A step that succeeded inside the KFP executor
therefore ends its process with ``os._exit(0)`` after every other exit handler ran and the standard streams are
flushed. A step that raised, or a process that is not the KFP executor (tests, the CLI), exits normally, and so
does a non-zero ``sys.exit`` after the step. Not covered: ``raise SystemExit(n)`` after the step (the exit status is
not visible to an exit handler), which nothing in the executor does today.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

STEP_TIME_PREFIX = "HGSTEPTIME "
KFP_EXECUTOR = "kfp.dsl.executor_main"

F = TypeVar("F", bound=Callable[..., Any])

_armed = False


def _in_kfp_executor() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == KFP_EXECUTOR


def _exit_without_teardown() -> None:
    # Runs last among the exit handlers (registered at import, before the libraries' own). An uncaught exception
    # after the step (the executor failing to write its outputs) sets sys.last_value: then exit the normal way.
    if not _armed or getattr(sys, "last_value", None) is not None:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            return  # a stream we cannot flush: let the interpreter report it
    os._exit(0)


atexit.register(_exit_without_teardown)


def arm_fast_exit(*, force: bool = False) -> bool:
    """Skip interpreter teardown when this process exits without an error; only in the KFP executor (or ``force``).

    Returns:
        Whether the quick exit is armed.
    """
    global _armed
    if not _armed and (force or _in_kfp_executor()):
        _armed = True
        sys.exit = _exit_disarming  # a non-zero sys.exit after the step must keep its status, not become 0
    return _armed


_sys_exit = sys.exit


def _exit_disarming(status: str | int | None = None) -> NoReturn:
    global _armed
    if status not in (None, 0):
        _armed = False
    _sys_exit(status)


def report_work(step: str, seconds: float, *, ok: bool) -> None:
    """Print the step's own-work line for the runner (stdout, flushed: the runner reads it as it happens)."""
    doc = {"step": step, "work_s": round(seconds, 3), "ok": ok}
    sys.stdout.write(STEP_TIME_PREFIX + json.dumps(doc) + "\n")
    sys.stdout.flush()


def timed_step(step: str) -> Callable[[F], F]:
    """Decorate a step function: report its own work (success or not); on success, arm the quick exit."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            except BaseException:
                report_work(step, time.perf_counter() - t0, ok=False)
                raise
            report_work(step, time.perf_counter() - t0, ok=True)
            arm_fast_exit()
            return out

        return run  # type: ignore[return-value]

    return wrap
