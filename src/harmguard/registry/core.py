"""The registry of record: published models, numbered versions, alias pointers moved by compare-and-swap, audit log.

Layout under HARMGUARD_HOME (CONTRACTS.md, "Registry of record"):

- ``models/<digest>/``: exported model folders, create-only.
- ``registry/<policy>/versions/<n>.json``: one immutable, create-only record per version ``<policy>/<n>``; ``n`` is
  allocated by trying ``max + 1`` create-only and moving on to the next number on collision, so concurrent
  registrations never share a number.
- ``registry/<policy>/versions/<n>.mlflow.json``: the MLflow model version mirroring it (create-only, separate so
  the version record never changes).
- ``mlflow-artifacts/<policy>/versions/<n>/``: the MLflow model of the version (``MLmodel`` and ``harmguard.json``,
  create-only, deterministic; ``registry.mlflow_model``): the MLflow model version's source.
- ``registry/<policy>/<alias>.json``: alias pointers (``champion``, ``challenger``...), changed only by
  ``move_alias`` (compare-and-swap). Each move writes an ``intent`` audit event before the swap and names it in the
  pointer; the move's own event (``promote``, ``rollback``, ``move``...) completes it, an ``abandon`` event closes a
  swap that lost its race. An intent left open (a crash between the swap and its audit write) shows in
  ``registry_status`` under ``unfinished``.
- ``registry/<policy>/audit/chain/<seq>.json``: the audit log, one create-only object per event, numbered 1, 2, ...
  by a counter, never by the writer's clock: an event is written create-only at ``head + 1`` with the sha256 of the
  event before it (``prev``), then ``audit/head.json`` moves to it by compare-and-swap. Two writers cannot take the
  same number (create-only), the numbers have no gaps, and a changed, removed or replaced event breaks the chain
  (``verify_audit``; ``registry_status`` lists the problems under ``audit``). A writer that finds its number taken by
  an event whose head swap never happened (a crash) moves the head forward for it, then takes the next number.
  Events written before the chain existed (``audit/<UTC time>-<uuid>.json``) are read first, in time order.
- ``policies/<sha256>.yaml`` (beside ``registry/``): the policy file of each registration, create-only, by digest;
  approval rules are read back from it (``read_policy_file``), never from a file given at approval time.

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

import harmguard.registry.tracking as tracking
from harmguard.digests import canonical_json, sha256_bytes, thresholds_version
from harmguard.registry.mlflow_model import write_mlflow_model
from harmguard.registry.principal import Principal, principal_for
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
        "intent",
        "abandon",
    }
)
# Names are checked with fullmatch: with match() and "$", a trailing newline passes ("p\n" would name a policy).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_VERSION_N = re.compile(r"[1-9][0-9]*")
_VERSION_FILE = re.compile(r"([0-9]+)\.json")
_CHAIN_FILE = re.compile(r"([0-9]{12})\.json")
GENESIS = "0" * 64  # the ``prev`` of the first chained audit event
# Enough for any realistic number of simultaneous registrations of one policy (or writers of one audit log).
_MAX_ALLOCATION_ATTEMPTS = 1000


class AuditChainBroken(StoreError):
    """The audit log's chain does not hold: an event was changed, removed or replaced."""


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
    created_by: str = Field(description="Who or what registered it (a display name).")
    created_principal: str | None = Field(
        default=None,
        description="The authenticated principal that registered it (registry.principal); None before it was kept.",
    )


class AliasPointer(BaseModel):
    """The content of ``registry/<policy>/<alias>.json``."""

    version: str | None = Field(description="The version the alias points to; None once the alias was cleared.")
    model_digest: str | None = Field(description="Model digest of that version.")
    thresholds_version: str | None = Field(description="Thresholds version of that version.")
    previous: str | None = Field(description="The version the alias pointed to before this move.")
    updated_at: str = Field(description="When the alias moved, UTC ISO 8601.")
    by: str = Field(description="Who moved it.")
    intent: str | None = Field(default=None, description="Id of the audit intent written before this swap.")


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
    principal: str | None = Field(default=None, description="The authenticated principal that wrote the event.")
    intent: str | None = Field(default=None, description="The intent an alias move opens, completes or abandons.")
    seq: int | None = Field(default=None, description="Position in the audit chain (set by append_audit).")
    prev: str | None = Field(default=None, description="sha256 of the previous chained event (set by append_audit).")

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
    if not isinstance(value, str) or not pattern.fullmatch(value):
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
    policy, sep, n = version.rpartition("/") if isinstance(version, str) else ("", "", "")
    if not sep or not _VERSION_N.fullmatch(n):
        raise ValueError(f"invalid version {version!r}: expected '<policy>/<n>'")
    return _check_name("policy", policy), int(n)


def _version_numbers(store: ArtifactStore, policy: str) -> list[int]:
    names = (key.rsplit("/", 1)[-1] for key in store.list(_versions_prefix(policy)))
    return sorted(int(m.group(1)) for name in names if (m := _VERSION_FILE.fullmatch(name)))


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
    policy_file: bytes | None = None,
    principal: Principal | str | None = None,
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
        by: Who registers it (a display name).
        policy_file: The bytes of the policy file the run used; stored create-only under ``policies/<sha256>.yaml``
            and named by ``lineage["policy_digest"]``. Approval rules are read back from it; a version registered
            without one cannot be approved.
        principal: The authenticated principal registering it (default: this process's, ``registry.principal``);
            the two-person rule compares approvers with it.

    Returns:
        The written record. An MLflow failure afterwards is logged, not raised (see the module docstring).

    Raises:
        ValueError: When the model is not published in the store, or the policy file is not the one the lineage
            names.
    """
    if not _DIGEST.fullmatch(model_digest) or not store.exists(f"models/{model_digest}"):
        raise ValueError(f"model {model_digest!r} is not published in {store.uri}/models: publish it first")
    if policy_file is not None:
        digest = store_policy_file(store, policy_file)
        if lineage.get("policy_digest") not in (None, digest):
            raise ValueError(
                f"the policy file given ({digest[:12]}) is not the one the run used ({lineage['policy_digest'][:12]}):"
                " it changed during the run; run again"
            )
        lineage = {**lineage, "policy_digest": digest}
    principal = principal if principal is not None else principal_for(store.uri)
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
        "created_principal": str(principal),
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
            "principal": str(principal),
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


def _policy_key(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid policy digest {digest!r}")
    return f"policies/{digest}.yaml"


def store_policy_file(store: ArtifactStore, data: bytes) -> str:
    """Keep a policy file create-only under ``policies/<sha256>.yaml``; returns its digest.

    Raises:
        StoreError: When the stored file under that digest holds other bytes (it was changed).
    """
    digest = sha256_bytes(data)
    if not store.create_only(_policy_key(digest), data):
        read_policy_file(store, digest)  # the same bytes by definition, unless someone rewrote them
    return digest


def read_policy_file(store: ArtifactStore, digest: str) -> bytes:
    """The policy file stored at registration under ``digest``, checked against it.

    Raises:
        FileNotFoundError: When no policy file with that digest is stored.
        StoreError: When the stored bytes no longer hash to the digest.
    """
    key = _policy_key(digest)
    try:
        data = store.read_bytes(key)
    except FileNotFoundError:
        raise FileNotFoundError(f"no policy file {digest} in {store.uri_for('policies')}") from None
    if sha256_bytes(data) != digest:
        raise StoreError(f"{store.uri_for(key)} was modified: its bytes hash to {sha256_bytes(data)}, not {digest}")
    return data


def mlflow_version_of(store: ArtifactStore, version: str) -> str | None:
    """The MLflow model version number mirroring a harmguard version, None when it was never mirrored."""
    policy, n = parse_version(version)
    try:
        return str(json.loads(store.read_bytes(f"{_versions_prefix(policy)}/{n}.mlflow.json"))["mlflow_version"])
    except FileNotFoundError:
        return None


def mirror_version(store: ArtifactStore, settings: Settings, record: VersionRecord) -> str:
    """Mirror a version into MLflow (idempotent) and record the MLflow version number create-only.

    The MLflow model version's source is the version's MLflow model folder (``registry.mlflow_model``: an
    ``MLmodel`` whose pyfunc flavor loads through harmguard), never ``models/<digest>/``, which stays exactly its
    digest's files; its ``model_uri`` tag names the model folder.

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
    # MLflow loads a version from a folder with an MLmodel; the model's own folder stays exactly its digest's files.
    source = write_mlflow_model(store, record)
    client = tracking.mlflow_client(uri)
    tags = {
        **record.lineage,
        "harmguard_version": record.version,
        "model_digest": record.model_digest,
        "model_uri": record.model_uri,
        "thresholds_version": record.thresholds_version,
        "blessed": record.blessed,
    }
    with tracking.mlflow_lock(uri):
        tracking.ensure_registered_model(client, record.policy)
        # A version created by an earlier attempt whose mapping write failed is reused, not duplicated.
        mlflow_version = tracking.find_model_version(client, record.policy, record.version)
        if mlflow_version is None:
            mlflow_version = tracking.create_model_version(client, record.policy, source, record.mlflow_run_id, tags)
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
    extra: dict[str, Any] | None = None,
) -> AliasPointer:
    """Move an alias by compare-and-swap, between an ``intent`` audit event and the move's own, then mirror it.

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
        extra: More fields for the completing audit event (e.g. the approval a promotion relied on).

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
    intent = uuid.uuid4().hex
    pointer = AliasPointer(
        version=to_version,
        model_digest=target.model_digest if target else None,
        thresholds_version=target.thresholds_version if target else None,
        previous=current_version,
        updated_at=_now(),
        by=by,
        intent=intent,
    )
    fields = {
        "who": by,
        "why": reason,
        "version": to_version,
        "model_digest": pointer.model_digest,
        "blessing_digest": target.blessing_digest if target else None,
        "thresholds_version": pointer.thresholds_version,
        "alias": alias,
        "from": current_version,
        "to": to_version,
        "intent": intent,
    }
    # Written first: a crash between the swap and the completing event leaves this intent open, which status shows.
    append_audit(store, policy, {**fields, "event": "intent", "action": event})
    try:
        store.compare_and_swap(key, _dump(pointer), token)
    except LostRace:
        winner, _ = _load_pointer(store, key)
        append_audit(
            store, policy, {**fields, "event": "abandon", "why": f"lost the race: {_describe(policy, alias, winner)}"}
        )
        raise LostRace(f"{_describe(policy, alias, winner)}: it moved while this move was in flight") from None
    append_audit(store, policy, {**(extra or {}), **fields, "event": event})
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


def _audit_prefix(policy: str) -> str:
    return f"registry/{_check_name('policy', policy)}/audit"


def _chain_key(policy: str, seq: int) -> str:
    return f"{_audit_prefix(policy)}/chain/{seq:012d}.json"


def _read_head(store: ArtifactStore, policy: str) -> tuple[int, str, str | None]:
    """``(seq, sha256 of that event, CAS token)`` of the chain head; ``(0, GENESIS, None)`` before the first event."""
    data, token = store.read_versioned(f"{_audit_prefix(policy)}/head.json")
    if data is None:
        return 0, GENESIS, None
    head = json.loads(data)
    return int(head["seq"]), str(head["sha256"]), token


def _advance_head(store: ArtifactStore, policy: str, seq: int, digest: str, token: str | None) -> None:
    """Move the head to ``seq`` from the head read with ``token``; a lost race means another writer moved it."""
    doc = {"seq": seq, "sha256": digest, "key": _chain_key(policy, seq), "updated_at": _now()}
    try:
        store.compare_and_swap(f"{_audit_prefix(policy)}/head.json", _dump(doc), token)
    except LostRace:
        pass


def append_audit(store: ArtifactStore, policy: str, event: dict[str, Any]) -> str:
    """Append one event to the policy's audit chain: create-only at ``head + 1``, then the head moves by CAS.

    Args:
        store: The artifact store.
        policy: Policy name.
        event: At least ``event`` and ``who``; see ``AuditEvent`` for the other fields. ``principal`` defaults to
            this process's (``registry.principal``); ``seq`` and ``prev`` are set here.

    Returns:
        The key of the written object.

    Raises:
        AuditChainBroken: When the event holding the next number does not follow the head (the log was tampered).
    """
    fields = {k: v for k, v in event.items() if k not in ("seq", "prev")}
    fields.setdefault("principal", str(principal_for(store.uri)))
    record = AuditEvent.model_validate({**fields, "policy": policy})
    for _ in range(_MAX_ALLOCATION_ATTEMPTS):
        head_seq, head_digest, token = _read_head(store, policy)
        seq = head_seq + 1
        key = _chain_key(policy, seq)
        data = _dump(record.model_copy(update={"seq": seq, "prev": head_digest}))
        if store.create_only(key, data):
            _advance_head(store, policy, seq, sha256_bytes(data), token)
            return key
        # The number is taken by a writer between its event and its head swap, or one that crashed there: the
        # event must follow the head; then the head moves forward for it and this writer takes the next number.
        taken = store.read_bytes(key)
        try:
            follows = json.loads(taken).get("prev") == head_digest
        except ValueError:
            follows = False
        if not follows:
            raise AuditChainBroken(
                f"audit event {key} does not follow event {head_seq} of {policy}: the audit log was changed; "
                "see `harmguard status`"
            )
        _advance_head(store, policy, seq, sha256_bytes(taken), token)
    raise StoreError(f"could not append to the audit log of {policy} after {_MAX_ALLOCATION_ATTEMPTS} tries")


def _chain_entries(store: ArtifactStore, policy: str) -> list[tuple[int, str]]:
    prefix = f"{_audit_prefix(policy)}/chain/"
    entries = []
    for key in store.list(prefix.rstrip("/")):
        m = _CHAIN_FILE.fullmatch(key.removeprefix(prefix))
        if m:
            entries.append((int(m.group(1)), key))
    return sorted(entries)


def _legacy_keys(store: ArtifactStore, policy: str) -> list[str]:
    """Events written before the chain: ``audit/<UTC time>-<uuid>.json`` (time order is all they have)."""
    prefix = f"{_audit_prefix(policy)}/"
    rest = ((key, key.removeprefix(prefix)) for key in store.list(prefix.rstrip("/")))
    return sorted(key for key, name in rest if "/" not in name and name.endswith(".json") and name != "head.json")


def read_audit(store: ArtifactStore, policy: str) -> list[dict[str, Any]]:
    """The policy's audit events in order: events from before the chain by time, then the chain by number."""
    keys = _legacy_keys(store, policy) + [key for _, key in _chain_entries(store, policy)]
    return [json.loads(store.read_bytes(key)) for key in keys]


def verify_audit(store: ArtifactStore, policy: str) -> list[str]:
    """What is wrong with the policy's audit chain (empty when it holds).

    Finds a changed event (the next event's ``prev`` or the head's digest no longer matches it), a removed one (a gap
    in the numbers, or a head past the last event), a renumbered one, and a head without events. A head one or more
    events behind the chain is not a problem: a writer is between its event and its head swap, or crashed there, and
    the next append moves the head on.
    """
    problems: list[str] = []
    entries = _chain_entries(store, policy)
    digests: dict[int, str] = {}
    expected = 1
    for seq, key in entries:
        if seq != expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
            problems.append(f"audit event(s) {missing} of {policy} are missing: removed from the log")
        expected = seq + 1
        data = store.read_bytes(key)
        digests[seq] = sha256_bytes(data)
        try:
            doc = json.loads(data)
        except ValueError:
            problems.append(f"audit event {seq} of {policy} is not JSON: it was changed")
            continue
        if doc.get("seq") != seq:
            problems.append(f"audit event {seq} of {policy} says it is event {doc.get('seq')}: it was moved")
        before = GENESIS if seq == 1 else digests.get(seq - 1)
        if before is not None and doc.get("prev") != before:
            problems.append(
                f"audit event {seq - 1} of {policy} was changed or replaced (event {seq} does not follow it)"
            )
    head_seq, head_digest, token = _read_head(store, policy)
    last = entries[-1][0] if entries else 0
    if token is None and entries:
        problems.append(f"the audit head of {policy} is missing while {len(entries)} events exist")
    elif head_seq > last:
        problems.append(f"audit events {last + 1}-{head_seq} of {policy} are missing: the head names event {head_seq}")
    elif head_seq and digests.get(head_seq) not in (None, head_digest):
        problems.append(f"audit event {head_seq} of {policy} was changed (it no longer matches the head)")
    return problems


def unfinished_moves(store: ArtifactStore, policy: str, events: list[dict[str, Any]] | None = None) -> list[str]:
    """Alias moves whose ``intent`` has no completing (or ``abandon``) event: in flight, or crashed mid-way."""
    events = read_audit(store, policy) if events is None else events
    closed = {e.get("intent") for e in events if e.get("event") != "intent" and e.get("intent")}
    found = []
    for e in events:
        if e.get("event") != "intent" or e.get("intent") in closed:
            continue
        alias = str(e.get("alias"))
        pointer, _ = read_alias(store, policy, alias) if e.get("alias") else (None, None)
        happened = pointer is not None and pointer.intent == e.get("intent")
        state = (
            f"the swap happened (the pointer names this intent) but its {e.get('action')} event is missing"
            if happened
            else "the swap did not happen or was overtaken"
        )
        found.append(
            f"{e.get('action')} of {alias} {e.get('from') or '–'} → {e.get('to') or '–'} by {e.get('who')} "
            f"(intent {str(e.get('intent'))[:12]}, event {e.get('seq')}) has no completion: {state}; "
            "in flight, or it crashed between the swap and the audit write"
        )
    return found


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
        ``{"policies": {policy: {"champion", "challenger", "pending", "mismatches", "unfinished", "audit"}}}``.
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
            # beyond CONTRACTS.md: alias moves left open by a crash, and a broken audit chain
            "unfinished": unfinished_moves(store, policy),
            "audit": verify_audit(store, policy),
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
