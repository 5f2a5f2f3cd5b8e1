"""Model families. Every exported model is a folder with `model.json` naming its family; `load_model` dispatches."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from harmguard.text import MENTION, URL


class ModelError(ValueError):
    """An exported model folder is missing, unreadable or of an unknown family."""


class Classifier(Protocol):
    """What evaluation, serving and batch scoring need from any model family."""

    family: str
    label_mode: str
    classes: list[str]
    categories: list[str]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, shape (n_texts, n_classes): a softmax row (exclusive) or independent sigmoids."""
        ...

    def save(self, directory: Path) -> None:
        """Export to a folder of plain files (no pickle)."""
        ...


def category_scores(model: Classifier, proba: np.ndarray) -> np.ndarray:
    """One score per category, shape (n, n_categories): the category columns of ``proba`` in category order."""
    idx = [model.classes.index(c) for c in model.categories]
    return proba[:, idx]


def read_model_meta(directory: str | Path) -> dict:
    """Read `model.json` of an exported model."""
    path = Path(directory) / "model.json"
    if not path.is_file():
        raise ModelError(f"{directory} is not an exported harmguard model (no model.json)")
    return json.loads(path.read_text())


def preprocess_text(text: str) -> str:
    """Model-side cleanup: HTML entities unescaped, URLs and @mentions replaced by placeholder tokens."""
    return MENTION.sub(" MENTIONHERE ", URL.sub(" URLHERE ", html.unescape(text)))
