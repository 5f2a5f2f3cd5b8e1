"""Make `kfp.local` honour the control flow the KFP compiler emits (``dsl.If`` / ``dsl.Else`` on task outputs).

kfp 2.17's local orchestrator has two gaps that would run every branch or none (checked against kfp 2.17.3):

1. It picks the control-flow-aware orchestrator only when the *root* DAG has a conditional task. A ``dsl.If`` /
   ``dsl.Else`` pair compiles to a ``condition-branches`` group whose conditions sit one level down, so the plain
   orchestrator runs both branches and ignores the conditions.
2. Its condition evaluator resolves channel names by guessing (``<task>-Output`` only) and then ``eval``s the
   compiled CEL expression as Python, where ``inputs.parameter_values['…']``, ``true``, ``!`` and ``&&`` are
   syntax errors, so every condition is False.

``control_flow_fix()`` routes, for the duration of one local run, the plain orchestrator to the control-flow-aware one
and replaces the evaluator with one that resolves channels from the DAG's inputs and task outputs and translates the CEL
subset the compiler emits (comparisons, ``!``, ``&&``, ``||``, ``int()``/``double()`` casts, string/bool/number
literals). On a cluster the KFP backend evaluates the same YAML; nothing here changes what is compiled.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

_CHANNEL = re.compile(r"inputs\.parameter_values\['([^']+)'\]")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def resolve_channel(name: str, io_store: Any) -> Any:
    """Value of a compiled channel: a DAG input (``pipelinechannel--x``) or a task output (``<task>-<output>``)."""
    bare = name.removeprefix("pipelinechannel--")
    for key in (name, bare):
        try:
            return io_store.get_parent_input(key)
        except ValueError:
            pass
    task, _, output = bare.rpartition("-")  # output names are identifiers (no '-'); task names may contain '-'
    if task:
        return io_store.get_task_output(task, output)
    raise ValueError(f"cannot resolve pipeline channel {name!r}")


def cel_to_python(condition: str, io_store: Any) -> str:
    """Translate a compiled KFP condition (a CEL subset) into a Python expression with values substituted."""
    values: list[Any] = []

    def sub_channel(m: re.Match[str]) -> str:
        values.append(resolve_channel(m.group(1), io_store))
        return f"__v{len(values) - 1}"

    expr = _CHANNEL.sub(sub_channel, condition)
    # Translate operators outside string literals only.
    parts, last = [], 0
    for m in _STRING.finditer(expr):
        parts.append(_translate_ops(expr[last : m.start()]))
        parts.append(m.group(0))
        last = m.end()
    parts.append(_translate_ops(expr[last:]))
    py = "".join(parts)
    for i, v in enumerate(values):
        py = py.replace(f"__v{i}", repr(v))
    return py


def _translate_ops(s: str) -> str:
    s = s.replace("&&", " and ").replace("||", " or ")
    s = re.sub(r"!(?!=)", " not ", s)
    s = re.sub(r"\btrue\b", "True", s)
    s = re.sub(r"\bfalse\b", "False", s)
    s = re.sub(r"\bnull\b", "None", s)
    return re.sub(r"\bdouble\(", "float(", s)


def evaluate_condition(condition: str, io_store: Any) -> bool:
    """Evaluate a compiled condition against the DAG's IO store."""
    if not condition or not condition.strip():
        return True
    try:
        py = cel_to_python(condition, io_store)
        allowed = {"__builtins__": {}, "int": int, "float": float, "str": str, "bool": bool}
        return bool(eval(py, allowed, {}))  # noqa: S307 - a compiler-generated expression with literal values only
    except Exception as e:  # a condition that cannot be evaluated must not silently run its branch
        logging.error("condition %r could not be evaluated: %s", condition, e)
        return False


@contextlib.contextmanager
def control_flow_fix() -> Iterator[None]:
    """Apply both fixes while the block runs (one local pipeline run), then put kfp's own functions back."""
    from kfp.local.orchestrator import dag_orchestrator, enhanced_dag_orchestrator  # lazy: kfp

    evaluator = enhanced_dag_orchestrator.ConditionEvaluator
    saved = (evaluator.__dict__["evaluate_condition"], dag_orchestrator.run_dag)
    evaluator.evaluate_condition = staticmethod(evaluate_condition)
    dag_orchestrator.run_dag = enhanced_dag_orchestrator.run_enhanced_dag
    try:
        yield
    finally:
        evaluator.evaluate_condition, dag_orchestrator.run_dag = saved
