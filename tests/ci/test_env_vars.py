"""Every environment variable harmguard's code reads is in the README's table of variables.

The source is read, not run: an environment lookup is ``<env>.get(NAME)``, ``<env>[NAME]``, ``<env>.setdefault(NAME)``,
``getenv(NAME)``, a helper given the environment and a NAME (``_flag(env, "ARGO_SECURE", True)``) or a CLI option's
``envvar=NAME``, where ``<env>`` is ``os.environ``, ``environ`` or ``env`` and NAME is a string, a module constant
(``BASE_URL_ENV``) or the loop variable over a constant tuple (``for var, source in PLATFORM_USER_VARS``). Every
``HARMGUARD_*`` string counts as well: harmguard's own variables, however they are looked up.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "harmguard"
VARIABLE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
ENVIRONMENTS = {"os.environ", "environ", "env"}
LOOKUPS = {"get", "setdefault", "pop"}


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _constants(trees: list[ast.Module]) -> dict[str, list[str]]:
    """Module-level ``NAME = "..."`` or tuples of strings, by name, across the package."""
    found: dict[str, list[str]] = {}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, ast.Constant | ast.Tuple):
                    found.setdefault(node.targets[0].id, []).extend(_strings(node.value))
    return found


def is_env(node: ast.AST) -> bool:
    return ast.unparse(node) in ENVIRONMENTS


def _names(arg: ast.AST, loops: dict[str, list[str]], constants: dict[str, list[str]]) -> list[str]:
    """The variable names an argument stands for: a string, a loop variable over a constant, a constant."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.Name):
        return loops.get(arg.id) or constants.get(arg.id, [])
    return []


def variables_read() -> dict[str, set[str]]:
    """NAME -> the files that read it."""
    files = [p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts]
    trees = {p: ast.parse(p.read_text(), str(p)) for p in files}
    constants = _constants(list(trees.values()))
    read: dict[str, set[str]] = {}

    for path, tree in trees.items():
        loops: dict[str, list[str]] = {}  # loop variable -> the strings of the constant it runs over
        for node in ast.walk(tree):
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Name) and node.iter.id in constants:
                for target in ast.walk(node.target):
                    if isinstance(target, ast.Name):
                        loops[target.id] = constants[node.iter.id]

        for node in ast.walk(tree):
            keys: list[ast.AST] = []
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in LOOKUPS and is_env(func.value) and node.args:
                    keys.append(node.args[0])
                elif ast.unparse(func).endswith("getenv") and node.args:
                    keys.append(node.args[0])
                elif any(is_env(a) for a in node.args):
                    keys.extend(a for a in node.args if not is_env(a))
                keys.extend(k.value for k in node.keywords if k.arg == "envvar")
            elif isinstance(node, ast.Subscript) and is_env(node.value):
                keys.append(node.slice)
            for key in keys:
                for name in _names(key, loops, constants):
                    if VARIABLE.fullmatch(name):
                        read.setdefault(name, set()).add(str(path.relative_to(SRC)))
        for name in _strings(tree):
            if re.fullmatch(r"HARMGUARD_[A-Z0-9_]+", name):
                read.setdefault(name, set()).add(str(path.relative_to(SRC)))
    return read


def readme_table() -> set[str]:
    """The variables the README's table under "## Places" names (in backticks, on its rows)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Places\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row) if VARIABLE.fullmatch(name)}


def test_the_scan_finds_lookups_of_each_kind():
    read = variables_read()
    # one of each form above, so a scan that stopped seeing a form fails here rather than passing quietly
    for name in ("HARMGUARD_HOME", "RAY_ADDRESS", "KF_PIPELINES_ENDPOINT", "ARGO_SECURE", "HARMGUARD_DATASET_BASE_URL",
                 "KUBEFLOW_USERID", "HARMGUARD_GIT_COMMIT", "STORAGE_EMULATOR_HOST"):  # fmt: skip
        assert name in read, name


def test_every_variable_the_code_reads_is_in_the_readme_table():
    read = variables_read()
    documented = readme_table()
    missing = {name: sorted(files) for name, files in read.items() if name not in documented}
    assert not missing, f"add these to the README's table under '## Places' (read in): {missing}"
