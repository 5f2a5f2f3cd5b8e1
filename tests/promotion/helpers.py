"""Helpers for the approval and promotion tests: a small real model and versions registered at the library level."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from harmguard.promotion.golden import measure_golden
from harmguard.registry import VersionRecord, register_version
from harmguard.settings import Settings
from harmguard.storage import ArtifactStore

GOLDEN = Path(str(resources.files("harmguard.golden") / "sms_spam.jsonl"))
THRESHOLDS = {"spam": 0.5}


def policy_file(*, allow_self_approval: bool = False, ttl_hours: float = 24) -> bytes:
    """The shipped sms_spam policy with these approval settings: what a run of it records at registration."""
    shipped = (resources.files("harmguard.policies") / "sms_spam.yaml").read_bytes()
    return (
        shipped
        + f"\nallow_self_approval: {str(allow_self_approval).lower()}\napproval_ttl_hours: {ttl_hours}\n".encode()
    )


def train_spam_model(folder: Path, cache: Path, mirror: Path, rows: int = 1000) -> Path:
    """Fit the baseline on a stable sample of sms_spam (seconds) and export it to ``folder``."""
    from harmguard.data.datasets import load_dataset
    from harmguard.models.baseline import train_baseline
    from harmguard.policy import load_policy

    policy = load_policy("sms_spam")
    settings = Settings(
        home=str(folder.parent / "unused-home"), cache=cache, data_mirror=mirror, mlflow_tracking_uri=""
    )
    raw = load_dataset("sms_spam", settings).drop_duplicates("text").head(rows)
    labels = np.array([policy.classes.index("spam" if v == "spam" else "none") for v in raw["label"]])
    train_baseline(raw["text"].tolist(), labels, policy, seed=0).save(folder)
    return folder


def register(
    store: ArtifactStore,
    settings: Settings,
    policy_name: str,
    digest: str,
    *,
    blessed: bool = True,
    by: str = "trainer",
    champion: VersionRecord | None = None,
    thresholds: dict[str, float] | None = None,
    golden: dict[str, Any] | None = None,
    policy: bytes | None = None,
    principal: str | None = None,
) -> VersionRecord:
    """Register a version of a published model with a blessing that compared it against ``champion``.

    The registering principal is ``principal`` or ``test:<by>`` (a stand-in for the login of whoever ran training),
    and the policy file recorded with it is ``policy`` (default: sms_spam with a 24 h TTL, no self-approval).
    """
    thresholds = thresholds or THRESHOLDS
    blessing = {
        "blessed": blessed,
        "reasons": ["all gate checks passed"] if blessed else ["f1 below gate"],
        "champion": {"version": champion.version, "model_digest": champion.model_digest} if champion else None,
    }
    return register_version(
        store,
        settings,
        policy=policy_name,
        model_digest=digest,
        thresholds=thresholds,
        blessing=blessing,
        metrics={"golden": golden},
        lineage={"data_version": "d" * 64},
        run_id="r1",
        mlflow_run_id=None,
        family="baseline",
        by=by,
        policy_file=policy if policy is not None else policy_file(),
        principal=principal or f"test:{by}",
    )


def golden_of(model_dir: Path, thresholds: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The registration-time golden measurement of an exported model."""
    from harmguard.models.loading import load_model

    return measure_golden(load_model(model_dir), "sms_spam", thresholds or THRESHOLDS, GOLDEN)


def promote_worker(store: ArtifactStore, settings: Settings, version: str, start: Any, out: Any) -> None:
    """A racer of the concurrency test (lives here, not in the test module, so spawned children import less)."""
    from harmguard.promotion.promote import PromotionRefused, promote_version

    start.wait()
    try:
        promote_version(
            store,
            settings,
            version,
            by="releaser",
            run_id=f"race-{version.replace('/', '-')}",
            golden_path=GOLDEN,
        )
        out.put((version, "won", ""))
    except PromotionRefused as e:
        out.put((version, "lost", str(e)))
    except Exception as e:  # reported to the parent, which fails the test with it
        out.put((version, "error", repr(e)))


def race_champion_move(
    store: ArtifactStore, settings: Settings, policy: str, to_version: str, start: Any, out: Any
) -> None:
    """One racer (a spawned process): after the barrier, move champion from unset to ``to_version``; report on out."""
    from harmguard.registry import move_alias
    from harmguard.storage import LostRace

    start.wait()
    try:
        move_alias(
            store,
            settings,
            policy=policy,
            alias="champion",
            to_version=to_version,
            expected_version=None,
            by=f"racer-{to_version}",
            reason="race",
        )
        out.put((to_version, "won", ""))
    except LostRace as e:
        out.put((to_version, "lost", str(e)))
    except Exception as e:  # reported to the parent, which fails the test with it
        out.put((to_version, "error", repr(e)))
