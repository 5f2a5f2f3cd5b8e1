"""The kfp.local control-flow fix: compiled CEL conditions evaluated against task outputs and DAG inputs."""

import pytest
from kfp.local import io

from harmguard.runners.kfp_local import cel_to_python, evaluate_condition


@pytest.fixture
def store():
    s = io.IOStore()
    s.put_task_output("gate", "blessed", False)
    s.put_task_output("my-step", "Output", "heads")
    s.put_parent_input("pipelinechannel--validate-passed", True)
    s.put_parent_input("threshold", 3)
    return s


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("inputs.parameter_values['pipelinechannel--gate-blessed'] == true", False),
        ("inputs.parameter_values['pipelinechannel--gate-blessed'] == false", True),
        ("inputs.parameter_values['pipelinechannel--validate-passed'] == true", True),
        ("!(inputs.parameter_values['pipelinechannel--validate-passed'] == true)", False),
        ("inputs.parameter_values['pipelinechannel--my-step-Output'] == 'heads'", True),
        ("inputs.parameter_values['pipelinechannel--my-step-Output'] != 'heads'", False),
        ("int(inputs.parameter_values['pipelinechannel--threshold']) > 2 && true", True),
        ("inputs.parameter_values['pipelinechannel--gate-blessed'] == true || "
         "inputs.parameter_values['pipelinechannel--my-step-Output'] == 'a!b'", False),
        ("inputs.parameter_values['pipelinechannel--missing-x'] == true", False),
    ],
)  # fmt: skip
def test_conditions(store, condition, expected):
    assert evaluate_condition(condition, store) is expected


def test_operators_inside_strings_are_kept(store):
    assert cel_to_python("inputs.parameter_values['pipelinechannel--my-step-Output'] == 'a && !b'", store) == (
        "'heads' == 'a && !b'"
    )


def test_the_fix_holds_only_inside_its_block():
    from kfp.local.orchestrator import dag_orchestrator, enhanced_dag_orchestrator

    from harmguard.runners.kfp_local import control_flow_fix

    original = (enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition, dag_orchestrator.run_dag)
    with control_flow_fix():
        assert enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition is evaluate_condition
        assert dag_orchestrator.run_dag is enhanced_dag_orchestrator.run_enhanced_dag
    assert (enhanced_dag_orchestrator.ConditionEvaluator.evaluate_condition, dag_orchestrator.run_dag) == original
    with pytest.raises(RuntimeError), control_flow_fix():
        raise RuntimeError("a failed run")  # the originals come back on the error path too
    assert dag_orchestrator.run_dag is original[1]
