"""The ``select`` section of params.yaml, with its values checked at load.

Every enumerated value is a ``Literal``, so :func:`voiceid.config.load_section` rejects a
typo naming the dotted key (``params.yaml: 'select.families[2]' must be one of ...``)
before any work, instead of silently skipping a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CandidateFamily = Literal[
    "svc", "mlp", "catboost", "knn", "logreg", "ecapa", "cosine", "dvector", "dvector_ft", "joint", "joint_ft", "fusion"
]
VectorSet = Literal["seed498", "mfcc60", "extended", "dvector", "dvector_ft"]
Backend = Literal["plain", "norm", "lda", "wccn", "lda+wccn", "asnorm", "lda+asnorm", "wccn+asnorm", "lda+wccn+asnorm"]
ChampionMetric = Literal["dir_far_1", "dir_far_5", "eer", "min_dcf", "open_set_accuracy", "accuracy"]

# The FAR each champion metric is read at: with n unknown probes, FAR steps by 1/n, so a
# metric read at FAR f needs about ``min_unknown_probes * 0.01 / f`` unknown probes.
METRIC_FAR = {"dir_far_1": 0.01, "dir_far_5": 0.05, "min_dcf": 0.01}


@dataclass(frozen=True)
class SelectParams:
    """The ``select`` section of params.yaml."""

    families: tuple[CandidateFamily, ...] = ("svc", "mlp", "catboost", "knn", "logreg", "ecapa", "cosine")
    # picks each classifier family's final run among this pipeline's runs (higher is better)
    val_metric: Literal["val_f1_weighted", "val_f1_macro", "val_accuracy", "val_top5_accuracy"] = "val_f1_weighted"
    ecapa_val_metric: Literal["val_eer", "val_min_dcf"] = "val_eer"  # picks the ECAPA final run (lower is better)
    cosine_feature_set: Literal["mfcc60", "seed498", "extended"] = "mfcc60"
    # "joint": these clip-level sets as one embedding (each block standardised and length-normed,
    # equal weight), e.g. the pretrained d-vector with MFCC statistics
    joint_feature_sets: tuple[VectorSet, ...] = ("dvector", "mfcc60")
    # "joint_ft": the same with the encoder adapted to this dataset's speakers (stage adapt: dvector_ft)
    joint_ft_feature_sets: tuple[VectorSet, ...] = ("dvector_ft", "mfcc60")
    # scoring back-ends tried for each embedding candidate, the lowest val EER kept: plain cosine;
    # norm = centre + length-norm; lda / wccn (fitted on enrolled train + background speakers);
    # asnorm = adaptive s-norm against the background speakers (skipped when there are none)
    backends: tuple[Backend, ...] = ("plain", "norm", "wccn", "lda+wccn", "asnorm", "wccn+asnorm", "lda+wccn+asnorm")
    lda_dim: int = 64
    as_norm_top_n: int = 50
    calibration_methods: tuple[Literal["isotonic", "sigmoid"], ...] = ("isotonic", "sigmoid")
    calibration_metric: Literal["log_loss", "brier", "open_brier"] = "open_brier"
    # a classifier's open-set score (several: the lowest val EER kept): "calibrated" = top calibrated
    # probability; "decision" = the model's own statistic (SVC decision value, kNN distance, top raw
    # probability) calibrated on val. Default "decision" alone: on az_digits the calibrated scores'
    # val EER understated their test EER (0.37 -> 0.49 for kNN), so a val choice picked them wrongly
    classifier_scores: tuple[Literal["calibrated", "decision"], ...] = ("decision",)
    beta: float = 1.0
    target_fpr: float = 0.05
    # fpr rule: c in (0, 1) = meet target_fpr for new strangers with confidence c (a smoothed bootstrap
    # over the val-unknown speakers, FprThreshold); None = on the val-unknown probes themselves, which
    # new strangers exceed (on az_digits 5-10% accepted at a 5% target, benchmarks/gallery_far.py)
    far_confidence: float | None = 0.8
    # clips each val-unknown speaker is enrolled from when selection measures how an embedding
    # system serves speakers enrolled later (voiceid.select.later); what a user brings to voiceid enroll
    enroll_files: int = 5
    threshold_rule: Literal["fbeta", "fpr", "eer"] = "fpr"
    champion_metric: ChampionMetric = "dir_far_1"
    # fewer val-unknown probes than this cannot estimate a 1% FAR (300: three false accepts at
    # FAR 1%, a single loud stranger otherwise decides); the champion is then chosen by
    # fallback_metric instead, and the report says so
    min_unknown_probes: int = 300
    fallback_metric: ChampionMetric = "eer"
    p_target: float = 0.01
    registered_model: str = "voiceid"
    experiment: str = "voiceid/select"
    n_bootstrap: int = 1000
    seed: int = 42

    def check(self) -> None:
        if not self.families:
            raise ValueError("families must name at least one candidate family")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families has duplicates: {list(self.families)}")
        for key, sets in (("joint_feature_sets", self.joint_feature_sets), ("joint_ft_feature_sets", self.joint_ft_feature_sets)):
            if len(sets) < 2 or len(set(sets)) != len(sets):
                raise ValueError(f"{key} must name >= 2 different sets, found {list(sets)}")
        if not self.backends:
            raise ValueError("backends must name at least one scoring back-end (plain: none)")
        if self.lda_dim < 1 or self.as_norm_top_n < 1:
            raise ValueError(f"lda_dim and as_norm_top_n must be >= 1, found {self.lda_dim} and {self.as_norm_top_n}")
        if not self.calibration_methods:
            raise ValueError("calibration_methods must name at least one method")
        if not self.classifier_scores or len(set(self.classifier_scores)) != len(self.classifier_scores):
            raise ValueError(f"classifier_scores must name distinct score kinds, found {list(self.classifier_scores)}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, found {self.beta}")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), found {self.target_fpr}")
        if self.enroll_files < 1:
            raise ValueError(f"enroll_files must be >= 1, found {self.enroll_files}")
        if self.far_confidence is not None and not 0.0 < self.far_confidence < 1.0:
            raise ValueError(f"far_confidence must be in (0, 1) or null, found {self.far_confidence}")
        if not 0.0 < self.p_target < 1.0:
            raise ValueError(f"p_target must be in (0, 1), found {self.p_target}")
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, found {self.n_bootstrap}")
        if self.min_unknown_probes < 1:
            raise ValueError(f"min_unknown_probes must be >= 1, found {self.min_unknown_probes}")
        if not self.registered_model.strip():
            raise ValueError("registered_model must not be empty")

    def built_feature_sets(self) -> dict[str, str]:
        """Feature set of each embedding system select builds from the tables (no trained model).

        >>> SelectParams().built_feature_sets()["joint_ft"]
        'dvector_ft+mfcc60'
        """
        return {
            "cosine": self.cosine_feature_set,
            "dvector": "dvector",
            "dvector_ft": "dvector_ft",
            "joint": "+".join(self.joint_feature_sets),
            "joint_ft": "+".join(self.joint_ft_feature_sets),
        }

    def champion_metric_for(self, n_unknown: int) -> tuple[str, str]:
        """The metric that picks the champion with ``n_unknown`` val-unknown probes, and why.

        >>> SelectParams().champion_metric_for(31)[0]
        'eer'
        >>> SelectParams().champion_metric_for(400)[0]
        'dir_far_1'
        """
        far = METRIC_FAR.get(self.champion_metric)
        if far is None:
            return self.champion_metric, f"{self.champion_metric} as configured"
        needed = int(round(self.min_unknown_probes * 0.01 / far))
        if n_unknown >= needed:
            return self.champion_metric, f"{self.champion_metric} as configured ({n_unknown} val-unknown probes >= {needed})"
        return self.fallback_metric, (
            f"{self.fallback_metric} instead of {self.champion_metric}: {n_unknown} val-unknown probes cannot estimate "
            f"FAR {far:g} (needs >= {needed}, select.min_unknown_probes)"
        )
