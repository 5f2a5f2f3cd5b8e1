"""Policies: what a classifier detects, on which data, how it is judged. A new policy is a YAML file, not code."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harmguard.canonical import CANONICAL_VERSION
from harmguard.digests import sha256_bytes
from harmguard.identity import SHIPPED, shipped_terms
from harmguard.vocabulary import (
    AUC_CHANCE,
    CHANGE_METRICS,
    LOWER_IS_BETTER,
    OPERATING_ONLY_METRICS,
    PER_LABEL_METRICS,
    ROC_AUC_METRICS,
    Perturbation,
)

SPLITS = ("train", "validation", "test")


# An approval outlives the review it records by at most this long (30 days): a longer TTL is refused at load.
MAX_APPROVAL_TTL_HOURS = 720.0


class PolicyError(ValueError):
    """A policy cannot be found or is invalid; the message says what to fix."""


class UnknownPolicyError(PolicyError):
    """The name is neither a shipped policy nor a file (a usage error, not a malformed policy)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnMap(_Strict):
    """Which source columns hold what."""

    text: str = Field(default="text", description="Column with the text to classify.")
    label: str | None = Field(default="label", description="Exclusive mode: column with one label per row.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Multilabel mode: category -> column holding 0/1 (or true/false)."
    )
    split: str | None = Field(default="split", description="Optional column with train/validation/test.")
    id: str | None = Field(default=None, description="Optional column with a stable row id, passed through.")
    votes: list[str] = Field(
        default_factory=list, description="Annotator vote-count columns, one per class (agreement check)."
    )
    votes_total: str | None = Field(default=None, description="Column with the number of annotators per row.")
    source: list[str] = Field(default_factory=list, description="Extra columns kept for slicing.")


_SOURCE_FIELDS = ("dataset", "uri", "format", "columns", "label_map")


class DataSource(_Strict):
    """One dataset source of a policy: a named dataset or a path/URI, with its column and label mapping."""

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name in lineage and reports; default: the dataset's name (or `data` for a URI).",
    )
    dataset: str | None = Field(default=None, description="A named dataset (see `harmguard.data.datasets`).")
    uri: str | None = Field(default=None, description="A path or URI (CSV, Parquet, JSONL) instead of a dataset.")
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = Field(
        default=None, description="File format; inferred from the extension when omitted."
    )
    columns: ColumnMap = Field(default_factory=ColumnMap, description="Column mapping.")
    label_map: dict[str, str] = Field(
        default_factory=dict, description="Raw label value -> category (or the none label). Identity when absent."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if not self.dataset and not self.uri:
            raise ValueError("a data source needs `dataset` (a named dataset) or `uri` (a path or URI)")
        return self

    @property
    def label(self) -> str:
        """The source's name in lineage and reports."""
        return self.name or self.dataset or "data"


class LabelsSpec(_Strict):
    """The policy's imported moderation events (``harmguard labels import``) as a source of data."""

    recent_days: int = Field(
        default=14,
        ge=0,
        description="Decisions of the newest this many days before the cutoff form the frozen set `recent`: "
        "gated, never trained on. 0: no recent set (everything is split as the other sources).",
    )
    weight: float = Field(
        default=3.0,
        gt=0,
        description="Baseline training: an imported decision weighs this many dataset rows (it comes from this "
        "platform's own content and reviewers; the datasets come from elsewhere).",
    )
    min_new_labels: int = Field(
        default=200, ge=1, description="`retrain-needed`: new events since the champion's data that make a run due."
    )
    max_conflict_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Validation: largest share of texts in several sources whose labels disagree (human decisions "
        "win; the disagreement is still counted).",
    )
    label_rate_weeks: int = Field(
        default=4, ge=1, description="Validation: trailing weeks the newest week's label rate is compared with."
    )
    label_rate_tolerance: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Validation: largest absolute difference, per category, between the newest week's label rate and "
        "that of its trailing weeks.",
    )


class DataSpec(_Strict):
    """Where the training data comes from: dataset sources and, optionally, the policy's imported labels.

    The one-source shorthand (``dataset``/``uri``, ``columns``, ``label_map`` directly under ``data``) is read as a
    single source.
    """

    sources: list[DataSource] = Field(min_length=1, description="Dataset sources, joined in this order.")
    labels: LabelsSpec | None = Field(
        default=None, description="Join the policy's imported moderation events (human decisions win)."
    )
    dedupe: bool = Field(default=False, description="Keep only the first row of each normalized text.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(k in value for k in _SOURCE_FIELDS):
            if "sources" in value:
                raise ValueError(f"give either `sources` or the one-source shorthand {list(_SOURCE_FIELDS)}, not both")
            value = dict(value)
            value["sources"] = [{k: value.pop(k) for k in _SOURCE_FIELDS if k in value}]
        return value

    @property
    def primary(self) -> DataSource:
        """The first source: its column mapping reads data given with ``--data``."""
        return self.sources[0]

    @property
    def columns(self) -> ColumnMap:
        """The first source's column mapping."""
        return self.primary.columns

    @property
    def label_map(self) -> dict[str, str]:
        """The first source's label mapping."""
        return self.primary.label_map

    @property
    def format(self) -> str | None:
        """The first source's file format."""
        return self.primary.format


class SplitSpec(_Strict):
    """Deterministic hash split."""

    seed: str = Field(default="harmguard-split-v1", description="Salt of sha256(seed + normalized text).")
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1},
        description="Share of each split; must cover train, validation and test and sum to 1.",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(SPLITS) or abs(sum(v.values()) - 1.0) > 1e-9 or min(v.values()) <= 0:
            raise ValueError(f"fractions must give positive shares of {SPLITS} summing to 1, got {v}")
        return v


class ValidationSpec(_Strict):
    """Bounds for the data validation suite."""

    min_rows: int = Field(default=100, ge=1, description="Fewest rows a snapshot may have.")
    min_text_length: int = Field(default=1, ge=1, description="Shortest text allowed (characters).")
    max_text_length: int = Field(default=10_000, ge=1, description="Longest text allowed (characters).")
    max_duplicate_rate: float = Field(
        default=0.05, ge=0, le=1, description="Largest share of rows whose normalized text repeats another row."
    )
    prevalence: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Category -> (min, max) share of rows labelled with it."
    )
    min_agreement: float | None = Field(
        default=None, ge=0, le=1, description="Lowest mean annotator agreement (share voting the majority label)."
    )
    min_split_rows: int = Field(default=10, ge=1, description="Fewest rows in each split.")


class CalibrationTarget(_Strict):
    """How a category's operating threshold is chosen on the validation split."""

    max_fpr: float = Field(default=0.01, gt=0, le=1, description="Highest recall with false-positive rate <= this.")


class _LongTexts(_Strict):
    """How a model reads texts longer than a window (both families; saved with the model)."""

    window_words: int = Field(
        default=0,
        ge=0,
        description="Long texts: score a text longer than this many words in overlapping windows of this many words "
        "and take each category's highest score (abuse after a harmless opening is not diluted or cut off); 0: off.",
    )
    window_stride: int = Field(default=0, ge=0, description="Words between window starts; 0: half a window.")
    max_windows: int = Field(
        default=16, ge=1, description="Most windows per text; a longer text gets windows spread evenly over it."
    )


class _TextPrep(_LongTexts):
    """What a model does to a text before it reads it, and which copies it also trains on (both families)."""

    preprocess: bool = Field(
        default=True, description="Unescape HTML entities and replace URLs and @mentions with placeholder tokens."
    )
    canonical: int = Field(
        default=0,
        ge=0,
        le=CANONICAL_VERSION,
        description="Evasion defence: the version of `harmguard.canonical.canonicalize` applied to every text "
        "(confusables, invisible characters, leetspeak, spaced letters, repeats); 0: none. Saved with the model.",
    )
    augment: list[Perturbation] = Field(
        default_factory=list,
        description="Training: also fit on copies of the train rows rewritten by these evasion perturbations (labels "
        "kept), so the evasion stops working; drawn with `augment_seed`, never the evaluation's evasion seed.",
    )
    augment_rate: float = Field(default=0.3, gt=0, le=1, description="Share of a text's words each copy rewrites.")
    augment_seed: int = Field(default=1, description="Seed of the training copies (differs from `evasion.seed`).")
    identity_terms: list[str] = Field(
        default_factory=list,
        description="Identity-term abstraction: these terms (whole words, any case) read as one token, so the model "
        "decides on what is said about a group, not which group; `harmguard`: the shipped lexicon "
        "(harmguard.identity). Saved with the model.",
    )

    @field_validator("identity_terms", mode="before")
    @classmethod
    def _lexicon(cls, value: Any) -> Any:
        return shipped_terms() if value == SHIPPED else value


class BaselineSpec(_TextPrep):
    """TF-IDF + logistic regression hyperparameters."""

    word_ngrams: tuple[int, int] = Field(default=(1, 2), description="Word n-gram range.")
    char_ngrams: tuple[int, int] = Field(default=(2, 5), description="Character n-gram range.")
    char_analyzer: Literal["char", "char_wb"] = Field(
        default="char", description="`char` (n-grams across word boundaries) or `char_wb` (within words)."
    )
    min_df: int = Field(default=2, ge=1, description="Drop n-grams seen in fewer documents.")
    max_features: int | None = Field(default=200_000, description="Keep this many n-grams per analyzer at most.")
    sublinear_tf: bool = Field(default=True, description="Use 1 + log(tf).")
    C: float = Field(default=10.0, gt=0, description="Inverse regularization strength.")
    class_weight_power: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Class weights (n / (k * n_class)) ** power: 0 unweighted, 1 scikit-learn's 'balanced'.",
    )
    max_iter: int = Field(default=1000, ge=10, description="Solver iterations.")


class TransformerSpec(_TextPrep):
    """Transformer fine-tuning (Ray Train) settings; the CLI overrides any of them for one run."""

    backbone: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Hugging Face encoder: a local folder or hub name (all-MiniLM-L6-v2: the packaged copy).",
    )
    max_length: int = Field(default=64, ge=8, le=4096, description="Longest tokenized input; longer texts are cut.")
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="CPU inference precision: int8 exports per-channel int8 weights of the encoder's linear layers "
        "with the model (covered by its digest) and every CPU scorer (gate, serving, batch) uses them.",
    )
    counterfactual_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Identity-aware training: this share of the training rows that name an identity group (the "
        "shipped lexicon, harmguard.identity) gets a copy with each group swapped for another's, same label "
        "(counterfactual augmentation, for a tokenizer that reads raw group words). 0: off; not with "
        "`identity_terms`, under which every copy would read as its original.",
    )
    counterfactual_seed: int = Field(default=2, description="Seed of the counterfactual copies.")

    @model_validator(mode="after")
    def _one_identity_defence(self) -> TransformerSpec:
        if self.counterfactual_rate > 0 and self.identity_terms:
            raise ValueError(
                "transformer.counterfactual_rate with transformer.identity_terms: abstraction reads every swapped "
                "copy as its original, so the copies would only repeat rows; choose one"
            )
        return self

    batch_size: int = Field(default=32, ge=1, description="Training examples per worker per micro-batch.")
    eval_batch_size: int = Field(default=128, ge=1, description="Examples per batch when validating and scoring.")
    epochs: int = Field(default=2, ge=1, description="Most passes over the training rows.")
    learning_rate: float = Field(default=5e-5, gt=0, description="Peak AdamW learning rate (after warm-up).")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm).")
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Share of optimizer steps spent warming up linearly, then linear decay."
    )
    grad_accumulation: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    early_stopping_patience: int = Field(
        default=2, ge=1, description="Stop after this many epochs without a better validation macro F1."
    )
    bucket_batches: int = Field(
        default=50, ge=1, description="Length bucketing: sort by length within windows of this many batches."
    )
    num_workers: int = Field(default=2, ge=1, description="Ray Train workers (data-parallel replicas).")
    use_gpu: bool = Field(default=False, description="One GPU per worker, mixed precision (bfloat16).")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description='Ray resources per worker, e.g. {"CPU": 2}; empty: Ray\'s default (1 CPU).'
    )
    torch_threads: int = Field(default=0, ge=0, description="torch threads per worker; 0: the worker's CPUs.")
    max_failures: int = Field(default=2, ge=0, description="Worker-group restarts from the latest checkpoint.")
    checkpoint_every_steps: int = Field(
        default=0, ge=0, description="Also checkpoint every this many optimizer steps; 0: only at epoch ends."
    )
    checkpoints_to_keep: int | None = Field(
        default=2, ge=1, description="Checkpoints kept by validation macro F1 (the latest is always kept)."
    )
    log_every_steps: int = Field(default=10, ge=1, description="Progress line every this many optimizer steps.")
    cpu_max_train_rows: int = Field(
        default=2000,
        ge=0,
        description="Without GPUs, train on a stable sample of at most this many train rows (0: all), so a "
        "laptop run takes minutes; GPU runs use every row.",
    )


class IdentitySpec(_Strict):
    """How an evaluation set's rows map to identity groups (fairness metrics: `harmguard.evaluation.fairness`)."""

    column: str | None = Field(
        default=None, description="Column naming the group each row targets (hatecheck: target_ident); blank: none."
    )
    terms: Literal["jigsaw"] | list[str] | None = Field(
        default=None,
        description="Identity terms matched as whole words in the text, case-insensitive; `jigsaw`: the 50 terms "
        "shipped with jigsaw_bias_madlibs.",
    )
    min_negatives: int = Field(
        default=50, ge=1, description="The FPR spread covers only groups with at least this many negatives."
    )

    @model_validator(mode="after")
    def _one_source(self) -> IdentitySpec:
        if (self.column is None) == (self.terms is None):
            raise ValueError("identity needs exactly one of `column` (group per row) or `terms` (matched in the text)")
        return self


class EvaluationSet(_Strict):
    """A frozen evaluation set (never trained on) and what it tests."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Name in reports and gate keys.")
    dataset: str = Field(description="Named dataset.")
    category: str = Field(description="Category it tests.")
    text_column: str = Field(description="Column with the text.")
    label_column: str = Field(description="Column with the gold label.")
    positive: str = Field(description="Gold label value meaning the category applies.")
    identity: IdentitySpec | None = Field(
        default=None, description="Identity groups of the rows: enables the fairness metrics on this set."
    )
    functionality_column: str | None = Field(
        default=None, description="Column naming each row's functional test (hatecheck: functionality)."
    )


def _every_perturbation() -> list[Perturbation]:
    return list(get_args(Perturbation))


class EvasionSpec(_Strict):
    """Evasion perturbations applied to the test split (`harmguard.evaluation.evasion`)."""

    perturbations: list[Perturbation] = Field(
        default_factory=_every_perturbation,
        min_length=1,
        description="Which perturbations to apply, each to every test row.",
    )
    word_rate: float = Field(
        default=0.5, gt=0, le=1, description="Share of a text's eligible words rewritten (at least one per text)."
    )
    seed: int = Field(default=0, description="Seed of the rewrites (fixed: the same rows give the same texts).")


class ReportSpec(_Strict):
    """What the reviewer report shows of the data."""

    redact_texts: bool = Field(default=False, description="Show no text at all in reports (examples say [redacted]).")
    text_chars: int = Field(default=200, ge=20, description="Texts in reports are cut to this many characters.")
    flipped_examples: int = Field(
        default=20, ge=0, le=20, description="Texts whose decision differs between challenger and champion, at most."
    )


class MonitoringSpec(_Strict):
    """Live traffic: what serving keeps for review, for how long, and the drift bounds ``harmguard monitor`` applies.

    Bounds are effect sizes, not p-values (a large volume makes any difference significant): a check crosses its
    bound only when its measured size does, and a rate ratio only when its whole interval lies beyond the bound.
    """

    sample_rate: float = Field(
        default=0.01, ge=0, le=1, description="Share of served texts kept, with their scores, for the review queue."
    )
    retention_days: int = Field(
        default=30, ge=1, description="Days the sampled review texts are kept (`harmguard traffic purge` deletes them)."
    )
    psi: float = Field(default=0.2, gt=0, description="Largest population stability index of a category's scores.")
    ks: float = Field(
        default=0.1, gt=0, le=1, description="Largest Kolmogorov-Smirnov statistic of scores, traffic vs reference."
    )
    flag_rate_ratio: float = Field(
        default=1.5, gt=1, description="Largest ratio (either way) of a category's flag rate to the validation's."
    )
    length_ks: float = Field(
        default=0.1, gt=0, le=1, description="Largest Kolmogorov-Smirnov statistic between text lengths."
    )
    precision_drop: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Largest fall of the precision of flagged decisions (imported labels sharing item ids) below "
        "the validation's precision.",
    )
    min_records: int = Field(default=500, ge=1, description="Fewer records in the window: no verdict on drift.")
    min_labelled: int = Field(
        default=30, ge=1, description="Fewest labelled flagged items per category before precision is judged."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Coverage of the rate and precision intervals.")


class SliceSpec(_Strict):
    """A slice of the evaluation data."""

    name: str = Field(description="Slice family name, e.g. `length`.")
    by: Literal["length", "column", "origin"] = Field(
        description="Bucket text length, group by a source column, or by the data source a row came from."
    )
    buckets: list[int] = Field(default_factory=list, description="Length bucket edges in characters.")
    column: str | None = Field(default=None, description="Source column for `by: column`.")

    @model_validator(mode="after")
    def _complete(self) -> SliceSpec:
        if self.by == "length" and (len(self.buckets) < 2 or self.buckets != sorted(set(self.buckets))):
            raise ValueError(f"length slice {self.name!r} needs at least two increasing bucket edges")
        if self.by == "column" and not self.column:
            raise ValueError(f"column slice {self.name!r} needs `column` (one of data.columns.source)")
        return self


class ChangeThreshold(_Strict):
    """A change threshold: the challenger against the champion on the same rows, with a paired bootstrap."""

    mode: Literal["absolute", "relative"] = Field(
        default="absolute", description="Change in metric units, or as a fraction of the champion's value."
    )
    direction: Literal["higher_is_better", "lower_is_better"] | None = Field(
        default=None, description="Orientation; inferred when omitted (fpr and flagged_rate: lower is better)."
    )
    tolerance: float = Field(
        default=0.0, ge=0, description="Largest regression allowed: passes iff the interval's low end >= -tolerance."
    )


class Threshold(_Strict):
    """A gate threshold: value bounds (`min`/`max`), a change bound against the champion (`change`), or both."""

    metric: str = Field(
        description="Metric name, e.g. macro_f1, weighted_f1, f1, recall, precision, fpr, pr_auc, accuracy; fairness: "
        "subgroup_auc, bpsn_auc, bnsp_auc, min_* of those, fpr_spread, bias_score; evasion: flip_rate, evasion_rate, "
        "max_flip_rate, max_evasion_rate."
    )
    kind: Literal["reference", "operating"] = Field(default="reference", description="Which metrics it reads.")
    category: str | None = Field(default=None, description="Category for per-category metrics.")
    slice: str = Field(
        default="overall",
        description="`overall`, `<family>:<bucket>` of a declared slice, an evaluation set name, `<set>:<group>` "
        "(identity group) or `<set>:<functionality>`, `evasion` or `evasion:<perturbation>`.",
    )
    min: float | None = Field(default=None, description="Lower bound (higher is better).")
    max: float | None = Field(default=None, description="Upper bound (lower is better).")
    change: ChangeThreshold | None = Field(
        default=None, description="Bound on the change against the champion; skipped when there is no champion."
    )

    @model_validator(mode="after")
    def _bound(self) -> Threshold:
        if self.min is None and self.max is None and self.change is None:
            raise ValueError(
                f"threshold on {self.metric} needs `min` or `max` (value) or `change` (against the champion)"
            )
        if self.metric in ROC_AUC_METRICS and self.min is not None and self.min < AUC_CHANCE:
            where = f" on {self.slice}" if self.slice != "overall" else ""
            raise ValueError(
                f"floor {self.min} on {self.metric}{where} is under {AUC_CHANCE}, the AUC of a coin: a model that "
                "passes it may rank worse than chance. State a floor of at least 0.5 or drop the check"
            )
        if self.metric in OPERATING_ONLY_METRICS and self.kind != "operating":
            raise ValueError(
                f"{self.metric} is measured on scores and operating-point decisions: set `kind: operating`"
            )
        if self.change is not None:
            if self.metric not in CHANGE_METRICS:
                raise ValueError(
                    f"change threshold on {self.metric}: only {sorted(CHANGE_METRICS)} can be resampled; "
                    "use a value threshold (min/max) for it"
                )
            if (self.metric in PER_LABEL_METRICS) != (self.category is not None):
                need = "needs a" if self.metric in PER_LABEL_METRICS else "takes no"
                raise ValueError(f"change threshold on {self.metric} {need} `category`")
        return self

    @property
    def higher_is_better(self) -> bool:
        """Orientation of the change check."""
        if self.change is not None and self.change.direction is not None:
            return self.change.direction == "higher_is_better"
        return self.metric not in LOWER_IS_BETTER


class BootstrapSpec(_Strict):
    """How change checks estimate their interval."""

    resamples: int = Field(default=1000, ge=100, description="Bootstrap resamples B.")
    seed: int = Field(default=0, description="Seed of the resample index matrix (fixed: reruns agree).")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Two-sided interval coverage.")


class GateSpec(_Strict):
    """Gate thresholds."""

    thresholds: list[Threshold] = Field(
        default_factory=list, description="Value and change thresholds; every one must pass."
    )
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec, description="Significance of change checks.")


class Policy(_Strict):
    """A detection policy."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Policy name (registry and MLflow model name).")
    description: str = Field(default="", description="What this policy detects.")
    label_mode: Literal["exclusive", "multilabel"] = Field(description="One softmax, or independent sigmoids.")
    categories: list[str] = Field(min_length=1, description="Categories, each scored separately.")
    none_label: str = Field(default="none", description="Exclusive mode: the label for no violation.")
    data: DataSpec = Field(description="Training data.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Split settings.")
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Data validation bounds.")
    calibration: dict[str, CalibrationTarget] = Field(
        default_factory=dict, description="Category -> calibration target (default max_fpr 0.01)."
    )
    baseline: BaselineSpec = Field(default_factory=BaselineSpec, description="Baseline model settings.")
    transformer: TransformerSpec = Field(
        default_factory=TransformerSpec, description="Transformer fine-tuning settings."
    )
    evaluation_sets: list[EvaluationSet] = Field(default_factory=list, description="Frozen evaluation sets.")
    slices: list[SliceSpec] = Field(default_factory=list, description="Slices for metrics and thresholds.")
    evasion: EvasionSpec | None = Field(default=None, description="Evasion perturbations of the test split.")
    gate: GateSpec = Field(default_factory=GateSpec, description="The evaluation gate.")
    report: ReportSpec = Field(default_factory=ReportSpec, description="What reports show of the data.")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Traffic record sampling, retention and drift bounds."
    )
    allow_self_approval: bool = Field(default=False, description="Whether the run's starter may approve it.")
    approval_ttl_hours: float = Field(
        default=72.0,
        gt=0,
        le=MAX_APPROVAL_TTL_HOURS,
        description=f"Hours an approval stays valid (at most {MAX_APPROVAL_TTL_HOURS:g}); then approve again.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        cats = set(self.categories)
        if len(cats) != len(self.categories) or self.none_label in cats:
            raise ValueError("categories must be unique and must not include the none label")
        for name in [*self.calibration, *self.validation.prevalence]:
            if name not in cats:
                raise ValueError(f"unknown category {name!r} (categories: {self.categories})")
        for t in self.gate.thresholds:
            if t.category is not None and t.category not in cats | {self.none_label}:
                raise ValueError(f"gate threshold names unknown category {t.category!r}")
        for sl in self.slices:
            if sl.by == "column" and not any(sl.column in s.columns.source for s in self.data.sources):
                raise ValueError(f"slice {sl.name!r} reads column {sl.column!r}: list it in a source's columns.source")
        for family, spec in (("baseline", self.baseline), ("transformer", self.transformer)):
            if spec.augment and self.evasion is not None and spec.augment_seed == self.evasion.seed:
                raise ValueError(
                    f"{family}.augment_seed {spec.augment_seed} equals evasion.seed: training would see the "
                    "very perturbed texts the evasion is measured on; choose another seed"
                )
        names = [s.label for s in self.data.sources]
        if len(set(names)) != len(names) or "labels" in names:
            raise ValueError(f"data sources need distinct names other than `labels` (got {names}); set `name`")
        for src in self.data.sources:
            if self.label_mode == "multilabel" and set(src.columns.labels) != cats:
                raise ValueError(
                    f"multilabel policies map every category to a column in columns.labels (source {src.label})"
                )
        return self

    @property
    def classes(self) -> list[str]:
        """Model output classes: categories plus the none label (exclusive), or the categories (multilabel)."""
        return [*self.categories, self.none_label] if self.label_mode == "exclusive" else list(self.categories)

    def target(self, category: str) -> CalibrationTarget:
        """Calibration target of a category."""
        return self.calibration.get(category, CalibrationTarget())


def shipped_policies() -> list[str]:
    """Names of the policies shipped with harmguard."""
    files = resources.files("harmguard.policies")
    return sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))


def read_policy_bytes(ref: str) -> tuple[bytes, str]:
    """Raw bytes and origin of a policy given as a shipped name or a path."""
    path = Path(ref)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise UnknownPolicyError(f"policy file {ref} does not exist")
        return path.read_bytes(), str(path.resolve())
    res = resources.files("harmguard.policies") / f"{ref}.yaml"
    if not res.is_file():
        raise UnknownPolicyError(f"unknown policy {ref!r}: give a path to a YAML file or one of {shipped_policies()}")
    return res.read_bytes(), f"harmguard:policies/{ref}.yaml"


def load_policy(ref: str) -> Policy:
    """Load and validate a policy by shipped name or path."""
    raw, origin = read_policy_bytes(ref)
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise PolicyError(f"policy {origin} is not valid YAML: {e}") from e
    try:
        return Policy.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors())
        raise PolicyError(f"policy {origin} is invalid: {problems}") from e


def policy_digest(ref: str) -> str:
    """sha256 of the policy file's bytes (lineage)."""
    return sha256_bytes(read_policy_bytes(ref)[0])
