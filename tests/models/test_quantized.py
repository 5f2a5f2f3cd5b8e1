"""The transformer's int8 path: exported with the model, covered by its digest, loaded and scored by the normal loader.

The backbone is a randomly initialized 2-layer BERT (hidden size 32) with the packaged MiniLM tokenizer, built here
(no pretrained weights): quantization error depends on the weights' spread, not on whether they were trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harmguard.digests import model_digest, thresholds_version
from harmguard.models.base import ModelError
from harmguard.models.loading import ModelDigestMismatch, ModelSpec, load_model, load_spec
from harmguard.models.transformer import (
    INT8_FILE,
    TransformerModel,
    build_classifier,
    int8_layer_names,
    load_tokenizer,
)
from harmguard.policy import TransformerSpec
from harmguard.training.ray_train import TrainOutcome, load_outcome_model

CLASSES = ["hate", "offensive", "neither"]
CATEGORIES = ["hate", "offensive"]
TEXTS = [
    "WINNER!! Claim your free prize now, call 09061701461",
    "Are we still meeting for lunch at 1?",
    "you are all idiots and I hope you know it",
    "a much longer text that goes on and on about the weather, the match last night and what we will cook " * 3,
    "ok",
]


def _model(backbone: Path, quantize: str) -> TransformerModel:
    import torch

    torch.manual_seed(1)  # the same head for both precisions
    spec = TransformerSpec(backbone=str(backbone), max_length=48, quantize=quantize)  # type: ignore[arg-type]
    classifier = build_classifier(str(backbone), CLASSES, "exclusive")
    with torch.no_grad():
        classifier.classifier.weight.normal_(0.0, 1.0)  # a head with a trained model's spread: scores far from 1/3
    return TransformerModel(
        model=classifier,
        tokenizer=load_tokenizer(str(backbone)),
        label_mode="exclusive",
        classes=CLASSES,
        categories=CATEGORIES,
        spec=spec,
    )


@pytest.fixture(scope="module")
def exported(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TransformerModel, Path]:
    model = _model(tiny_backbone, "int8")
    folder = tmp_path_factory.mktemp("int8-model")
    model.save(folder)
    return model, folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _spec(folder: Path, digest: str) -> ModelSpec:
    thresholds = dict.fromkeys(CATEGORIES, 0.5)
    return ModelSpec(
        version="davidson2017/1",
        model_uri=str(folder),
        model_digest=digest,
        thresholds=thresholds,
        thresholds_version=thresholds_version(thresholds),
    )


def _int8_layers(model: TransformerModel) -> list[str]:
    return [name for name, module in model.runtime.named_modules() if type(module).__name__ == "Int8Linear"]


def test_int8_export_holds_every_encoder_linear_layer(exported: tuple[TransformerModel, Path]) -> None:
    from safetensors.torch import load_file

    model, folder = exported
    meta = json.loads((folder / "model.json").read_text())
    assert meta["transformer"]["quantize"] == "int8"
    tensors = load_file(str(folder / INT8_FILE))
    names = int8_layer_names(model.model)
    assert len(names) == 2 * 6  # per layer: query, key, value, attention output, intermediate, output
    assert set(tensors) == {f"{n}.{part}" for n in names for part in ("weight", "scale")}
    assert all(tensors[f"{n}.weight"].dtype.itemsize == 1 for n in names)
    assert sorted(_int8_layers(model)) == sorted(names)  # the in-memory model scores with them too


def test_tampered_int8_weights_change_the_digest_and_the_loader_refuses(
    exported: tuple[TransformerModel, Path], tmp_path: Path
) -> None:
    _, folder = exported
    digest = model_digest(folder)
    copy = _copy(folder, tmp_path)
    assert model_digest(copy) == digest
    assert load_spec(_spec(copy, digest), {}).model.family == "transformer"  # the untouched copy verifies
    data = bytearray((copy / INT8_FILE).read_bytes())
    data[-1] ^= 0x01  # the last byte: inside the last tensor's data, the header still parses
    (copy / INT8_FILE).write_bytes(bytes(data))
    assert model_digest(copy) != digest
    with pytest.raises(ModelDigestMismatch, match="refused"):
        load_spec(_spec(copy, digest), {})


def test_loading_scores_with_the_exported_int8_weights_not_a_fresh_quantization(
    exported: tuple[TransformerModel, Path], tmp_path: Path
) -> None:
    """What serves is the file the digest covers: changing its int8 values changes the loaded model's scores."""
    from safetensors.torch import load_file, save_file

    model, folder = exported
    copy = _copy(folder, tmp_path)
    tensors = load_file(str(copy / INT8_FILE))
    for name in int8_layer_names(model.model):
        tensors[f"{name}.scale"] = tensors[f"{name}.scale"] * 50  # the same int8 values, 50 times the weights
    save_file(tensors, str(copy / INT8_FILE))
    honest = load_model(folder).predict_proba(TEXTS)
    flipped = load_model(copy).predict_proba(TEXTS)
    np.testing.assert_allclose(honest, model.predict_proba(TEXTS), atol=1e-6)
    assert np.abs(honest - flipped).max() > 0.01


def test_a_saved_int8_model_loads_and_predicts_through_the_normal_loader(
    exported: tuple[TransformerModel, Path],
) -> None:
    model, folder = exported
    loaded = load_model(folder)
    assert isinstance(loaded, TransformerModel) and loaded.spec.quantize == "int8"
    assert sorted(_int8_layers(loaded)) == sorted(int8_layer_names(loaded.model))
    proba = loaded.predict_proba(TEXTS)
    assert proba.shape == (len(TEXTS), len(CLASSES))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # the evaluated model (in memory, right after training) and the served one (loaded) score alike
    np.testing.assert_allclose(proba, model.predict_proba(TEXTS), atol=1e-6)


def test_int8_scores_are_close_to_float32(tiny_backbone: Path) -> None:
    fp32, int8 = _model(tiny_backbone, "none"), _model(tiny_backbone, "int8")
    assert fp32.int8 is None and not _int8_layers(fp32)
    a, b = fp32.predict_proba(TEXTS), int8.predict_proba(TEXTS)
    assert np.abs(a - b).max() < 0.01
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()


def test_int8_spec_without_the_int8_file_is_refused(exported: tuple[TransformerModel, Path], tmp_path: Path) -> None:
    _, folder = exported
    copy = _copy(folder, tmp_path)
    (copy / INT8_FILE).unlink()
    with pytest.raises(ModelError, match=f"{INT8_FILE} is missing"):
        load_model(copy)


def test_int8_weights_that_do_not_fit_the_model_are_refused(
    exported: tuple[TransformerModel, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    model, folder = exported
    copy = _copy(folder, tmp_path)
    tensors = load_file(str(copy / INT8_FILE))
    name = int8_layer_names(model.model)[0]
    del tensors[f"{name}.scale"]
    save_file(tensors, str(copy / INT8_FILE))
    with pytest.raises(ModelError, match="do not fit the model"):
        load_model(copy)
    tensors[f"{name}.scale"] = -load_file(str(folder / INT8_FILE))[f"{name}.scale"]
    save_file(tensors, str(copy / INT8_FILE))
    with pytest.raises(ModelError, match="positive finite"):
        load_model(copy)
    (copy / INT8_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(copy)


def test_an_int8_file_beside_a_float_spec_is_refused(exported: tuple[TransformerModel, Path], tmp_path: Path) -> None:
    _, folder = exported
    copy = _copy(folder, tmp_path)
    meta = json.loads((copy / "model.json").read_text())
    meta["transformer"]["quantize"] = "none"
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not ask for int8"):
        load_model(copy)


def test_the_trained_model_is_exported_with_int8_when_the_spec_asks(tiny_backbone: Path, tmp_path: Path) -> None:
    """Training's export step (the best checkpoint -> TransformerModel -> save) writes the int8 weights."""
    checkpoint = tmp_path / "best"
    build_classifier(str(tiny_backbone), CLASSES, "exclusive").save_pretrained(checkpoint, safe_serialization=True)
    spec = TransformerSpec(backbone=str(tiny_backbone), quantize="int8")
    config = {
        "spec": spec.model_dump(mode="json"),
        "label_mode": "exclusive",
        "classes": CLASSES,
        "train_texts": TEXTS,
        "val_texts": TEXTS[:2],
    }
    state = {"history": [], "resumes": 0, "best": {}}
    model = load_outcome_model(TrainOutcome(best_checkpoint=checkpoint, state=state), config, CATEGORIES)
    model.save(tmp_path / "export")
    assert (tmp_path / "export" / INT8_FILE).is_file()
    assert load_model(tmp_path / "export").spec.quantize == "int8"
