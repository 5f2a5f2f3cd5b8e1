"""Compile the KFP pipelines to YAML, deterministically (the golden test compares the output byte for byte).

The image is read here, at compile time (``HARMGUARD_IMAGE``, else the default tag), and stamped into every step of
every pipeline (``harmguard.k8s.cluster.with_image``); the same function builds what ``harmguard submit`` sends.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harmguard.k8s.cluster import with_image
from harmguard.settings import DEFAULT_IMAGE

# name -> "module:attribute"; the file is pipelines/<name>.yaml (installed as harmguard.pipelines).
# A pipeline whose module is not there is skipped.
PIPELINES: dict[str, str] = {
    "training": "harmguard.pipelines.training:training_pipeline",
    "training_rayjob": "harmguard.pipelines.training:training_rayjob_pipeline",
    "promotion": "harmguard.pipelines.promotion:promotion_pipeline",
    "scoring": "harmguard.pipelines.scoring:scoring_pipeline",
}


def available_pipelines() -> list[str]:
    """Names of the pipelines whose module exists in this checkout or image."""
    return [n for n, ref in PIPELINES.items() if importlib.util.find_spec(ref.split(":")[0]) is not None]


def load_pipeline(name: str) -> Any:
    """The ``@dsl.pipeline`` object called ``name`` (see ``PIPELINES``)."""
    if name not in available_pipelines():
        raise ValueError(f"unknown pipeline {name!r}; choose one of {available_pipelines()}")
    module, attr = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def compile_pipeline(name: str, path: Path, image: str = DEFAULT_IMAGE) -> Path:
    """Compile one pipeline to ``path`` with every step running ``image`` (default: the configured image)."""
    from kfp.compiler import pipeline_spec_builder

    pipeline = load_pipeline(name)
    spec = with_image(pipeline.pipeline_spec, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    # What kfp.compiler.Compiler().compile writes, from the image-stamped copy of the spec.
    with _pyyaml_default_strings():
        pipeline_spec_builder.write_pipeline_spec_to_file(
            pipeline_spec=spec,
            pipeline_description=pipeline.description,
            platform_spec=pipeline.platform_spec,
            package_path=str(path),
        )
    return path


@contextlib.contextmanager
def _pyyaml_default_strings() -> Iterator[None]:
    """PyYAML's own string style while KFP dumps, whatever was imported before.

    KFP writes with PyYAML's global representers, and importing Hera (the Argo manifests) replaces the global one for
    ``str`` (block style for multi-line strings), which made the compiled YAML depend on import order.
    """
    import yaml

    classes = [c for c in (yaml.Dumper, yaml.SafeDumper, yaml.representer.Representer, yaml.representer.SafeRepresenter)
               if "yaml_representers" in c.__dict__]  # fmt: skip
    saved = {c: c.__dict__["yaml_representers"].get(str) for c in classes}
    for c in classes:
        c.__dict__["yaml_representers"][str] = yaml.representer.SafeRepresenter.represent_str
    try:
        yield
    finally:
        for c, fn in saved.items():
            if fn is None:
                c.__dict__["yaml_representers"].pop(str, None)
            else:
                c.__dict__["yaml_representers"][str] = fn


def compile_pipelines(output_dir: Path | None = None, image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write ``<name>.yaml`` for every pipeline next to their sources or into ``output_dir``."""
    out = Path(output_dir) if output_dir else Path(str(importlib.import_module("harmguard.pipelines").__file__)).parent
    return [compile_pipeline(name, out / f"{name}.yaml", image) for name in available_pipelines()]
