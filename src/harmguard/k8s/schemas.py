"""Offline validation of Kubernetes manifests: KubeRay and Argo objects against pinned CRDs, core kinds too.

No API server is reachable from CI, so a rendered manifest is checked the way ``kubectl apply --validate=strict``
would check it:

- **Custom resources** (RayJob, RayService, RayCluster of ``ray.io/v1``; CronWorkflow, Workflow, WorkflowTemplate
  of ``argoproj.io/v1alpha1``) against the upstream CRDs, pinned here by sha256 (KubeRay v1.7.0, Argo Workflows
  v4.1.2). A CRD reaches ``<cache>/schemas/<project>/<file>`` from the schema mirror (``HARMGUARD_SCHEMA_MIRROR``)
  or its raw GitHub URL at the pinned commit, and is verified before use (``harmguard.data.datasets.fetch_file``). The
  schema is preprocessed as the API server behaves (``/work/shared/schemas/README.md``): defaulted properties are
  not required, unknown fields are rejected outside ``x-kubernetes-preserve-unknown-fields`` subtrees,
  int-or-string is ``anyOf`` integer/string, ``nullable`` admits null, null mapping values are pruned. The
  CEL rules that matter here (one template type per Argo template, ``depends`` xor ``dependencies``) and object
  names and labels (the CRDs leave ``metadata`` open) are checked in code.
- **Core kinds** (ServiceAccount, Role, RoleBinding, ConfigMap, Deployment, ...) with ``kubernetes-validate``'s
  strict schemas for Kubernetes ``K8S_VERSION``.

Every problem is reported at once, each with its JSON path, in one ``ManifestError``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harmguard.data.datasets import DatasetError, DatasetFile, fetch_file
from harmguard.k8s.common import QUANTITY
from harmguard.settings import Settings, load_settings

K8S_VERSION = "1.35"  # the Kubernetes API the core-kind schemas follow (the pinned CRDs embed k8s.io/api 0.35/0.36)

_KUBERAY = ("ray-project/kuberay", "59d663aeec13760646da3db9c1cf8cfe883e30b7")  # tag v1.7.0
_ARGO = ("argoproj/argo-workflows", "16a52d67daf2f4a8a76fa8bec02a76a46aa46257")  # tag v4.1.2


class ManifestError(ValueError):
    """A manifest is invalid (or cannot be checked); the message names the object and each problem's path."""

    def __init__(self, ref: str, problems: list[str]) -> None:
        self.ref = ref
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{ref}: {len(problems)} problem(s):\n{lines}")


class SchemaUnavailableError(ManifestError):
    """A pinned CRD could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class CrdSchema:
    """One pinned upstream CRD file and the kind it defines."""

    api_version: str  # group/version a manifest must carry, e.g. ray.io/v1
    kind: str
    project: str  # folder in the schema mirror and the cache
    filename: str
    repo: str
    commit: str
    source_path: str
    sha256: str
    size: int

    @property
    def file(self) -> DatasetFile:
        """The same pin in the shape ``harmguard.data.datasets.fetch_file`` fetches and verifies."""
        return DatasetFile(
            self.project, self.filename, self.repo, self.commit, self.source_path, self.sha256, self.size
        )


def _kuberay(kind: str, plural: str, sha256: str, size: int) -> CrdSchema:
    name = f"ray.io_{plural}.yaml"
    return CrdSchema(
        "ray.io/v1", kind, "kuberay", name, *_KUBERAY, f"ray-operator/config/crd/bases/{name}", sha256, size
    )


def _argo(kind: str, plural: str, sha256: str, size: int) -> CrdSchema:
    name = f"argoproj.io_{plural}.yaml"
    return CrdSchema(
        "argoproj.io/v1alpha1", kind, "argo-workflows", name, *_ARGO, f"manifests/base/crds/full/{name}", sha256, size
    )


# Digests copied once from the mirror's PROVENANCE.json; never read at run time (a mirror cannot vouch for itself).
CRDS: dict[tuple[str, str], CrdSchema] = {
    (c.api_version, c.kind): c
    for c in (
        _kuberay("RayJob", "rayjobs", "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5", 1390040),
        _kuberay(
            "RayService", "rayservices", "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab", 1035970
        ),
        _kuberay(
            "RayCluster", "rayclusters", "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1", 933800
        ),
        _argo(
            "CronWorkflow", "cronworkflows", "31abde1c89c6c11cf1c97753676327e02b2f8dc47827e49383732ac6b1d828c6", 2894455
        ),
        _argo(
            "WorkflowTemplate",
            "workflowtemplates",
            "e932631a04a0f3a226b2ca8c68d43214c071c5d8aa6961b23298b81cbea3d9a5",
            2690017,
        ),
        _argo("Workflow", "workflows", "35ffc0d16c9c71db69ae113e562d90057eac75a60e7371aa3012a3171ccd8c39", 2838656),
    )
}

# --- fetching and preprocessing the CRDs --------------------------------------------------------------------------


def _env_places() -> Settings:
    """Settings from the environment (only ``cache`` and ``schema_mirror`` matter here).

    A remote home without ``MLFLOW_TRACKING_URI`` is an error for commands that track, not for a validation.
    """
    try:
        return load_settings()
    except ValueError:
        return load_settings({**os.environ, "MLFLOW_TRACKING_URI": "unused:"})


def crd_path(crd: CrdSchema, settings: Settings | None = None) -> Path:
    """A verified local copy of a pinned CRD (cache, else schema mirror, else its URL).

    Raises:
        SchemaUnavailableError: When the mirror lacks the file, the download fails or the sha256 differs.
    """
    settings = settings or _env_places()
    ref = f"CRD {crd.project}/{crd.filename}"
    mirror = settings.schema_mirror
    if mirror is not None and not (Path(mirror) / crd.project / crd.filename).is_file():
        raise SchemaUnavailableError(
            ref,
            [f"not in the schema mirror: {Path(mirror) / crd.project / crd.filename} (check HARMGUARD_SCHEMA_MIRROR)"],
        )
    # The dataset fetcher already does cache / mirror / URL with verify-before-rename; point it at the schema places.
    places = settings.model_copy(update={"data_mirror": mirror})
    try:
        return fetch_file(crd.file, places, folder="schemas")
    except DatasetError as e:
        raise SchemaUnavailableError(ref, [str(e)]) from e


_PREP_VERSION = 1  # bump whenever _prepare changes: it names the cached preprocessed schemas


def _prepare(node: Any) -> None:
    """Make one CRD schema node behave like the API server in strict mode (in place, recursively)."""
    if isinstance(node, list):
        for item in node:
            _prepare(item)
        return
    if not isinstance(node, dict):
        return
    props = node.get("properties")
    if isinstance(props, dict):
        # The server fills defaults before it validates: a defaulted property is never missing.
        if "required" in node:
            required = [r for r in node["required"] if "default" not in props.get(r, {})]
            if required:
                node["required"] = required
            else:
                del node["required"]
        # Strict field validation: unknown fields are errors, except where the CRD keeps unknown fields.
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for child in props.values():
            _prepare(child)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        node.pop("type", None)
    if node.get("nullable") and "type" in node:
        t = node["type"]
        node["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _prepare(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(node.get(key), list):
            _prepare(node[key])


def _preprocessed_schema(crd: CrdSchema, settings: Settings | None) -> dict[str, Any]:
    path = crd_path(crd, settings)
    # The preprocessed schema is cached as JSON beside the CRD (keyed by its digest): json loads ~10x faster.
    cached = path.parent / f".{crd.sha256[:16]}.strict-v{_PREP_VERSION}.json"
    if cached.is_file():
        try:
            return dict(json.loads(cached.read_text()))
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)
    with open(path, "rb") as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
    group, version = crd.api_version.split("/")
    if doc.get("spec", {}).get("group") != group or doc["spec"].get("names", {}).get("kind") != crd.kind:
        raise SchemaUnavailableError(f"CRD {crd.filename}", [f"does not define {crd.api_version} {crd.kind}"])
    entry = next((v for v in doc["spec"]["versions"] if v.get("name") == version), None)
    if entry is None or not entry.get("served"):
        raise SchemaUnavailableError(f"CRD {crd.filename}", [f"version {version} is not served"])
    schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
    _prepare(schema)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.part")  # concurrent writers never share a temp file
    tmp.write_text(json.dumps(schema))
    tmp.replace(cached)
    return schema


_CRD_VALIDATORS: dict[str, Any] = {}  # by CRD sha256: the bytes are pinned, so any place gives the same validator


def crd_validator(api_version: str, kind: str, settings: Settings | None = None) -> Any:
    """The strict ``jsonschema.Draft4Validator`` of a pinned CRD kind (built once per process).

    Raises:
        SchemaUnavailableError: When the CRD cannot be obtained or fails its checksum.
    """
    import jsonschema

    crd = CRDS[(api_version, kind)]
    validator = _CRD_VALIDATORS.get(crd.sha256)
    if validator is None:
        validator = jsonschema.Draft4Validator(_preprocessed_schema(crd, settings))
        _CRD_VALIDATORS[crd.sha256] = validator
    return validator


# --- core kinds ---------------------------------------------------------------------------------------------------


@functools.cache
def _core_validator(api_version: str, kind: str) -> Any:
    import jsonschema
    from kubernetes_validate import utils as kv
    from referencing import Registry, Resource

    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    base = f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict"
    try:
        schema = kv.schema_contents(f"{base}/{kind.lower()}-{group_version}.json", K8S_VERSION)
    except FileNotFoundError:
        return None
    defs = kv.schema_contents(f"{base}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- checks in code: names, labels, CEL rules ----------------------------------------------------------------------

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Argo appends a timestamp to a CronWorkflow's name for each run (its validator caps it at 52); KubeRay names
# Services and pods after its objects and requires DNS-1035 labels.
_NAME_LIMITS = {"CronWorkflow": 52, "RayJob": 63, "RayService": 63, "RayCluster": 63}
ARGO_TEMPLATE_TYPES = (
    "container",
    "containerSet",
    "dag",
    "data",
    "http",
    "plugin",
    "resource",
    "script",
    "steps",
    "suspend",
)


def _metadata_problems(obj: dict[str, Any]) -> list[str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: missing or not a mapping"]
    problems = []
    kind = str(obj.get("kind"))
    name, generate = meta.get("name"), meta.get("generateName")
    if not name and not generate:
        problems.append("metadata.name: missing")
    for key, value in (("name", name), ("generateName", generate)):
        if value is None:
            continue
        valid = isinstance(value, str) and _DNS1123_SUBDOMAIN.fullmatch(value.rstrip("-.") or "-") is not None
        if not isinstance(value, str) or len(value) > 253 or not valid:
            problems.append(f"metadata.{key}: {value!r} is not a DNS-1123 subdomain (lowercase a-z0-9 '-' '.')")
        elif kind.startswith("Ray") and not _DNS1035_LABEL.fullmatch(value.rstrip("-")):
            problems.append(f"metadata.{key}: {value!r} is not a DNS-1035 label (KubeRay names Services after it)")
        elif kind in _NAME_LIMITS and len(value) > _NAME_LIMITS[kind]:
            problems.append(f"metadata.{key}: {value!r} is longer than {_NAME_LIMITS[kind]} characters for a {kind}")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or len(ns) > 63 or not _DNS1123_LABEL.fullmatch(ns)):
        problems.append(f"metadata.namespace: {ns!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        entries = meta.get(field) or {}
        if not isinstance(entries, dict):
            problems.append(f"metadata.{field}: not a mapping")
            continue
        for k, v in entries.items():
            prefix, _, key = str(k).rpartition("/")
            if (prefix and not _DNS1123_SUBDOMAIN.fullmatch(prefix)) or len(key) > 63 or not _LABEL_NAME.fullmatch(key):
                problems.append(f"metadata.{field}[{k!r}]: invalid key")
            if not isinstance(v, str):
                problems.append(f"metadata.{field}[{k!r}]: value must be a string, not {type(v).__name__}")
            elif field == "labels" and (len(v) > 63 or not _LABEL_VALUE.fullmatch(v)):
                problems.append(f"metadata.labels[{k!r}]: invalid value {v!r}")
    return problems


def _argo_templates(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    workflow_spec = spec.get("workflowSpec", spec)
    if isinstance(workflow_spec, dict):
        for i, template in enumerate(workflow_spec.get("templates") or []):
            if isinstance(template, dict):
                yield f"templates[{i}]", template


def _argo_problems(obj: dict[str, Any]) -> list[str]:
    """The CEL rules of the Argo CRDs that jsonschema cannot enforce (the ones a hand-written template can break)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    base = "spec.workflowSpec" if "workflowSpec" in spec else "spec"
    problems = []
    for where, template in _argo_templates(spec):
        types = [t for t in ARGO_TEMPLATE_TYPES if t in template]
        if len(types) > 1:
            problems.append(f"{base}.{where}: template must have at most one template type, has {types}")
        for j, task in enumerate((template.get("dag") or {}).get("tasks") or []):
            if isinstance(task, dict) and "depends" in task and "dependencies" in task:
                problems.append(f"{base}.{where}.dag.tasks[{j}]: cannot use both 'depends' and 'dependencies'")
    return problems


# --- public API ---------------------------------------------------------------------------------------------------


def _prune_nulls(value: Any) -> Any:
    """The server prunes ``key: null`` before validating (a bare ``metadata:`` in YAML is null)."""
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


def _json_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def _describe(error: Any) -> str:
    path = _json_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}).keys())
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown:
            return "; ".join(f"{_json_path([*error.absolute_path, k])}: unknown field {k!r}" for k in unknown)
    if error.validator in ("anyOf", "oneOf") and error.context:
        reasons = sorted({c.message for c in error.context})
        return f"{path}: {error.instance!r} matches none of: {'; '.join(reasons)}"
    if error.validator == "pattern" and error.validator_value == QUANTITY.pattern:
        return f"{path}: {error.instance!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5, 4Gi)"
    return f"{path}: {error.message}"


def manifest_ref(obj: Any) -> str:
    """``Kind/name`` of a manifest (for messages), tolerant of broken input."""
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}>"
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{obj.get('kind') or '<no kind>'}/{meta.get('name') or meta.get('generateName') or '<no name>'}"


def manifest_problems(obj: Any, *, settings: Settings | None = None) -> list[str]:
    """Every problem of one manifest, each ``<json path>: <what is wrong>`` (empty when valid).

    Raises:
        SchemaUnavailableError: When the pinned CRD of the object's kind cannot be obtained.
    """
    if not isinstance(obj, dict):
        return [f"(root): a manifest must be a mapping, got {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["(root): apiVersion and kind must both be strings"]
    obj = _prune_nulls(obj)
    if (api_version, kind) in CRDS:
        validator = crd_validator(api_version, kind, settings)
        problems = _metadata_problems(obj)
        if api_version.startswith("argoproj.io/"):
            problems += _argo_problems(obj)
    else:
        known_group = api_version.split("/")[0] in {c.api_version.split("/")[0] for c in CRDS.values()}
        validator = None if known_group else _core_validator(api_version, kind)
        if validator is None:
            supported = ", ".join(f"{a} {k}" for a, k in CRDS)
            return [f"(root): no schema for {api_version} {kind} (custom kinds: {supported}; or a core kind)"]
        problems = _metadata_problems(obj)
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return problems + [_describe(e) for e in errors]


def validate_manifest(obj: dict[str, Any], *, settings: Settings | None = None) -> None:
    """Validate one manifest strictly (unknown fields rejected) against the schema of its apiVersion and kind.

    Args:
        obj: The object as it would be sent (parsed YAML).
        settings: Where the CRDs come from (cache, schema mirror); resolved from the environment when omitted.

    Raises:
        ManifestError: Naming ``Kind/name`` and the JSON path of each problem.
    """
    problems = manifest_problems(obj, settings=settings)
    if problems:
        raise ManifestError(manifest_ref(obj), problems)


def load_manifests(path: str | Path) -> list[dict[str, Any]]:
    """The documents of a (multi-document) YAML file, empty documents skipped.

    Raises:
        ManifestError: When the file does not parse or a document is not a mapping.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(str(path), [f"not valid YAML: {e}"]) from e
    bad = [f"document {i}: not a mapping ({type(d).__name__})" for i, d in enumerate(docs) if not isinstance(d, dict)]
    if bad:
        raise ManifestError(str(path), bad)
    return docs


def validate_file(path: str | Path, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Validate every document of a YAML file; returns the documents.

    Raises:
        ManifestError: Naming the file, and per document its ``Kind/name`` and each problem's JSON path.
    """
    docs = load_manifests(path)
    if not docs:
        raise ManifestError(str(path), ["no documents"])
    problems = []
    for i, doc in enumerate(docs):
        problems += [f"document {i} {manifest_ref(doc)}: {p}" for p in manifest_problems(doc, settings=settings)]
    if problems:
        raise ManifestError(str(path), problems)
    return docs
