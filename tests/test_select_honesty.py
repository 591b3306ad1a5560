"""Honest selection: this run's models only, paired statistics, an estimable champion metric."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_select import fit_logreg, gaussian_bank

from voiceid.scoring import openset
from voiceid.scoring.openset import Probes
from voiceid.select.candidates import Source
from voiceid.select.params import SelectParams
from voiceid.select.protocol import select


def _log_final(family: str, value: float, model: object, feature_set: str = "mfcc60") -> str:
    from voiceid import tracking

    return tracking.log_final_run(
        tracking.experiment_name("test", feature_set), f"{family}-final", params={"seed": 0},
        metrics={"val_f1_weighted": value}, model=model,
        tags={"family": family, "feature_set": feature_set, "kind": "classifier", "data_hash": "H"},
    )


def _write_run_ids(runs_dir: Path, family: str, ids: dict[str, str]) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / f"{family}.json").write_text(json.dumps({fs: {"final_run_id": rid} for fs, rid in ids.items()}))


def test_a_stale_better_run_of_the_same_data_is_not_selected(store: str, tmp_path: Path) -> None:
    from voiceid.select.sources import find_sources

    model = fit_logreg(gaussian_bank())
    stale = _log_final("logreg", 0.99, model)  # an earlier dvc repro, same data_hash, better val
    this_run = _log_final("logreg", 0.80, model)
    other_set = _log_final("logreg", 0.70, model, feature_set="seed498")
    _write_run_ids(tmp_path / "models", "logreg", {"mfcc60": this_run, "seed498": other_set})
    params = SelectParams(families=("logreg", "svc", "mlp", "cosine"))
    sources, skipped = find_sources(params, tmp_path / "models", trained=("logreg", "mlp", "ecapa"))
    by_family = {s.family: s for s in sources}
    assert by_family["logreg"].run_id == this_run != stale  # best of *this* run's feature sets
    assert by_family["logreg"].val_value == pytest.approx(0.80)
    assert "cosine" in by_family  # built in the stage, always a candidate
    assert skipped["svc"] == "not trained by this pipeline (not in grid.families)"
    assert "mlp" in skipped and "mlp.json" in skipped["mlp"]  # trained but its stage wrote no run ids


def test_a_run_id_missing_from_the_store_is_an_error_naming_it(store: str, tmp_path: Path) -> None:
    from voiceid.select.sources import find_sources

    _write_run_ids(tmp_path / "models", "logreg", {"mfcc60": "0" * 32})
    with pytest.raises(LookupError, match="0" * 32):
        find_sources(SelectParams(families=("logreg",)), tmp_path / "models", trained=("logreg",))


def _systems(n_known: int = 30, n_unknown: int = 40, seed: int = 0) -> dict[str, Probes]:
    rng = np.random.default_rng(seed)
    true = np.array([f"s{i % 5}" for i in range(n_known)] + [f"u{i}" for i in range(n_unknown)])
    known = np.r_[np.ones(n_known, bool), np.zeros(n_unknown, bool)]
    ids = np.array([f"utt{i}" for i in range(len(true))])
    out = {}
    for name, shift in (("good", 2.0), ("poor", 0.5)):
        score = rng.normal(known * shift, 1.0)
        pred = np.where(known & (rng.random(len(true)) < 0.9), true, "s0")
        out[name] = Probes(true, pred, score, known, ids)
    return out


def test_paired_bootstrap_resamples_the_same_probes_for_every_system() -> None:
    systems = _systems()
    seen: dict[str, list[tuple[str, ...]]] = {"good": [], "poor": []}

    def metrics(name: str, p: Probes) -> dict[str, float]:
        seen[name].append(tuple(p.ids))  # type: ignore[arg-type]
        return openset.report(p, 0.5)

    openset.paired_bootstrap(systems, metrics, reference="good", n=25, seed=3)
    assert len(seen["good"]) == len(seen["poor"]) == 26  # the point estimate + 25 replicates
    assert seen["good"] == seen["poor"]
    assert len(set(seen["good"][1:])) > 20  # and the replicates do differ from each other


def test_paired_differences_are_exact_for_identical_systems_and_signed_for_different_ones() -> None:
    systems = _systems()
    twin = {"good": systems["good"], "copy": systems["good"]}
    _, diff = openset.paired_bootstrap(twin, lambda _, p: openset.report(p, 0.5), reference="good", n=50, seed=0)
    assert diff["copy"]["eer"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}
    figures, diff = openset.paired_bootstrap(systems, lambda _, p: openset.report(p, 0.5), reference="good", n=200, seed=0)
    assert diff["poor"]["eer"]["lo"] > 0  # poor is worse on every replicate: the paired interval excludes 0
    assert diff["poor"]["eer"]["value"] == pytest.approx(figures["poor"]["eer"]["value"] - figures["good"]["eer"]["value"])
    assert diff["good"]["eer"] == {"value": 0.0, "lo": 0.0, "hi": 0.0}


def test_align_pairs_probes_by_id_and_drops_probes_one_system_lacks() -> None:
    systems = _systems()
    poor = systems["poor"]
    shuffled = poor.take(np.r_[np.arange(len(poor))[::-1][:-1]])  # reversed, minus utt0
    aligned = openset.align({"good": systems["good"], "poor": shuffled})
    assert list(aligned["good"].ids) == list(aligned["poor"].ids) == [f"utt{i}" for i in range(1, len(poor))]  # type: ignore[arg-type]
    assert np.array_equal(aligned["poor"].score, poor.score[1:])


def _sources(bank):  # noqa: ANN001, ANN202
    return [(Source("logreg", "classifier", "mfcc60", "run-1"), fit_logreg(bank)), (Source("cosine", "embedding", "mfcc60"), None)]


def test_champion_metric_falls_back_when_val_has_too_few_unknowns() -> None:
    from voiceid.features.params import FeatureParams

    bank = gaussian_bank(seed=1)  # 4 val-unknown speakers x 2 utterances = 8 probes
    params = SelectParams(families=("logreg", "cosine"), n_bootstrap=30, champion_metric="dir_far_1", min_unknown_probes=100)
    result = select(_sources(bank), bank, params, FeatureParams(sets=("mfcc60",)))
    assert result.champion_metric == "eer"
    assert "8 val-unknown probes" in result.champion_metric_reason and "min_unknown_probes" in result.champion_metric_reason
    ranked = sorted(result.candidates, key=lambda c: c.val_report["eer"])
    assert result.champion is ranked[0] and result.runner_up is ranked[1]
    enough = select(_sources(bank), bank, SelectParams(families=("logreg", "cosine"), n_bootstrap=0, min_unknown_probes=8),
                    FeatureParams(sets=("mfcc60",)))
    assert enough.champion_metric == "dir_far_1"


def test_report_lists_every_configured_family_and_the_paired_runner_up() -> None:
    from voiceid.features.params import FeatureParams
    from voiceid.select.report import metrics_view, summary

    bank = gaussian_bank(seed=2)
    params = SelectParams(families=("logreg", "svc", "cosine"), n_bootstrap=40)
    result = select(_sources(bank), bank, params, FeatureParams(sets=("mfcc60",)))
    report = summary(result, params, {"svc": "not trained by this pipeline (not in grid.families)"})
    view = metrics_view(report)
    assert set(view["candidates"]) | set(view["skipped"]) == set(params.families)
    runner = report["champion"]["runner_up"]
    assert runner["family"] != report["champion"]["family"]
    diff = runner[f"test_{result.champion_metric}_minus_champion"]
    assert diff["lo"] <= diff["value"] <= diff["hi"]
    assert runner["distinguishable_on_test"] == (diff["lo"] > 0 or diff["hi"] < 0)
    champion = report["champion"]["family"]
    assert view["candidates"][champion]["test_minus_champion"]["eer"] == 0.0
    assert report["bootstrap"] == {"n": 40, "seed": params.seed, "paired": True}


def test_embedding_calibrator_is_fitted_on_the_top1_score_of_val_probes_only() -> None:
    from voiceid.features.params import FeatureParams
    from voiceid.select.candidates import build_candidate

    bank = gaussian_bank(seed=3)
    params = SelectParams(families=("cosine",), n_bootstrap=0)
    cand = build_candidate(Source("cosine", "embedding", "mfcc60"), None, bank.without_test(), params, FeatureParams(sets=("mfcc60",)))
    scorer = cand.scorer
    inputs, speakers, known, _ = bank.probes("mfcc60", "val")
    _, cos = scorer.cosines(scorer.embedder.embed(inputs))  # type: ignore[union-attr]
    top = cos.max(axis=1)
    right = known & (np.asarray(scorer.centroids.speakers)[cos.argmax(axis=1)] == speakers)  # type: ignore[union-attr]
    from voiceid.scoring.calibration import ScoreCalibrator

    expected = ScoreCalibrator().fit(top, right.astype(int))
    assert scorer.calibrator.a_ == pytest.approx(expected.a_) and scorer.calibrator.b_ == pytest.approx(expected.b_)  # type: ignore[union-attr]
    # the calibrated top-1 score is a probability of a right answer: on val it is calibrated in the large
    assert np.mean(cand.val.score) == pytest.approx(right.mean(), abs=0.1)


def test_fusion_competes_fitted_on_val_and_serves_from_audio_features() -> None:
    from voiceid.features.params import FeatureParams

    bank = gaussian_bank(seed=4, spread=1.2)
    params = SelectParams(families=("logreg", "cosine", "fusion"), n_bootstrap=20, champion_metric="eer")
    result = select(_sources(bank), bank, params, FeatureParams(sets=("mfcc60",)))
    fusion = next(c for c in result.candidates if c.family == "fusion")
    assert fusion.source.feature_set == "mfcc60+mfcc60" and fusion.calibration["of"] == "logreg+cosine"
    w = fusion.calibration["identify_weights"]
    assert w[0] > 0 and w[1] > 0  # both systems carry evidence on separable speakers
    # the detection score is a probability of a right answer: roughly calibrated in the large on val
    right = fusion.val.correct
    assert np.mean(fusion.val.score) == pytest.approx(right.mean(), abs=0.1)  # cross-fitted: out of fold
    assert "fusion" in result.test_reports and "fusion" in result.test_vs_champion
    # the val scores thresholds and the champion choice see are out of fold, not the deployed weights' own fit
    inputs, *_ = bank.without_test().probes(fusion.source.feature_set, "val")
    assert not np.allclose(fusion.scorer.score_inputs(inputs).score, fusion.val.score)
    # refitting the fusion with test rows present is refused
    from voiceid.select.candidates import build_fusion

    clf = next(c for c in result.candidates if c.family == "logreg")
    emb = next(c for c in result.candidates if c.family == "cosine")
    with pytest.raises(ValueError, match="without test rows"):
        build_fusion(clf, emb, bank, params)


def test_fusion_takes_the_classifier_it_gains_most_from_not_the_best_alone() -> None:
    """A classifier on the embedding system's own features adds little; one on an independent view adds more."""
    from voiceid.features.params import FeatureParams
    from voiceid.select.candidates import FeatureBank
    from voiceid.serve.fusion import FusionScorer

    same = gaussian_bank(seed=6, spread=1.0, n_enrolled=10, n_unknown_val=8, n_unknown_test=4, unknown_utts=3)
    meta, X = same.tables["mfcc60"]
    rng = np.random.default_rng(7)
    means = {s: rng.normal(0, 1, 12) for s in meta["speaker"].unique()}  # other speaker traits, other noise
    other = np.stack([means[s] + 1.3 * rng.normal(0, 1, 12) for s in meta["speaker"]]).astype(np.float32)
    bank = FeatureBank({"mfcc60": (meta, X), "seed498": (meta, other)})
    sources = [
        (Source("logreg", "classifier", "mfcc60", "run-1"), fit_logreg(bank)),
        (Source("svc", "classifier", "seed498", "run-2"), fit_logreg(bank, "seed498")),
        (Source("cosine", "embedding", "mfcc60"), None),
    ]
    params = SelectParams(families=("logreg", "svc", "cosine", "fusion"), n_bootstrap=0, champion_metric="eer")
    result = select(sources, bank, params, FeatureParams(sets=("mfcc60", "seed498")))
    by_family = {c.family: c for c in result.candidates}
    assert by_family["logreg"].val_report["eer"] < by_family["svc"].val_report["eer"]  # the best classifier alone
    fusion = by_family["fusion"]
    tried = fusion.calibration["partners_val_eer"]
    assert set(tried) == {"logreg+cosine", "svc+cosine"} and tried["svc+cosine"] < tried["logreg+cosine"]
    assert fusion.calibration["of"] == "svc+cosine" and fusion.source.feature_set == "seed498+mfcc60"
    assert fusion.val_report["eer"] == pytest.approx(tried["svc+cosine"], abs=1e-6)
    assert isinstance(fusion.scorer, FusionScorer)


def test_fusion_embeds_the_val_probes_once_for_every_partner(monkeypatch: pytest.MonkeyPatch) -> None:
    """ECAPA reruns its network for each embedding call: fusing it with n classifiers must not cost n runs."""
    from voiceid.features.params import FeatureParams
    from voiceid.select import protocol
    from voiceid.select.candidates import FeatureBank, build_fusion

    same = gaussian_bank(seed=6, spread=1.0, n_enrolled=10, n_unknown_val=8, n_unknown_test=4, unknown_utts=3)
    meta, X = same.tables["mfcc60"]
    other = np.random.default_rng(8).normal(0, 1, X.shape).astype(np.float32) + X
    bank = FeatureBank({"mfcc60": (meta, X), "seed498": (meta, other)})
    sources = [
        (Source("logreg", "classifier", "mfcc60", "run-1"), fit_logreg(bank)),
        (Source("svc", "classifier", "seed498", "run-2"), fit_logreg(bank, "seed498")),
        (Source("mlp", "classifier", "seed498", "run-3"), fit_logreg(bank, "seed498")),
        (Source("cosine", "embedding", "mfcc60"), None),
    ]
    params = SelectParams(families=("logreg", "svc", "mlp", "cosine"), n_bootstrap=0, champion_metric="eer")
    result = select(sources, bank, params, FeatureParams(sets=("mfcc60", "seed498")))
    embedding = next(c for c in result.candidates if c.family == "cosine")
    calls: list[int] = []
    inner = embedding.scorer.embedder.embed  # type: ignore[union-attr]
    monkeypatch.setattr(embedding.scorer.embedder, "embed", lambda xs: calls.append(len(xs)) or inner(xs))  # type: ignore[union-attr]
    fit_bank = bank.without_test()
    fusion = protocol._fusion(result.candidates, fit_bank, dataclasses.replace(params, families=(*params.families, "fusion")))
    assert not isinstance(fusion, str) and len(fusion.calibration["partners_val_eer"]) == 3
    n_val = int((fit_bank.tables["mfcc60"][0]["split"] == "val").sum())
    assert calls == [n_val]  # one pass over the val probes for three partners
    # and the cached scores change nothing: the same fusion as built from scratch
    partner = next(c for c in result.candidates if f"{c.family}+cosine" == fusion.calibration["of"])
    fresh = build_fusion(partner, embedding, fit_bank, params)
    assert fresh.calibration["identify_weights"] == fusion.calibration["identify_weights"]
    assert fresh.calibration["detect_weights"] == fusion.calibration["detect_weights"]
    assert np.array_equal(fresh.val.score, fusion.val.score)


def test_ties_on_the_champion_metric_go_to_the_better_calibrated_separation() -> None:
    from types import SimpleNamespace

    from voiceid.select.protocol import choose, rank

    lucky = SimpleNamespace(val_report={"eer": 0.0, "score_log_loss": 0.60})
    sure = SimpleNamespace(val_report={"eer": 0.0, "score_log_loss": 0.05})
    worse = SimpleNamespace(val_report={"eer": 0.1, "score_log_loss": 0.01})
    assert choose([lucky, sure, worse], "eer") is sure  # type: ignore[list-item]
    assert rank([worse, lucky, sure], "eer") == [sure, lucky, worse]  # type: ignore[list-item]
    high = SimpleNamespace(val_report={"dir_far_1": 0.5, "score_log_loss": 0.9})
    low = SimpleNamespace(val_report={"dir_far_1": 0.4, "score_log_loss": 0.1})
    assert choose([low, high], "dir_far_1") is high  # higher is better for DIR  # type: ignore[list-item]
