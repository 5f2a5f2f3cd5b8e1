"""The baseline: TF-IDF over word and character n-grams, then logistic regression.

Exported as plain files: `model.json` (settings, classes), `vocab_word.json` / `vocab_char.json` (terms in column
order) and `.npy` arrays (idf weights, coefficients, intercepts) read with ``allow_pickle=False``. Scoring rebuilds
TF-IDF from these arrays with the same arithmetic as scikit-learn's ``TfidfVectorizer`` (counts, 1 + log tf,
times idf, L2 row norm), so a loaded model needs no fitted scikit-learn object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from harmguard.models.base import ModelError, augment_copies, predict_by_window, prepare_text
from harmguard.policy import BaselineSpec, Policy

FORMAT_VERSION = 1


def _analyzer(name: str, spec: BaselineSpec) -> str:
    return "word" if name == "word" else spec.char_analyzer


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class BaselineModel:
    """A fitted TF-IDF + logistic regression classifier, loaded from or exported to plain arrays."""

    family = "baseline"

    def __init__(
        self,
        *,
        label_mode: str,
        classes: list[str],
        categories: list[str],
        spec: BaselineSpec,
        vocab: dict[str, list[str]],
        idf: dict[str, np.ndarray],
        coef: np.ndarray,
        intercept: np.ndarray,
    ) -> None:
        self.label_mode = label_mode
        self.classes = classes
        self.categories = categories
        self.spec = spec
        self.vocab = vocab
        self.idf = idf
        self.coef = coef  # (n_classes, n_features): word features first, then char
        self.intercept = intercept  # (n_classes,)
        self._counters = {
            name: CountVectorizer(
                analyzer=_analyzer(name, spec),
                ngram_range=tuple(spec.word_ngrams if name == "word" else spec.char_ngrams),
                vocabulary={t: i for i, t in enumerate(vocab[name])},
                dtype=np.float64,
            )
            for name in ("word", "char")
        }

    def featurize(self, texts: list[str]) -> sp.csr_matrix:
        """TF-IDF features, shape (n_texts, n_word + n_char)."""
        spec = self.spec
        if spec.preprocess or spec.canonical or spec.identity_terms:
            texts = [prepare_text(t, preprocess=spec.preprocess, canonical=spec.canonical,
                                  identity_terms=spec.identity_terms) for t in texts]  # fmt: skip
        blocks = []
        for name in ("word", "char"):
            x = self._counters[name].transform(texts).tocsr()
            if self.spec.sublinear_tf:
                np.log(x.data, out=x.data)
                x.data += 1.0
            x = x @ sp.diags(self.idf[name])
            blocks.append(normalize(x, norm="l2", copy=False))
        return sp.hstack(blocks, format="csr")

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, shape (n_texts, n_classes); long texts by window when the spec says so."""
        return predict_by_window(self, self._proba, list(texts))

    def _proba(self, texts: list[str]) -> np.ndarray:
        logits = self.featurize(texts) @ self.coef.T + self.intercept
        return _softmax(logits) if self.label_mode == "exclusive" else _sigmoid(logits)

    def save(self, directory: Path) -> None:
        """Export as JSON and .npy files."""
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "family": self.family,
            "format_version": FORMAT_VERSION,
            "label_mode": self.label_mode,
            "classes": self.classes,
            "categories": self.categories,
            "baseline": self.spec.model_dump(mode="json"),
        }
        (directory / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        for name in ("word", "char"):
            (directory / f"vocab_{name}.json").write_text(json.dumps(self.vocab[name], ensure_ascii=False))
            np.save(directory / f"idf_{name}.npy", self.idf[name].astype(np.float64), allow_pickle=False)
        np.save(directory / "coef.npy", self.coef.astype(np.float64), allow_pickle=False)
        np.save(directory / "intercept.npy", self.intercept.astype(np.float64), allow_pickle=False)

    @classmethod
    def load(cls, directory: Path) -> BaselineModel:
        """Load an exported baseline."""
        try:
            meta = json.loads((directory / "model.json").read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ModelError(f"{directory}: baseline format {meta.get('format_version')} is not supported")
            vocab = {n: json.loads((directory / f"vocab_{n}.json").read_text()) for n in ("word", "char")}
            idf = {n: np.load(directory / f"idf_{n}.npy", allow_pickle=False) for n in ("word", "char")}
            coef = np.load(directory / "coef.npy", allow_pickle=False)
            intercept = np.load(directory / "intercept.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{directory}: cannot load baseline model: {e}") from e
        n_features = len(vocab["word"]) + len(vocab["char"])
        if coef.shape != (len(meta["classes"]), n_features) or intercept.shape != (len(meta["classes"]),):
            raise ModelError(f"{directory}: array shapes do not match the vocabulary and classes")
        return cls(
            label_mode=meta["label_mode"],
            classes=meta["classes"],
            categories=meta["categories"],
            spec=BaselineSpec.model_validate(meta["baseline"]),
            vocab=vocab,
            idf=idf,
            coef=coef,
            intercept=intercept,
        )


def _augmented(
    texts: list[str], labels: np.ndarray, weights: np.ndarray | None, spec: BaselineSpec
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """The training rows plus, per ``spec.augment`` perturbation, a rewritten copy of each row it changes."""
    if not spec.augment:
        return texts, labels, weights
    rows, copies = augment_copies(texts, list(spec.augment), rate=spec.augment_rate, seed=spec.augment_seed)
    idx = np.asarray(rows, dtype=np.int64)
    out_weights = np.concatenate([weights, weights[idx]]) if weights is not None else None
    return texts + copies, np.concatenate([labels, labels[idx]]), out_weights


def _fit_vectorizer(name: str, spec: BaselineSpec, texts: list[str]) -> tuple[TfidfVectorizer, sp.csr_matrix]:
    vec = TfidfVectorizer(
        analyzer=_analyzer(name, spec),
        ngram_range=tuple(spec.word_ngrams if name == "word" else spec.char_ngrams),
        min_df=spec.min_df,
        max_features=spec.max_features,
        sublinear_tf=spec.sublinear_tf,
        dtype=np.float64,
    )
    return vec, vec.fit_transform(texts)


def train_baseline(
    texts: list[str], labels: np.ndarray, policy: Policy, *, seed: int = 0, weights: np.ndarray | None = None
) -> BaselineModel:
    """Fit the baseline.

    Args:
        texts: Training texts.
        labels: Exclusive: class indices into ``policy.classes``, shape (n,). Multilabel: 0/1, shape (n, n_cat), -1
            where a decision left the category unlabelled (masked: that row does not fit that category).
        policy: The policy (label mode, classes, hyperparameters).
        seed: Random seed of the solver.
        weights: Per-row sample weights (e.g. imported decisions weighing more than dataset rows); None: all 1.

    Returns:
        The fitted model.
    """
    spec = policy.baseline
    texts, labels, weights = _augmented(list(texts), labels, weights, spec)
    if spec.preprocess or spec.canonical or spec.identity_terms:
        texts = [prepare_text(t, preprocess=spec.preprocess, canonical=spec.canonical,
                              identity_terms=spec.identity_terms) for t in texts]  # fmt: skip
    vocab: dict[str, list[str]] = {}
    idf: dict[str, np.ndarray] = {}
    blocks = []
    for name in ("word", "char"):
        vec, x = _fit_vectorizer(name, spec, texts)
        terms = np.empty(len(vec.vocabulary_), dtype=object)
        for term, i in vec.vocabulary_.items():
            terms[i] = term
        vocab[name] = terms.tolist()
        idf[name] = vec.idf_
        blocks.append(x)
    x = sp.hstack(blocks, format="csr")
    n_classes = len(policy.classes)
    coef = np.zeros((n_classes, x.shape[1]))
    intercept = np.zeros(n_classes)

    def fit(y: np.ndarray, rows: np.ndarray | None = None) -> LogisticRegression:
        values, counts = np.unique(y, return_counts=True)
        # Partial balancing: full 'balanced' weights buy minority recall with majority precision (on davidson2017
        # it lowers weighted F1 below the unweighted model); a power below 1 trades between the two.
        per_class = (len(y) / (len(values) * counts)) ** spec.class_weight_power
        clf = LogisticRegression(
            C=spec.C,
            max_iter=spec.max_iter,
            class_weight=dict(zip(values.tolist(), per_class.tolist(), strict=True)),
            random_state=seed,
            solver="lbfgs",
        )
        w = weights if rows is None or weights is None else weights[rows]
        return clf.fit(x if rows is None else x[rows], y, sample_weight=w)

    if policy.label_mode == "exclusive":
        present = np.unique(labels)
        if len(present) < 2:
            raise ValueError("training data has fewer than two classes")
        clf = fit(labels)
        # Classes missing from the training data get a logit of -1e4: a probability of 0, never predicted.
        intercept[np.setdiff1d(np.arange(n_classes), clf.classes_)] = -1e4
        if len(clf.classes_) == 2:
            # Binary logistic regression has one logit; as two-class logits [0, z] its softmax is the sigmoid.
            coef[clf.classes_[1]] = clf.coef_[0]
            intercept[clf.classes_[1]] = clf.intercept_[0]
        else:
            coef[clf.classes_] = clf.coef_
            intercept[clf.classes_] = clf.intercept_
    else:
        for j in range(n_classes):
            known = labels[:, j] >= 0  # -1: the decision left this category unlabelled; not guessed, not fitted
            y = labels[known, j]
            if len(np.unique(y)) < 2:
                raise ValueError(f"training data has one value only for category {policy.classes[j]!r}")
            clf = fit(y, known)
            coef[j] = clf.coef_[0]
            intercept[j] = clf.intercept_[0]
    return BaselineModel(
        label_mode=policy.label_mode,
        classes=policy.classes,
        categories=policy.categories,
        spec=spec,
        vocab=vocab,
        idf=idf,
        coef=coef,
        intercept=intercept,
    )
