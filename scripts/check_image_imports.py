"""Import every entry point that the compiled pipelines and the Kubernetes manifests name, in this environment.

The image installs the production lock (Dockerfile: ``requirements.prod.lock``, torch's lock, the models file); CI
builds its environment from the dev lock, the same pins plus the dev tools, so importing here is the stand-in for
"the image can run what the cluster will ask of it" where no Docker engine runs. Because the dev tools are installed
here, every module the imports loaded must also come from a distribution the image's locks install (run from a
checkout, where they are): an entry point that needs pytest or hatchling fails here, not in the cluster. Collected:

- each KFP executor of ``pipelines/*.yaml``: its embedded component source must compile, define the function the
  executor runs, and every ``import``/``from … import`` in it must resolve (``harmguard.steps.training.train_step`` …);
- the RayJob's and the Ray Jobs API's entry point (``python -m harmguard.training.job_entry``), any other
  ``python -m MODULE`` and any ``python /app/….py`` a manifest's command or RayJob ``entrypoint`` names (a script:
  the same for its imports; a module: it must import and define ``main``);
- every Ray Serve ``import_path`` (``ray/serve_config.yaml``, RayService ``serveConfigV2`` in ``manifests/``);
- ``harmguard`` commands in manifests: the console script ``harmguard.cli:main``.

Usage: ``python scripts/check_image_imports.py [--list] [--json]``; exits 1 naming what does not import.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = "/app/"  # where the Dockerfile puts the source tree's ray/ folder
# What the Dockerfile installs (with the project itself); `make lock` writes them.
IMAGE_LOCKS = (
    "requirements.prod.lock",
    "requirements-torch-cpu.lock",
    "requirements-torch-cuda.lock",
    "requirements-models.txt",
)


def source_imports(source: str, origin: str) -> Iterator[tuple[str, str, str | None]]:
    """``(origin, module, attribute or None)`` for every absolute import in ``source`` (function bodies too)."""
    for node in ast.walk(ast.parse(source, filename=origin)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield origin, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    yield origin, node.module, alias.name


def pipeline_targets(path: Path) -> Iterator[tuple[str, str, str | None]]:
    """Imports of every executor of one compiled pipeline; its function must be defined in its source."""
    doc = next(yaml.safe_load_all(path.read_text()))
    for name, executor in doc.get("deploymentSpec", {}).get("executors", {}).items():
        container = executor.get("container")
        if not container:
            continue
        origin = f"{path.name}:{name}"
        sources = [c for c in container.get("command", []) if "def " in c]
        args = container.get("args", [])
        func = args[args.index("--function_to_execute") + 1] if "--function_to_execute" in args else None
        if not sources or func is None:
            raise SystemExit(f"{origin}: not a lightweight Python component (no embedded source / function)")
        tree = ast.parse(sources[-1], filename=origin)
        if func not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
            raise SystemExit(f"{origin}: the source does not define {func!r}")
        yield from source_imports(sources[-1], origin)


def _script_targets(script: str, origin: str) -> Iterator[tuple[str, str, str | None]]:
    local = ROOT / script.removeprefix(APP_DIR) if script.startswith(APP_DIR) else ROOT / script
    if not local.is_file():
        raise SystemExit(f"{origin}: runs {script}, which is not in the source tree the image is built from")
    yield from source_imports(local.read_text(), f"{origin} ({script})")


def command_targets(words: list[str], origin: str) -> Iterator[tuple[str, str, str | None]]:
    """What a container command runs: a script's imports, a module's ``main``, or the ``harmguard`` CLI.

    ``python X.py`` -> the script's imports; ``python -m M`` -> ``M:main``; ``harmguard …`` -> ``harmguard.cli:main``.
    """
    for i, word in enumerate(words):
        if word.endswith(".py") and i > 0 and Path(words[i - 1]).name.startswith("python"):
            yield from _script_targets(word, origin)
        if word == "-m" and i > 0 and Path(words[i - 1]).name.startswith("python") and i + 1 < len(words):
            yield origin, words[i + 1], "main"
        if Path(word).name == "harmguard":
            yield origin, "harmguard.cli", "main"


def serve_targets(config: dict[str, Any], origin: str) -> Iterator[tuple[str, str, str | None]]:
    """Ray Serve applications' ``import_path`` (``module:attribute``)."""
    for app in config.get("applications", []):
        module, _, attr = app["import_path"].partition(":")
        yield f"{origin} ({app.get('name')})", module, attr or None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def manifest_targets(path: Path) -> Iterator[tuple[str, str, str | None]]:
    """Entry points named by one rendered manifest file (any kind)."""
    for doc in yaml.safe_load_all(path.read_text()):
        if not isinstance(doc, dict):
            continue
        origin = f"{path.relative_to(ROOT)}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        spec = doc.get("spec", {})
        if doc.get("kind") == "RayJob" and spec.get("entrypoint"):
            yield from command_targets(shlex.split(spec["entrypoint"]), origin)
        if doc.get("kind") == "RayService" and spec.get("serveConfigV2"):
            yield from serve_targets(yaml.safe_load(spec["serveConfigV2"]), origin)
        for node in _walk(doc):
            words = [*node.get("command", []), *node.get("args", [])] if "image" in node else []
            if all(isinstance(w, str) for w in words):
                yield from command_targets([p for w in words for p in _split(w)], origin)


def _split(word: str) -> list[str]:
    try:
        return shlex.split(word)
    except ValueError:
        return [word]


def collect() -> list[tuple[str, str, str | None]]:
    """Every ``(origin, module, attribute)`` the image must be able to import."""
    from harmguard.k8s.kuberay import TRAIN_ENTRY_MODULE
    from harmguard.training.ray_jobs import ENTRY_MODULE

    targets: list[tuple[str, str, str | None]] = []
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        targets += pipeline_targets(path)
    targets.append(("RayJob launcher (harmguard.k8s.rayjob)", TRAIN_ENTRY_MODULE, "main"))
    targets.append(("Ray Jobs submission (harmguard.training.ray_jobs)", ENTRY_MODULE, "main"))
    targets += _script_targets("ray/train_entry.py", "ray/train_entry.py (for `ray job submit` by hand)")
    targets += serve_targets(yaml.safe_load((ROOT / "ray" / "serve_config.yaml").read_text()), "ray/serve_config.yaml")
    for path in sorted((ROOT / "manifests").rglob("*.yaml")) if (ROOT / "manifests").is_dir() else []:
        targets += manifest_targets(path)
    targets.append(("console script harmguard", "harmguard.cli", "main"))
    return targets


def check(targets: list[tuple[str, str, str | None]]) -> list[str]:
    """Import each target; returns one problem line per failure."""
    problems = []
    for module, attr in sorted({(m, a) for _, m, a in targets}, key=lambda t: (t[0], t[1] or "")):
        where = sorted({o for o, m, a in targets if (m, a) == (module, attr)})
        try:
            mod = importlib.import_module(module)
            if attr is not None and not hasattr(mod, attr):
                importlib.import_module(f"{module}.{attr}")  # `from package import submodule`
        except Exception as e:
            ref = f"{module}:{attr}" if attr else module
            problems.append(f"{ref}: {type(e).__name__}: {e} (named by {', '.join(where[:3])})")
    return problems


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_distributions(root: Path = ROOT) -> set[str] | None:
    """Canonical names of what the image installs; None where the lock files are absent (run inside the image)."""
    files = [root / name for name in IMAGE_LOCKS]
    if not all(f.is_file() for f in files):
        return None
    pinned = (m for f in files for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", f.read_text(), re.M))
    return {"harmguard", *(_canonical(n) for n in pinned)}


def outside_the_image(modules: dict[str, Any], allowed: set[str]) -> list[str]:
    """One problem line per distribution that loaded ``modules`` came from and the image does not install.

    A module's owner is the distribution whose RECORD lists its file (namespace packages and packages that vendor
    others, like ray's thirdparty_files, included); files outside site-packages (the editable project) are skipped.
    """
    roots = sorted({os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")})
    owner: dict[str, str] = {}  # file path as RECORD writes it (relative to its root) -> distribution
    for dist in importlib.metadata.distributions(path=roots):
        name = _canonical(dist.metadata["Name"])
        owner.update((line.rsplit(",", 2)[0], name) for line in (dist.read_text("RECORD") or "").splitlines())
    loaded: dict[str, set[str]] = {}
    for name, module in modules.items():
        file = getattr(module, "__file__", None)
        path = os.path.realpath(file) if isinstance(file, str) else ""
        for root in roots:
            relative = path[len(root) + 1 :] if path.startswith(root + os.sep) else None
            if relative is not None and relative in owner:
                loaded.setdefault(owner[relative], set()).add(name.partition(".")[0])
    return [
        f"{', '.join(sorted(tops))}: loaded from {dist}, which the image's locks do not install"
        for dist, tops in sorted(loaded.items())
        if dist not in allowed
    ]


def main(argv: list[str] | None = None) -> int:
    """Collect, import, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="only list what would be imported")
    parser.add_argument("--json", action="store_true", help="print the targets (and problems) as JSON")
    args = parser.parse_args(argv)
    targets = collect()
    problems = [] if args.list else check(targets)
    allowed = image_distributions()
    outside = outside_the_image(dict(sys.modules), allowed) if not args.list and allowed is not None else []
    if args.json:
        print(json.dumps({"targets": [list(t) for t in targets], "problems": problems + outside}))
    else:
        for origin, module, attr in targets if args.list else []:
            print(f"{origin}: {module}{':' + attr if attr else ''}")
        for p in problems:
            print(f"cannot import {p}", file=sys.stderr)
        for p in outside:
            print(f"not in the image: {p}", file=sys.stderr)
        if not args.list:
            n = len({(m, a) for _, m, a in targets})
            print(f"{n} entry points named by the pipelines and manifests; {len(problems)} fail to import")
            if allowed is not None:
                print(f"{len(outside)} distributions they load are missing from the image's locks")
    return 1 if problems or outside else 0


if __name__ == "__main__":
    sys.exit(main())
