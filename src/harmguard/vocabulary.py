"""The names that policies, the evaluation and the gate share: metrics and evasion perturbations.

Defined once here, at the bottom of the layers, so a policy file is validated against the same names the evaluation
computes without the policy model importing the evaluation.
"""

from __future__ import annotations

from typing import Literal, get_args

# Change checks (paired bootstrap) resample these; the first four are per category.
PER_LABEL_METRICS = frozenset({"precision", "recall", "f1", "fpr"})
OVERALL_METRICS = frozenset({"accuracy", "macro_f1", "weighted_f1", "flagged_rate"})
CHANGE_METRICS = PER_LABEL_METRICS | OVERALL_METRICS
LOWER_IS_BETTER = frozenset({"fpr", "flagged_rate"})

# Identity fairness (Borkan et al. 2019): per group, and the summaries a gate reads.
FAIRNESS_GROUP_METRICS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")
FAIRNESS_SUMMARY_METRICS = ("min_subgroup_auc", "min_bpsn_auc", "min_bnsp_auc", "fpr_spread", "bias_score")
FAIRNESS_METRICS = frozenset({*FAIRNESS_GROUP_METRICS, *FAIRNESS_SUMMARY_METRICS})

# Areas under a ROC curve (and Jigsaw's bias score, a generalized mean of them): a coin scores 0.5, so a floor
# under 0.5 certifies a model worse than chance and a policy may not state one. PR-AUC is not here: its chance level
# is the prevalence.
ROC_AUC_METRICS = frozenset(
    {"roc_auc", *FAIRNESS_GROUP_METRICS, "min_subgroup_auc", "min_bpsn_auc", "min_bnsp_auc", "bias_score"}
)
AUC_CHANCE = 0.5

# Evasion: the rewrites of the test split, and what is measured per rewrite and per category.
Perturbation = Literal["char_swap", "leetspeak", "space_insert", "punct_insert", "homoglyph", "long_prefix"]
PERTURBATIONS: tuple[str, ...] = get_args(Perturbation)
EVASION_PER_PERTURBATION_METRICS = ("flip_rate", "evasion_rate")
EVASION_SUMMARY_METRICS = ("max_flip_rate", "max_evasion_rate")
EVASION_METRICS = frozenset({*EVASION_PER_PERTURBATION_METRICS, *EVASION_SUMMARY_METRICS})

# Fairness and evasion metrics are read from scores and operating-point decisions only.
OPERATING_ONLY_METRICS = FAIRNESS_METRICS | EVASION_METRICS
