"""The registry of record: published models, numbered versions, alias pointers moved by compare-and-swap, audit log.

Layout under HARMGUARD_HOME (CONTRACTS.md, "Registry of record"):

- ``models/<digest>/``: exported model folders, create-only.
- ``registry/<policy>/versions/<n>.json``: one immutable, create-only record per version ``<policy>/<n>``; ``n`` is
  allocated by trying ``max + 1`` create-only and moving on to the next number on collision, so concurrent
  registrations never share a number.
- ``registry/<policy>/versions/<n>.mlflow.json``: the MLflow model version mirroring it (create-only, separate so
  the version record never changes).
- ``registry/<policy>/<alias>.json``: alias pointers (``champion``, ``challenger``...), changed only by
  ``move_alias`` (compare-and-swap).
- ``registry/<policy>/audit/<UTC time>-<uuid>.json``: one create-only object per event.

MLflow is a mirror. The registry's own write comes first; mirroring afterwards is best effort: a failure is logged
as a warning on the ``harmguard.registry`` logger, never raised and never undoes the write, ``registry_status`` then
lists it under ``mismatches``, and ``sync_mlflow`` repairs it (every mirror step is idempotent).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harmguard.digests import canonical_json, sha256_bytes, thresholds_version
from harmguard.registry import tracking
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore, LostRace, StoreError

logger = logging.getLogger("harmguard.registry")

EVENT_KINDS = frozenset(
    {
        "bless",
        "register",
        "approve",
        "reject",
        "override",
        "promote",
        "rollback",
        "thresholds",
        "alias",
        "move",
        "labels_import",
        "labels_erase",
    }
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_VERSION_FILE = re.compile(r"^(\d+)\.json$")
# Enough for any realistic number of simultaneous registrations of one policy.
_MAX_ALLOCATION_ATTEMPTS = 1000


class VersionNotFound(LookupError):
    """No such model version in the registry of record."""


class VersionRecord(BaseModel):
    """One registered model version (immutable once written)."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(description="The version id '<policy>/<n>'.")
    n: int = Field(description="Version number, increasing per policy from 1.")
    policy: str = Field(description="Policy name; also the MLflow registered model name.")
    model_digest: str = Field(description="Digest of the exported model folder (models/<digest>/).")
    model_uri: str = Field(description="Where the model lives: HARMGUARD_HOME/models/<digest> as a path or gs:// URI.")
    thresholds: dict[str, float] = Field(description="Calibrated per-category decision thresholds.")
    thresholds_version: str = Field(description="sha256 of the canonical JSON of the thresholds.")
    blessed: bool = Field(description="Whether the evaluation gate blessed this version (blessing['blessed']).")
    blessing: dict[str, Any] = Field(description="The gate's blessing document as given.")
    blessing_digest: str = Field(description="sha256 of the canonical JSON of the blessing.")
    metrics: dict[str, Any] = Field(description="Evaluation metrics (reference and operating-point).")
    lineage: dict[str, Any] = Field(
        description="data_version, policy_digest, git_commit, lock_digest, image, seeds, parent_run, as given."
    )
    run_id: str = Field(description="The harmguard run that produced the version (runs/<run_id>/).")
    mlflow_run_id: str | None = Field(description="The MLflow run that tracked training, if any.")
    family: str = Field(description="Model family (baseline or transformer).")
    created_at: str = Field(description="Registration time, UTC ISO 8601.")
    created_by: str = Field(description="Who or what registered it.")


class AliasPointer(BaseModel):
    """The content of ``registry/<policy>/<alias>.json``."""

    version: str | None = Field(description="The version the alias points to; None once the alias was cleared.")
    model_digest: str | None = Field(description="Model digest of that version.")
    thresholds_version: str | None = Field(description="Thresholds version of that version.")
    previous: str | None = Field(description="The version the alias pointed to before this move.")
    updated_at: str = Field(description="When the alias moved, UTC ISO 8601.")
    by: str = Field(description="Who moved it.")


class AuditEvent(BaseModel):
    """One audit log entry; extra keys given by the caller are kept."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    event: str = Field(description="Kind: " + ", ".join(sorted(EVENT_KINDS)) + ".")
    who: str = Field(description="The person or pipeline acting.")
    when: str = Field(default_factory=lambda: _now(), description="UTC ISO 8601 time of the event.")
    why: str = Field(default="", description="The reason given.")
    policy: str | None = Field(default=None, description="The policy (filled in by append_audit).")
    version: str | None = Field(default=None, description="The version concerned, '<policy>/<n>'.")
    model_digest: str | None = Field(default=None, description="Its model digest.")
    blessing_digest: str | None = Field(default=None, description="Its blessing digest.")
    thresholds_version: str | None = Field(default=None, description="Its thresholds version.")
    alias: str | None = Field(default=None, description="The alias moved, if any.")
    from_: str | None = Field(default=None, alias="from", description="The version the alias pointed to before.")
    to: str | None = Field(default=None, description="The version the alias points to after.")

    @field_validator("event")
    @classmethod
    def _known_event(cls, value: str) -> str:
        if value not in EVENT_KINDS:
            raise ValueError(f"unknown audit event {value!r}; use one of {sorted(EVENT_KINDS)}")
        return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dump(obj: BaseModel | dict[str, Any]) -> bytes:
    data = obj.model_dump(mode="json", by_alias=True) if isinstance(obj, BaseModel) else obj
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _check_name(kind: str, value: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not pattern.match(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-'")
    if kind == "alias" and (value.lower() == "latest" or re.fullmatch(r"v\d+", value)):
        raise ValueError(f"alias {value!r} is reserved by MLflow")
    return value


def _versions_prefix(policy: str) -> str:
    return f"registry/{_check_name('policy', policy)}/versions"


def _alias_key(policy: str, alias: str) -> str:
    return f"registry/{_check_name('policy', policy)}/{_check_name('alias', alias, _ALIAS)}.json"


# --- models -----------------------------------------------------------------------------------------------------


# --- versions ---------------------------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[str, int]:
    """Split ``'<policy>/<n>'`` into policy and n (ValueError when malformed)."""
    policy, sep, n = version.rpartition("/")
    if not sep or not n.isdigit() or int(n) < 1:
        raise ValueError(f"invalid version {version!r}: expected '<policy>/<n>'")
    return _check_name("policy", policy), int(n)


def _version_numbers(store: ArtifactStore, policy: str) -> list[int]:
    names = (key.rsplit("/", 1)[-1] for key in store.list(_versions_prefix(policy)))
    return sorted(int(m.group(1)) for name in names if (m := _VERSION_FILE.match(name)))


def get_version(store: ArtifactStore, version: str) -> VersionRecord:
    """Read a version record by its id ``'<policy>/<n>'``."""
    policy, n = parse_version(version)
    try:
        return VersionRecord.model_validate_json(store.read_bytes(f"{_versions_prefix(policy)}/{n}.json"))
    except FileNotFoundError:
        raise VersionNotFound(f"no version {version} in {store.uri}/registry") from None


def list_versions(store: ArtifactStore, policy: str) -> list[VersionRecord]:
    """All version records of a policy, oldest first."""
    return [get_version(store, f"{policy}/{n}") for n in _version_numbers(store, policy)]


def register_version(
    store: ArtifactStore,
    settings: Settings,
    *,
    policy: str,
    model_digest: str,
    thresholds: dict[str, float],
    blessing: dict[str, Any],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    run_id: str,
    mlflow_run_id: str | None,
    family: str,
    by: str,
) -> VersionRecord:
    """Register a published model as the next version of a policy, audit it, and mirror it into MLflow.

    Args:
        store: The artifact store.
        settings: Settings (for the MLflow tracking URI).
        policy: Policy name.
        model_digest: Digest of a model already published with ``publish_model``.
        thresholds: Per-category thresholds.
        blessing: The gate's blessing document; ``blessing["blessed"]`` says whether it passed.
        metrics: Evaluation metrics to keep with the version.
        lineage: Lineage fields (data_version, policy_digest, git_commit, lock_digest, image, seeds, parent_run).
        run_id: The harmguard run id.
        mlflow_run_id: The MLflow run id, if training was tracked.
        family: Model family.
        by: Who registers it.

    Returns:
        The written record. An MLflow failure afterwards is logged, not raised (see the module docstring).

    Raises:
        ValueError: When the model is not published in the store.
    """
    if not _DIGEST.match(model_digest) or not store.exists(f"models/{model_digest}"):
        raise ValueError(f"model {model_digest!r} is not published in {store.uri}/models: publish it first")
    prefix = _versions_prefix(policy)
    fields: dict[str, Any] = {
        "policy": policy,
        "model_digest": model_digest,
        "model_uri": store.uri_for(f"models/{model_digest}"),
        "thresholds": thresholds,
        "thresholds_version": thresholds_version(thresholds),
        "blessed": bool(blessing.get("blessed", False)),
        "blessing": blessing,
        "blessing_digest": sha256_bytes(canonical_json(blessing)),
        "metrics": metrics,
        "lineage": lineage,
        "run_id": run_id,
        "mlflow_run_id": mlflow_run_id,
        "family": family,
        "created_at": _now(),
        "created_by": by,
    }
    n = max(_version_numbers(store, policy), default=0) + 1
    for _ in range(_MAX_ALLOCATION_ATTEMPTS):
        record = VersionRecord(version=f"{policy}/{n}", n=n, **fields)
        if store.create_only(f"{prefix}/{n}.json", _dump(record)):
            break
        # Someone took n: skip past everything that exists now.
        n = max(max(_version_numbers(store, policy), default=0), n) + 1
    else:
        raise StoreError(f"could not allocate a version number for {policy} after {_MAX_ALLOCATION_ATTEMPTS} tries")
    append_audit(
        store,
        policy,
        {
            "event": "register",
            "who": by,
            "why": f"run {run_id}",
            "version": record.version,
            "model_digest": model_digest,
            "blessing_digest": record.blessing_digest,
            "thresholds_version": record.thresholds_version,
        },
    )
    try:
        mirror_version(store, settings, record)
    except Exception as e:
        logger.warning(
            "%s is registered, but mirroring it into MLflow (%s) failed: %s; sync_mlflow repairs it",
            record.version,
            settings.mlflow_tracking_uri,
            e,
        )
    return record


def mlflow_version_of(store: ArtifactStore, version: str) -> str | None:
    """The MLflow model version number mirroring a harmguard version, None when it was never mirrored."""
    policy, n = parse_version(version)
    try:
        return str(json.loads(store.read_bytes(f"{_versions_prefix(policy)}/{n}.mlflow.json"))["mlflow_version"])
    except FileNotFoundError:
        return None


def mirror_version(store: ArtifactStore, settings: Settings, record: VersionRecord) -> str:
    """Mirror a version into MLflow (idempotent) and record the MLflow version number create-only.

    Args:
        store: The artifact store.
        settings: Settings (for the MLflow tracking URI).
        record: The version to mirror.

    Returns:
        The MLflow model version number.
    """
    existing = mlflow_version_of(store, record.version)
    if existing is not None:
        return existing
    uri = settings.mlflow_tracking_uri
    client = tracking.mlflow_client(uri)
    tags = {
        **record.lineage,
        "harmguard_version": record.version,
        "model_digest": record.model_digest,
        "thresholds_version": record.thresholds_version,
        "blessed": record.blessed,
    }
    with tracking.mlflow_lock(uri):
        tracking.ensure_registered_model(client, record.policy)
        # A version created by an earlier attempt whose mapping write failed is reused, not duplicated.
        mlflow_version = tracking.find_model_version(client, record.policy, record.version)
        if mlflow_version is None:
            mlflow_version = tracking.create_model_version(
                client, record.policy, record.model_uri, record.mlflow_run_id, tags
            )
    mapping = {"version": record.version, "mlflow_version": mlflow_version, "tracking_uri": uri, "created_at": _now()}
    if not store.create_only(f"{_versions_prefix(record.policy)}/{record.n}.mlflow.json", _dump(mapping)):
        return mlflow_version_of(store, record.version) or mlflow_version
    return mlflow_version


# --- aliases ----------------------------------------------------------------------------------------------------


def _load_pointer(store: ArtifactStore, key: str) -> tuple[AliasPointer | None, str | None]:
    data, token = store.read_versioned(key)
    return (AliasPointer.model_validate_json(data) if data is not None else None), token


def read_alias(store: ArtifactStore, policy: str, alias: str) -> tuple[AliasPointer | None, str | None]:
    """Read an alias pointer and its compare-and-swap token.

    Returns:
        ``(pointer, token)``; the pointer is None when the alias was never set or was cleared (the token is still
        the one to pass to a swap).
    """
    pointer, token = _load_pointer(store, _alias_key(policy, alias))
    return (pointer if pointer is not None and pointer.version is not None else None), token


def _describe(policy: str, alias: str, pointer: AliasPointer | None) -> str:
    if pointer is None:
        return f"{alias} of {policy} is not set"
    target = pointer.version or "nothing (cleared)"
    return f"{alias} of {policy} points to {target} (moved by {pointer.by} at {pointer.updated_at})"


def move_alias(
    store: ArtifactStore,
    settings: Settings,
    *,
    policy: str,
    alias: str,
    to_version: str | None,
    expected_version: str | None,
    by: str,
    reason: str,
    event: str = "move",
) -> AliasPointer:
    """Move an alias by compare-and-swap, audit the move, then mirror it into MLflow.

    Args:
        store: The artifact store.
        settings: Settings (for the MLflow tracking URI).
        policy: Policy name.
        alias: Alias name (``champion``, ``challenger``...).
        to_version: The version to point to; None clears the alias.
        expected_version: The version the caller saw (None: not set); the move fails if the alias moved since.
        by: Who moves it.
        reason: Why (kept in the audit log).
        event: Audit event kind (``move``; ``promote``, ``rollback``... for the pipelines that call this).

    Returns:
        The new pointer.

    Raises:
        LostRace: When the alias no longer points to ``expected_version``; the message says where it points now.
        VersionNotFound: When ``to_version`` does not exist.
    """
    if event not in EVENT_KINDS:
        raise ValueError(f"unknown audit event {event!r}; use one of {sorted(EVENT_KINDS)}")
    key = _alias_key(policy, alias)
    target = get_version(store, to_version) if to_version is not None else None
    if target is not None and target.policy != policy:
        raise ValueError(f"{to_version} belongs to policy {target.policy}, not {policy}")
    current, token = _load_pointer(store, key)
    current_version = current.version if current is not None else None
    if current_version != expected_version:
        raise LostRace(f"{_describe(policy, alias, current)}, not {expected_version or 'unset'} as expected")
    pointer = AliasPointer(
        version=to_version,
        model_digest=target.model_digest if target else None,
        thresholds_version=target.thresholds_version if target else None,
        previous=current_version,
        updated_at=_now(),
        by=by,
    )
    try:
        store.compare_and_swap(key, _dump(pointer), token)
    except LostRace:
        winner, _ = _load_pointer(store, key)
        raise LostRace(f"{_describe(policy, alias, winner)}: it moved while this move was in flight") from None
    append_audit(
        store,
        policy,
        {
            "event": event,
            "who": by,
            "why": reason,
            "version": to_version,
            "model_digest": pointer.model_digest,
            "blessing_digest": target.blessing_digest if target else None,
            "thresholds_version": pointer.thresholds_version,
            "alias": alias,
            "from": current_version,
            "to": to_version,
        },
    )
    try:
        sync_alias(store, settings, policy, alias)
    except Exception as e:
        logger.warning(
            "%s of %s moved to %s, but mirroring it into MLflow failed: %s; sync_mlflow repairs it",
            alias,
            policy,
            to_version,
            e,
        )
    return pointer


def sync_alias(store: ArtifactStore, settings: Settings, policy: str, alias: str) -> None:
    """Make the MLflow alias match the pointer as it is now (so racing mirrors converge on the latest swap).

    Raises:
        StoreError: When the pointed version has no MLflow model version.
    """
    uri = settings.mlflow_tracking_uri
    client = tracking.mlflow_client(uri)
    with tracking.mlflow_lock(uri):
        pointer, _ = read_alias(store, policy, alias)
        mlflow_version = None
        if pointer is not None:
            mlflow_version = mlflow_version_of(store, pointer.version or "")
            if mlflow_version is None:
                raise StoreError(f"{pointer.version} has no MLflow model version to point {alias} at")
        tracking.ensure_registered_model(client, policy)
        tracking.set_alias(client, policy, alias, mlflow_version)


def list_aliases(store: ArtifactStore, policy: str) -> list[str]:
    """Names of the alias pointers of a policy (set or cleared)."""
    prefix = f"registry/{_check_name('policy', policy)}/"
    rest = (key.removeprefix(prefix) for key in store.list(prefix.rstrip("/")))
    return sorted(name.removesuffix(".json") for name in rest if "/" not in name and name.endswith(".json"))


# --- audit ------------------------------------------------------------------------------------------------------


def append_audit(store: ArtifactStore, policy: str, event: dict[str, Any]) -> str:
    """Append one event to the policy's audit log as a create-only object.

    Args:
        store: The artifact store.
        policy: Policy name.
        event: At least ``event`` and ``who``; see ``AuditEvent`` for the other fields.

    Returns:
        The key of the written object.
    """
    record = AuditEvent.model_validate({**event, "policy": policy})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"registry/{_check_name('policy', policy)}/audit/{stamp}-{uuid.uuid4().hex}.json"
    if not store.create_only(key, _dump(record)):
        raise StoreError(f"audit object {key} already exists")
    return key


def read_audit(store: ArtifactStore, policy: str) -> list[dict[str, Any]]:
    """The policy's audit events in time order (keys start with a UTC timestamp)."""
    keys = store.list(f"registry/{_check_name('policy', policy)}/audit")
    return [json.loads(store.read_bytes(key)) for key in sorted(keys) if key.endswith(".json")]


# --- status and repair ------------------------------------------------------------------------------------------


def list_policies(store: ArtifactStore) -> list[str]:
    """Policies with anything under ``registry/``."""
    return sorted({key.split("/")[1] for key in store.list("registry") if key.count("/") >= 2})


def _summary(pointer: AliasPointer | None) -> dict[str, str | None] | None:
    if pointer is None:
        return None
    return {
        "version": pointer.version,
        "model_digest": pointer.model_digest,
        "thresholds_version": pointer.thresholds_version,
    }


def _pending(store: ArtifactStore, policy: str, versions: list[VersionRecord], champion: str | None) -> list[str]:
    decided = {e.get("version") for e in read_audit(store, policy) if e.get("event") in ("approve", "reject")}
    floor = parse_version(champion)[1] if champion else 0
    return [v.version for v in versions if v.blessed and v.n > floor and v.version not in decided]


def _mismatches(store: ArtifactStore, settings: Settings, policy: str, versions: list[VersionRecord]) -> list[str]:
    problems = [
        f"{v.version} has no MLflow model version" for v in versions if mlflow_version_of(store, v.version) is None
    ]
    try:
        mlflow_aliases = tracking.read_aliases(tracking.mlflow_client(settings.mlflow_tracking_uri), policy)
    except Exception as e:
        return [*problems, f"MLflow at {settings.mlflow_tracking_uri} could not be read: {e}"]
    if mlflow_aliases is None:
        return [*problems, f"MLflow has no registered model {policy!r}"] if versions else problems
    pointers = {alias: read_alias(store, policy, alias)[0] for alias in list_aliases(store, policy)}
    for alias in sorted(set(pointers) | set(mlflow_aliases)):
        pointer = pointers.get(alias)
        actual = mlflow_aliases.get(alias)
        if pointer is None:
            if actual is not None:
                problems.append(f"MLflow alias {alias!r} points to version {actual} but the registry has no {alias}")
            continue
        expected = mlflow_version_of(store, pointer.version or "")
        if expected is None:
            problems.append(f"{alias} -> {pointer.version}, which is not mirrored in MLflow")
        elif actual is None:
            problems.append(
                f"{alias} -> {pointer.version} but MLflow has no alias {alias!r} (expected version {expected})"
            )
        elif actual != expected:
            problems.append(
                f"{alias} -> {pointer.version} (MLflow version {expected}) but MLflow alias {alias!r} "
                f"points to version {actual}"
            )
    return problems


def registry_status(store: ArtifactStore, settings: Settings) -> dict[str, Any]:
    """The ``harmguard status --json`` object of CONTRACTS.md.

    Returns:
        ``{"policies": {policy: {"champion", "challenger", "pending", "mismatches"}}}``.
    """
    policies: dict[str, Any] = {}
    for policy in list_policies(store):
        versions = list_versions(store, policy)
        champion, _ = read_alias(store, policy, "champion")
        challenger, _ = read_alias(store, policy, "challenger")
        policies[policy] = {
            "champion": _summary(champion),
            "challenger": _summary(challenger),
            "pending": _pending(store, policy, versions, champion.version if champion else None),
            "mismatches": _mismatches(store, settings, policy, versions),
        }
    return {"policies": policies}


def sync_mlflow(store: ArtifactStore, settings: Settings, policy: str) -> list[str]:
    """Repair the MLflow mirror of a policy: mirror missing versions, then re-point every alias.

    Returns:
        The mismatches left afterwards (empty when MLflow now mirrors the registry).
    """
    for record in list_versions(store, policy):
        mirror_version(store, settings, record)
    for alias in list_aliases(store, policy):
        sync_alias(store, settings, policy, alias)
    return _mismatches(store, settings, policy, list_versions(store, policy))
