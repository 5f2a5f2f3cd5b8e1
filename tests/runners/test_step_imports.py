"""Pipeline step overhead (#22 item 4): what a step process imports, how it reports its work, how it exits.

Each test runs a fresh interpreter (``python -c``): imports already made by the test process would hide the ones a
step process pays for.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rich.console import Console

from harmguard.runners.local import _ProgressLog, step_times
from harmguard.steps.timing import STEP_TIME_PREFIX

HEAVY = ("great_expectations", "mlflow", "matplotlib", "sklearn", "torch", "ray")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_step_module_imports_no_heavy_library():
    # every KFP component starts with `from harmguard.steps.training import <its step>`
    assert _loaded_after("import harmguard.steps.training") == set()


def test_ingest_step_imports_no_validation_tracking_or_plotting():
    # what the ingest step itself imports to do its work: the light step of the pipeline
    loaded = _loaded_after(
        "import harmguard.steps.training\n"
        "from harmguard.data.snapshot import assemble_snapshot, write_snapshot\n"
        "from harmguard.data.sources import load_sources\n"
        "from harmguard.policy import ColumnMap, load_policy, policy_digest"
    )
    assert loaded.isdisjoint({"great_expectations", "mlflow", "matplotlib"}), loaded


def test_validation_module_defers_great_expectations_and_matplotlib():
    # the validate step imports these two when it runs the suite and draws its one plot, not at module import
    loaded = _loaded_after("import harmguard.data.validation, harmguard.reports.render")
    assert loaded.isdisjoint({"great_expectations", "mlflow", "matplotlib"}), loaded


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_timed_step_reports_work_and_a_successful_step_exits_zero_with_output_flushed():
    done = _run(
        "import sys\n"
        "from harmguard.steps.timing import arm_fast_exit, timed_step\n"
        "@timed_step('ingest')\n"
        "def work():\n"
        "    return 7\n"
        "assert work() == 7\n"
        "assert arm_fast_exit(force=True)\n"
        "sys.stdout.write('unflushed tail')\n"  # a buffered write: the quick exit must flush it
    )
    assert done.returncode == 0, done.stderr
    first, tail = done.stdout.split("\n")
    assert first.startswith(STEP_TIME_PREFIX)
    doc = json.loads(first.removeprefix(STEP_TIME_PREFIX))
    assert doc["step"] == "ingest" and doc["ok"] is True and doc["work_s"] >= 0
    assert tail == "unflushed tail"


def test_quick_exit_never_hides_a_failure_after_the_step():
    # the executor failing to write its outputs after a successful step must still fail the process
    done = _run(
        "from harmguard.steps.timing import arm_fast_exit\n"
        "arm_fast_exit(force=True)\n"
        "raise OSError('cannot write executor output')\n"
    )
    assert done.returncode == 1
    assert "cannot write executor output" in done.stderr


def test_quick_exit_keeps_a_non_zero_sys_exit_after_the_step():
    done = _run(
        "import sys\nfrom harmguard.steps.timing import arm_fast_exit\narm_fast_exit(force=True)\nsys.exit(3)\n"
    )
    assert done.returncode == 3


def test_failed_step_reports_work_and_is_not_armed_outside_kfp():
    done = _run(
        "from harmguard.steps.timing import timed_step, arm_fast_exit\n"
        "@timed_step('validate')\n"
        "def work():\n"
        "    raise ValueError('bad data')\n"
        "try:\n"
        "    work()\n"
        "except ValueError:\n"
        "    pass\n"
        "assert arm_fast_exit() is False\n"  # not the KFP executor: a plain process exits the normal way
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().removeprefix(STEP_TIME_PREFIX))
    assert doc["step"] == "validate" and doc["ok"] is False


def test_runner_puts_wall_work_and_overhead_of_each_step_in_its_timing(tmp_path):
    sink = _ProgressLog(open(tmp_path / "log", "w"), Console(file=open(tmp_path / "console", "w")))  # noqa: SIM115
    sink.write("12:00:00.000 - INFO - Executing task \x1b[96m'validate'\x1b[0m\n")
    sink.write('    HGSTEPTIME {"step": "validate", "work_s": 0.0, "ok": true}\n')
    sink.write("12:00:01.000 - INFO - Task \x1b[96m'validate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n")
    sink.write("12:00:01.000 - INFO - Executing task 'fail-run'\n")
    sink.write("12:00:02.000 - INFO - Task 'fail-run' finished with status FAILURE\n")
    t = sink.timing
    assert set(t) == {"validate", "fail-run"}
    assert t["validate"]["work_s"] == 0.0 and t["validate"]["overhead_s"] == t["validate"]["wall_s"]
    assert t["fail-run"] == {"wall_s": t["fail-run"]["wall_s"]}  # no work line: only the wall time


@pytest.mark.parametrize(("wall", "work", "overhead"), [(10.0, 8.5, 1.5), (1.0, 1.2, 0.0)])
def test_step_times_overhead_is_wall_minus_work(wall, work, overhead):
    assert step_times(wall, work) == {"wall_s": wall, "work_s": work, "overhead_s": overhead}
