"""Selection: each family's best model, calibrated and thresholded on val, reported once on test.

Protocol (README "Selection"):

1. Candidates: for each family in ``select.families`` the final MLflow run with the best
   *validation* metric among runs of the same data (tag ``data_hash``): classifiers from the
   grid (``val_f1_weighted``, higher is better), ``ecapa`` (``val_eer``, lower is better),
   and ``cosine`` -- the seed work's baseline, built here: cosine similarity of standardised
   clip statistics (scaler fitted on train rows) to per-speaker train centroids.
2. Calibration on enrolled val rows: classifiers via :func:`voiceid.select.calibration.calibrate_classifier`
   (isotonic or sigmoid, chosen by cross-fitted log-loss); embedding models by a logistic
   :class:`~voiceid.scoring.calibration.ScoreCalibrator` of probe-to-centroid cosines (val probes of
   enrolled and val-unknown speakers against every enrolled centroid).
3. Open-set thresholds on val probes (enrolled val + val-unknown speakers): F-beta, TPR@FPR
   and EER rules, all recorded; ``threshold_rule`` names the one used for decisions.
4. Champion: the candidate with the best ``champion_metric`` on *val*; the best embedding
   candidate rides along for enrolling new speakers.
5. Test (enrolled test + test-unknown speakers), touched once, after everything above is
   frozen: :func:`voiceid.scoring.openset.report` with bootstrap intervals.

Steps 1-4 receive :meth:`FeatureBank.without_test`, a bank with no test rows at all, so no
fitted quantity can depend on test data (tests/test_selection.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voiceid.features.params import FeatureParams
from voiceid.scoring import openset
from voiceid.scoring.openset import Probes
from voiceid.select.candidates import (
    Candidate,
    FeatureBank,
    Source,
    build_candidate,
    score_split,
)
from voiceid.select.params import SelectParams
from voiceid.serve.champion import Champion

LOWER_IS_BETTER = frozenset({"eer", "min_dcf", "far", "frr"})


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def choose(candidates: Sequence[Candidate], metric: str) -> Candidate:
    """Best ``metric`` on val; ties keep the earlier candidate (``families`` order)."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    best = candidates[0]
    for c in candidates[1:]:
        if _better(metric, c.val_report[metric], best.val_report[metric]):
            best = c
    return best


@dataclass
class SelectionResult:
    candidates: list[Candidate]
    champion: Candidate
    embedding: Candidate | None
    test: dict[str, Probes] = field(default_factory=dict)
    test_reports: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    test_by_rule: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # family -> why it is not a candidate


def select(
    sources: Sequence[tuple[Source, Any]], bank: FeatureBank, params: SelectParams, features: FeatureParams
) -> SelectionResult:
    """Calibrate, threshold and choose on val; then score every candidate once on test."""
    fit_bank = bank.without_test()
    candidates, skipped = [], {}
    for s, m in sources:
        try:
            candidates.append(build_candidate(s, m, fit_bank, params, features))
        except ValueError as exc:  # one unusable model must not cost the others
            skipped[s.family] = f"cannot calibrate/threshold on val: {exc}"
    if not candidates:
        raise ValueError(
            f"no usable candidate model ({skipped or 'none found'}): run the grid/ecapa stages or add 'cosine' to select.families"
        )
    embedding = [c for c in candidates if c.source.kind == "embedding"]
    result = SelectionResult(
        candidates,
        choose(candidates, params.champion_metric),
        choose(embedding, params.champion_metric) if embedding else None,
        skipped=skipped,
    )
    # Everything fitted is frozen from here on; the test split is read once per candidate.
    for i, c in enumerate(candidates):
        probes = score_split(c, bank, "test")
        t = c.threshold(params.threshold_rule)
        result.test[c.family] = probes
        result.test_reports[c.family] = openset.bootstrap(
            probes, lambda p, t=t: openset.report(p, t, p_target=params.p_target), params.n_bootstrap, params.seed + i
        )
        result.test_by_rule[c.family] = {
            rule: dict(zip(("far", "frr"), openset.far_frr(probes, c.threshold(rule)))) for rule in c.thresholds
        }
    return result


def make_champion(result: SelectionResult, params: SelectParams, features: FeatureParams) -> Champion:
    """The deployable object: the champion's scorer and threshold plus the embedding fallback."""
    c, e = result.champion, result.embedding
    return Champion(
        family=c.family,
        run_id=c.source.run_id,
        primary=c.scorer,
        threshold=c.threshold(params.threshold_rule),
        threshold_rule=params.threshold_rule,
        embedding=e.scorer if e is not None else None,  # type: ignore[arg-type]
        embedding_threshold=e.threshold(params.threshold_rule) if e is not None else None,
        sample_rate=features.sample_rate,
    )
