"""Selection: each family's best model, calibrated and thresholded on val, reported once on test.

Protocol (README "Selection"):

1. Candidates: for each family in ``select.families`` the final MLflow run with the best
   *validation* metric among the runs *this pipeline run* trained (their ids come from the
   files the grid/ECAPA stages write, :mod:`voiceid.select.sources`): classifiers from the
   grid (``val_f1_weighted``, higher is better), ``ecapa`` (``val_eer``, lower is better),
   and embedding systems built here: ``cosine`` (the seed work's: standardised clip
   statistics), ``dvector`` (pretrained GE2E embeddings) and ``joint`` (both as one
   embedding), cosine to per-speaker train centroids behind the scoring back-end
   (``select.backends``) with the lowest val EER.
2. Calibration on val rows: classifiers via :func:`voiceid.select.calibration.calibrate_classifier`
   (isotonic or sigmoid, chosen by cross-fitted loss) name the speaker; their open-set score is
   the model's own statistic (:mod:`voiceid.serve.decision`) calibrated on val probes (or, per
   ``select.classifier_scores``, the top calibrated probability); embedding systems by a logistic
   :class:`~voiceid.scoring.calibration.ScoreCalibrator` of the top-1 score, the statistic they
   decide on (val probes of enrolled and val-unknown speakers; target: the top speaker is right).
3. Open-set thresholds on val probes (enrolled val + val-unknown speakers): F-beta, TPR@FPR
   and EER rules, all recorded; ``threshold_rule`` names the one used for decisions.
4. Champion: the candidate with the best ``champion_metric`` on *val* -- or, when the val set
   has too few unknown probes to estimate it, ``fallback_metric`` (the report says which);
   the embedding candidate with the best ``champion_metric`` on val rides along for the
   enrollment store, through the back-end variant that serves speakers enrolled later best
   (:mod:`voiceid.select.later`: val-unknown speakers enrolled as later speakers).
5. Test (enrolled test + test-unknown speakers), touched once, after everything above is
   frozen: :func:`voiceid.scoring.openset.report` with one *paired* bootstrap for all
   candidates, so each candidate's difference to the champion gets its own interval.

Steps 1-4 receive :meth:`FeatureBank.without_test`, a bank with no test rows at all, so no
fitted quantity can depend on test data (tests/test_selection.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voiceid.features.params import FeatureParams
from voiceid.scoring import openset
from voiceid.scoring.openset import LOWER_IS_BETTER, Probes
from voiceid.select.candidates import (
    Candidate,
    EmbeddingTrials,
    FeatureBank,
    Source,
    build_candidate,
    build_fusion,
    score_split,
)
from voiceid.select.params import SelectParams
from voiceid.serve.champion import Champion

TIE_BREAK = "score_log_loss"  # continuous: few val probes often tie several systems at EER 0


def _key(metric: str, report: dict[str, float]) -> tuple[float, float]:
    """Sort key, smaller is better: the metric, then the tie-break."""
    primary = report[metric] if metric in LOWER_IS_BETTER else -report[metric]
    return round(primary, 12), report.get(TIE_BREAK, 0.0)


def choose(candidates: Sequence[Candidate], metric: str) -> Candidate:
    """Best ``metric`` on val; ties go to the lower val score log-loss, then to the earlier candidate."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    return min(candidates, key=lambda c: _key(metric, c.val_report))  # min keeps the first of equals


@dataclass
class SelectionResult:
    candidates: list[Candidate]
    champion: Candidate
    embedding: Candidate | None
    champion_metric: str = ""  # the metric that chose the champion (may be the fallback)
    champion_metric_reason: str = ""
    runner_up: Candidate | None = None  # second best on val by champion_metric
    test: dict[str, Probes] = field(default_factory=dict)
    test_reports: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # candidate - champion on the same bootstrap replicates of the same test probes
    test_vs_champion: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    test_by_rule: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # family -> why it is not a candidate


def select(
    sources: Sequence[tuple[Source, Any]], bank: FeatureBank, params: SelectParams, features: FeatureParams
) -> SelectionResult:
    """Calibrate, threshold and choose on val; then score every candidate once on test.

    The champion metric must be estimable from the val set: with fewer val-unknown probes
    than ``select.min_unknown_probes`` a DIR@FAR1% is decided by the single loudest stranger,
    so :meth:`SelectParams.champion_metric_for` falls back (default EER) and says why.  Test
    intervals come from one paired bootstrap: the same resampled probes for every candidate.
    """
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
    if "fusion" in params.families:  # the best embedding candidate + the classifier it gains most from, fused on val
        fusion = _fusion(candidates, fit_bank, params)
        if isinstance(fusion, str):
            skipped["fusion"] = fusion
        else:
            candidates.append(fusion)
    n_unknown = min(int((~c.val.known).sum()) for c in candidates)
    metric, reason = params.champion_metric_for(n_unknown)
    ranked = rank(candidates, metric)
    embedding = [c for c in candidates if c.source.kind == "embedding"]
    result = SelectionResult(
        candidates,
        ranked[0],
        choose(embedding, metric) if embedding else None,
        champion_metric=metric,
        champion_metric_reason=reason,
        runner_up=ranked[1] if len(ranked) > 1 else None,
        skipped=skipped,
    )
    # Everything fitted is frozen from here on; the test split is read once per candidate.
    test = openset.align({c.family: score_split(c, bank, "test") for c in candidates})
    thresholds = {c.family: c.threshold(params.threshold_rule) for c in candidates}
    result.test = test
    result.test_reports, result.test_vs_champion = openset.paired_bootstrap(
        test,
        lambda name, p: openset.report(p, thresholds[name], p_target=params.p_target),
        reference=result.champion.family,
        n=params.n_bootstrap,
        seed=params.seed,
    )
    for c in candidates:
        result.test_by_rule[c.family] = {
            rule: dict(zip(("far", "frr"), openset.far_frr(test[c.family], c.threshold(rule)), strict=True))
            for rule in c.thresholds
        }
    return result


def _fusion(candidates: Sequence[Candidate], fit_bank: FeatureBank, params: SelectParams) -> Candidate | str:
    """The best embedding candidate (by val EER, :func:`choose`) fused with the classifier it gains most from, or why not.

    Every classifier candidate is fused with that embedding system and the fusion with the lowest
    cross-fitted val EER is kept: the best classifier alone is often the one most like the
    embedding system (a kNN on the same encoder's vectors), which a fusion gains least from.  The
    val EERs of all the partners tried are recorded in the fusion's calibration.  The embedding
    system's val scores are computed once for all partners (:class:`EmbeddingTrials`).
    """
    by_kind = {k: [c for c in candidates if c.source.kind == k] for k in ("classifier", "embedding")}
    if not by_kind["classifier"] or not by_kind["embedding"]:
        return "needs a classifier and an embedding candidate"
    embedding = choose(by_kind["embedding"], "eer")
    try:
        cached: EmbeddingTrials | None = EmbeddingTrials.of(embedding, fit_bank)  # the same for every partner: once
    except ValueError:
        cached = None  # each partner then meets (and reports) the same problem
    fused: list[Candidate] = []
    failed: dict[str, str] = {}
    for classifier in by_kind["classifier"]:
        try:
            fused.append(build_fusion(classifier, embedding, fit_bank, params, cached))
        except ValueError as exc:
            failed[classifier.family] = str(exc)
    if not fused:
        return f"cannot fit on val: {failed}"
    best = choose(fused, "eer")
    best.calibration["partners_val_eer"] = {c.calibration["of"]: round(float(c.val_report["eer"]), 6) for c in fused}
    if failed:
        best.calibration["partners_failed"] = failed
    return best


def rank(candidates: Sequence[Candidate], metric: str) -> list[Candidate]:
    """Candidates from best to worst ``metric`` on val; ties keep ``families`` order."""
    out: list[Candidate] = []
    rest = list(candidates)
    while rest:
        best = choose(rest, metric)
        out.append(best)
        rest.remove(best)
    return out


def make_champion(result: SelectionResult, params: SelectParams, features: FeatureParams) -> Champion:
    """The deployable object: the champion's scorer and threshold plus the embedding fallback."""
    c = result.champion
    e = result.embedding.for_enrolling if result.embedding is not None else None
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
