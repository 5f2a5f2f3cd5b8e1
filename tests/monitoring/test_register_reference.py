"""The register step stores the model's reference beside the version (the one-line call in steps.training)."""

from __future__ import annotations

import json

from harmguard.digests import thresholds_version
from harmguard.monitoring.reference import read_reference, reference_key
from harmguard.steps.training import register_step


def test_registering_a_model_stores_its_reference(champion, tmp_path, monkeypatch):
    store, settings = champion["store"], champion["settings"]
    store.path(reference_key("sms_spam", champion["digest"])).unlink()
    for var, value in {"HARMGUARD_HOME": settings.home, "HARMGUARD_CACHE": str(settings.cache),
                       "HARMGUARD_DATA_MIRROR": str(settings.data_mirror),
                       "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    thresholds = champion["thresholds"]
    blessing = {
        "blessed": True, "reasons": ["every gate check passed"], "model_digest": champion["digest"],
        "thresholds": thresholds, "thresholds_version": thresholds_version(thresholds),
        "lineage": {"data_version": champion["data_version"]},
    }  # fmt: skip
    path = tmp_path / "blessing.json"
    path.write_text(json.dumps(blessing))
    version = register_step("sms_spam", str(champion["export"]), str(path), "register-ref", "test", 0, "baseline")
    assert version == "sms_spam/2"
    ref = read_reference(store, "sms_spam", champion["digest"])
    assert ref is not None and ref.data_version == champion["data_version"] and ref.thresholds == thresholds
