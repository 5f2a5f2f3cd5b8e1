"""Model families. Every exported model is a folder with `model.json` naming its family; `load_model` dispatches."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harmguard.canonical import canonicalize
from harmguard.identity import abstract_identities
from harmguard.perturbations import perturb_texts
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


def prepare_text(text: str, *, preprocess: bool, canonical: int, identity_terms: list[str] | None = None) -> str:
    """The text a model reads, at training and at scoring alike.

    The cleanup when ``preprocess``, canonicalization ``canonical`` (0: none), then ``identity_terms`` abstracted to
    one token (``harmguard.identity``). One function for both families and every caller (training, serving, batch,
    evaluation): a model reads the same form of a text everywhere.
    """
    if preprocess:
        text = preprocess_text(text)
    if canonical:
        text = canonicalize(text, canonical)
    return abstract_identities(text, identity_terms) if identity_terms else text


def augment_copies(texts: list[str], augment: list[str], *, rate: float, seed: int) -> tuple[list[int], list[str]]:
    """Training copies for both families: per perturbation in ``augment``, a rewrite of each row it changes.

    Returns the source row of each copy (its label and weight are the row's) and the copies, in perturbation order.
    """
    rows: list[int] = []
    copies: list[str] = []
    for name in augment:
        rewritten, changed = perturb_texts(texts, name, word_rate=rate, seed=seed)
        changed_rows = np.flatnonzero(changed).tolist()
        rows += changed_rows
        copies += [rewritten[i] for i in changed_rows]
    return rows, copies


def text_windows(text: str, size: int, stride: int = 0, cap: int = 16) -> list[str]:
    """Overlapping windows of ``size`` words covering ``text`` (the text itself when it is not longer).

    Windows start every ``stride`` words (0: half a window) and the last one ends at the text's end; when that
    makes more than ``cap``, ``cap`` windows are spread evenly from the first to the last.
    """
    words = text.split()
    if size <= 0 or len(words) <= size:
        return [text]
    step = stride or max(1, size // 2)
    starts = list(range(0, len(words) - size + 1, step))
    if starts[-1] != len(words) - size:
        starts.append(len(words) - size)
    if len(starts) > cap:
        picks = np.unique(np.linspace(0, len(starts) - 1, cap).round().astype(int))
        starts = [starts[i] for i in picks]
    return [" ".join(words[s : s + size]) for s in starts]


def windowed_proba(
    score: Callable[[list[str]], np.ndarray],
    texts: list[str],
    *,
    size: int,
    stride: int,
    cap: int,
    none_index: int | None,
) -> np.ndarray:
    """``score`` over each text's windows, each class's highest value per text (see ``text_windows``).

    Exclusive models (``none_index`` given): the none class gets what the categories leave, at least 0, so a
    text is as harmful as its most harmful window. Texts that fit in one window are scored as they are.
    """
    pieces: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        windows = text_windows(text, size, stride, cap)
        pieces += windows
        owner += [i] * len(windows)
    if len(pieces) == len(texts):
        return score(texts)
    proba = np.asarray(score(pieces), dtype=np.float64)
    out = np.full((len(texts), proba.shape[1]), -np.inf)
    np.maximum.at(out, np.asarray(owner), proba)
    if none_index is not None:
        others = np.delete(out, none_index, axis=1)
        out[:, none_index] = np.clip(1.0 - others.sum(axis=1), 0.0, 1.0)
        single = np.bincount(owner, minlength=len(texts)) == 1
        out[single] = proba[np.searchsorted(owner, np.flatnonzero(single))]  # one window: its own probabilities
    return out


def none_index(classes: list[str], categories: list[str]) -> int | None:
    """Index of an exclusive model's none class (the class that is no category); None for multilabel models."""
    rest = [i for i, c in enumerate(classes) if c not in categories]
    return rest[0] if rest else None


def predict_by_window(model: Any, proba: Callable[[list[str]], np.ndarray], texts: list[str]) -> np.ndarray:
    """``proba`` over ``texts``, window by window when the model's spec asks for it (``window_words``)."""
    spec = model.spec
    if not spec.window_words:
        return proba(texts)
    return windowed_proba(
        proba, texts, size=spec.window_words, stride=spec.window_stride, cap=spec.max_windows,
        none_index=none_index(model.classes, model.categories),
    )  # fmt: skip
