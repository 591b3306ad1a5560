"""Selection: candidates from MLflow, val-only fitting (test data never reaches a threshold), the stage."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_select import fit_logreg, gaussian_bank

from voiceid.features.params import FeatureParams
from voiceid.scoring import openset
from voiceid.select.candidates import FeatureBank, Source
from voiceid.select.params import SelectParams
from voiceid.select.protocol import select

REPO = Path(__file__).resolve().parents[1]
FEATURES = FeatureParams(sets=("mfcc60",))
PARAMS = SelectParams(families=("logreg", "cosine"), n_bootstrap=50, seed=1)


def sources_for(bank: FeatureBank) -> list[tuple[Source, object]]:
    model = fit_logreg(bank)
    return [
        (Source("logreg", "classifier", "mfcc60", "run-1", "runs:/run-1/model", "val_f1_weighted", 0.9), model),
        (Source("cosine", "embedding", "mfcc60"), None),
    ]


def frozen_state(result) -> dict:
    """Everything fitted before the test split is read."""
    out = {"champion": result.champion.family, "embedding": result.embedding.family}
    for c in result.candidates:
        out[c.family] = {
            "thresholds": {r: c.threshold(r) for r in c.thresholds},
            "val": c.val_report,
            "calibration": json.dumps(c.calibration, sort_keys=True, default=str),
        }
    return out


def test_without_test_drops_every_test_row() -> None:
    bank = gaussian_bank()
    meta, X = bank.without_test().tables["mfcc60"]
    assert "test" not in set(meta["split"]) and len(meta) == len(X)
    assert len(meta) == (bank.tables["mfcc60"][0]["split"] != "test").sum()


def test_select_fits_on_val_and_reports_on_test() -> None:
    bank = gaussian_bank(seed=0)
    result = select(sources_for(bank), bank, PARAMS, FEATURES)
    assert {c.family for c in result.candidates} == {"logreg", "cosine"}
    assert result.embedding is not None and result.embedding.family == "cosine"
    meta = bank.tables["mfcc60"][0]
    test_rows = meta[meta["split"] == "test"]
    n_test_enrolled, n_test_unknown = int((test_rows["role"] == "enrolled").sum()), int((test_rows["role"] == "unknown").sum())
    for c in result.candidates:
        assert len(c.val) == (meta["split"] == "val").sum()
        assert len(result.test[c.family]) == (meta["split"] == "test").sum()
        assert c.thresholds["fpr"].fpr_ <= PARAMS.target_fpr
        ci = result.test_reports[c.family]
        assert {"accuracy", "f1_weighted", "far", "frr", "dir_far_1", "dir_far_5", "eer", "min_dcf"} <= set(ci)
        # The point values are the open-set report of the test probes at the rule's val threshold ...
        probes = result.test[c.family]
        assert (int(probes.known.sum()), int((~probes.known).sum())) == (n_test_enrolled, n_test_unknown)
        expected = openset.report(probes, c.threshold(PARAMS.threshold_rule), p_target=PARAMS.p_target)
        assert {k: d["value"] for k, d in ci.items()} == pytest.approx(expected)
        # ... each inside its bootstrap interval, and the intervals come from real resamples.
        for k, d in ci.items():
            assert d["lo"] <= d["value"] <= d["hi"], (c.family, k)
        assert sum(d["lo"] < d["hi"] for d in ci.values()) >= 3, c.family
        assert ci["accuracy"]["value"] > 0.8  # separable synthetic speakers
    logreg = next(c for c in result.candidates if c.family == "logreg")
    assert logreg.calibration["method"] in PARAMS.calibration_methods
    best_val = max(c.val_report["dir_far_1"] for c in result.candidates)
    assert result.champion.val_report["dir_far_1"] == best_val


def _replicate_test_rows(bank: FeatureBank, copies: int) -> FeatureBank:
    """The same bank with every test row present ``copies`` times (new utterance ids)."""
    meta, X = bank.tables["mfcc60"]
    t = np.flatnonzero((meta["split"] == "test").to_numpy())
    extra = [meta.iloc[t].assign(utt_id=meta.iloc[t]["utt_id"] + f"-copy{k}", content_hash=meta.iloc[t]["content_hash"] + f"-{k}")
             for k in range(copies - 1)]
    return FeatureBank({"mfcc60": (pd.concat([meta, *extra], ignore_index=True), np.concatenate([X, *[X[t]] * (copies - 1)]))})


def test_test_intervals_are_seeded_and_narrow_with_more_test_probes() -> None:
    bank = gaussian_bank(seed=0)
    sources = sources_for(bank)
    a, again = select(sources, bank, PARAMS, FEATURES), select(sources, bank, PARAMS, FEATURES)
    assert a.test_reports == again.test_reports  # a fixed seed gives identical intervals
    # select.seed drives the resamples: with the cosine baseline alone and the plain fpr rule (nothing
    # else seeded) another seed keeps every fitted value and point figure but draws other intervals.
    cosine, plain = [sources[1]], dataclasses.replace(PARAMS, far_confidence=None)
    base = select(cosine, bank, plain, FEATURES).test_reports["cosine"]
    other = select(cosine, bank, dataclasses.replace(plain, seed=PARAMS.seed + 1), FEATURES).test_reports["cosine"]
    assert {k: d["value"] for k, d in other.items()} == {k: d["value"] for k, d in base.items()}
    assert other != base

    # Four copies of every test probe: thresholds (val only) and point values stay, intervals
    # shrink by about 1/sqrt(4).
    four = select(sources, _replicate_test_rows(bank, 4), PARAMS, FEATURES)
    for c in a.candidates:
        assert len(four.test[c.family]) == 4 * len(a.test[c.family])
        small, big = a.test_reports[c.family], four.test_reports[c.family]
        assert {k: d["value"] for k, d in big.items()} == pytest.approx({k: d["value"] for k, d in small.items()})
        keys = ("frr", "dir", "open_set_accuracy", "eer")
        width = sum(small[k]["hi"] - small[k]["lo"] for k in keys)
        width4 = sum(big[k]["hi"] - big[k]["lo"] for k in keys)
        assert 0 < width4 < 0.7 * width, (c.family, width, width4)


def test_thresholds_never_see_test_data() -> None:
    bank = gaussian_bank(seed=2)
    meta, X = bank.tables["mfcc60"]
    test = (meta["split"] == "test").to_numpy()
    rng = np.random.default_rng(9)
    meta2 = meta.copy()
    meta2.loc[test, "speaker"] = rng.permutation(meta.loc[test, "speaker"].to_numpy())  # relabel test probes
    X2 = X.copy()
    X2[test] = rng.normal(0, 3, X2[test].shape)  # and replace their features
    other = FeatureBank({"mfcc60": (meta2, X2)})
    sources = sources_for(bank)  # the same fitted models for both runs
    a, b = select(sources, bank, PARAMS, FEATURES), select(sources, other, PARAMS, FEATURES)
    assert frozen_state(a) == frozen_state(b)
    assert a.test_reports != b.test_reports  # the test split did change


def test_far_confidence_resamples_the_val_strangers_by_speaker() -> None:
    from voiceid.select.report import candidate_summary
    from voiceid.select.thresholds import FprThreshold

    bank = gaussian_bank(seed=0)
    sources = sources_for(bank)
    unsure = dataclasses.replace(PARAMS, far_confidence=None)
    plain = select(sources, bank, unsure, FEATURES)
    sure = dataclasses.replace(PARAMS, far_confidence=0.9)
    result = select(sources, bank, sure, FEATURES)
    grouped_differs = False
    for c in result.candidates:
        base = next(p for p in plain.candidates if p.family == c.family)
        assert c.threshold("fpr") >= base.threshold("fpr")  # never lets in more strangers than the plain rule
        assert c.threshold("eer") == base.threshold("eer")  # the other rules are untouched
        # the resampled groups are the val probes' speakers, seeded by select.seed
        by_speaker = FprThreshold(sure.target_fpr, 0.9, seed=sure.seed).fit(c.val.score, c.val.known.astype(int), c.val.true)
        by_probe = FprThreshold(sure.target_fpr, 0.9, seed=sure.seed).fit(c.val.score, c.val.known.astype(int))
        assert c.threshold("fpr") == by_speaker.threshold_
        grouped_differs |= by_probe.threshold_ != by_speaker.threshold_
        thresholds = candidate_summary(c, result, sure)["thresholds"]
        assert thresholds["fpr_point"] == pytest.approx(base.threshold("fpr"), abs=1e-6)
    assert grouped_differs  # so the check above can tell speakers from probes
    from voiceid.select.report import summary

    champ = result.champion
    unknown = champ.val.true[~champ.val.known]
    assert summary(result, sure, {})["champion"]["threshold_basis"] == {
        "target_fpr": sure.target_fpr,
        "far_confidence": 0.9,
        "val_unknown_probes": len(unknown),
        "val_unknown_speakers": len(set(unknown)),
    }
    assert 1 < len(set(unknown)) < len(unknown)  # speakers, not probes, are counted
    assert "fpr_point" not in candidate_summary(plain.candidates[0], plain, unsure)["thresholds"]


def test_params_check_rejects_bad_values() -> None:
    from voiceid.config import ConfigError, from_mapping

    with pytest.raises(ConfigError, match="target_fpr"):
        from_mapping(SelectParams, {"target_fpr": 1.5}, "select")
    with pytest.raises(ConfigError, match="threshold_rule"):
        from_mapping(SelectParams, {"threshold_rule": "roc"}, "select")
    with pytest.raises(ConfigError, match="far_confidence"):
        from_mapping(SelectParams, {"far_confidence": 1.0}, "select")


# --- MLflow: candidate search and the stage end to end ----------------------------------------


def log_fake_final(family: str, value: float, data_hash: str, model: object, feature_set: str = "mfcc60") -> str:
    from voiceid import tracking

    return tracking.log_final_run(
        tracking.experiment_name("test", feature_set), f"{family}-final", params={"seed": 0},
        metrics={"val_f1_weighted": value}, model=model,
        tags={"family": family, "feature_set": feature_set, "kind": "classifier", "data_hash": data_hash},
    )


def write_run_ids(runs_dir: Path, family: str, ids: dict[str, str]) -> None:
    """``<family>.json`` as the grid (per feature set) or the ECAPA stage (``logmel``: flat) writes it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    body = {"final_run_id": ids["logmel"]} if family == "ecapa" else {fs: {"final_run_id": r} for fs, r in ids.items()}
    (runs_dir / f"{family}.json").write_text(json.dumps(body))


def test_find_sources_best_val_run_of_this_data(store: str, tmp_path: Path) -> None:
    from voiceid.select.sources import find_sources, load_sources

    bank = gaussian_bank()
    model = fit_logreg(bank)
    worse = log_fake_final("logreg", 0.7, "H", model, feature_set="seed498")
    best = log_fake_final("logreg", 0.9, "H", model)
    log_fake_final("logreg", 0.99, "H", model)  # a run this pipeline did not write: never considered
    write_run_ids(tmp_path / "models", "logreg", {"mfcc60": best, "seed498": worse})
    params = SelectParams(families=("logreg", "svc", "cosine"))
    sources, skipped = find_sources(params, tmp_path / "models", trained=("logreg", "svc"))
    assert [s.family for s in sources] == ["logreg", "cosine"]
    assert sources[0].run_id == best and sources[0].val_value == pytest.approx(0.9)
    assert "svc" in skipped and "svc.json" in skipped["svc"]
    loaded = load_sources(sources)
    X, _ = bank.rows("mfcc60", "enrolled", "val")
    assert np.allclose(loaded[0][1].predict_proba(X), model.predict_proba(X))
    assert loaded[1][1] is None


def test_stage_writes_metrics_plots_and_registers_champion(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voiceid import tracking
    from voiceid.features.tables import write_feature_table

    sys.path.insert(0, str(REPO))
    from stages.selection import main

    bank = gaussian_bank(seed=5)
    meta, X = bank.tables["mfcc60"]
    (tmp_path / "features").mkdir()
    write_feature_table(tmp_path / "features" / "mfcc60.parquet", meta, X, [f"f{i}" for i in range(X.shape[1])])
    manifest = tmp_path / "manifest.parquet"
    meta.to_parquet(manifest, index=False)
    run_id = log_fake_final("logreg", 0.9, tracking.data_hash(manifest), fit_logreg(bank))
    write_run_ids(tmp_path / "models", "logreg", {"mfcc60": run_id})
    params = {
        "select": {"families": ["logreg", "cosine"], "n_bootstrap": 20, "threshold_rule": "eer", "registered_model": "vid-test"},
        "features": {"sets": ["mfcc60"]},
        "grid": {"families": ["logreg"]},
        "tracking": {"uri": store},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rc = main(["--params", "params.yaml", "--features-dir", "features", "--manifest", str(manifest), "--runs-dir", "models",
               "--metrics", "metrics/selection.json", "--report", "reports/selection.json", "--plots-dir", "plots/select"])
    assert rc == 0
    out = capsys.readouterr().out
    full = json.loads((tmp_path / "reports" / "selection.json").read_text())
    store = full["embedding_model"]
    assert store["chosen_by"].startswith("later_eer") and store["later_eer"] == full["candidates"]["cosine"]["later"]["eer"]
    assert f"select: enrollment store: cosine through {store['backend']} ({store['chosen_by']})" in out
    assert full["candidates"]["logreg"]["calibration"]["method"] in ("isotonic", "sigmoid")
    assert set(full["candidates"]["logreg"]["test_by_rule"]) == {"fbeta", "fpr", "eer"}
    report = json.loads((tmp_path / "metrics" / "selection.json").read_text())
    # dvc's metrics file holds the open-set figures, not every fitted quantity
    assert {"kind", "feature_set", "thresholds", "test"} <= set(report["candidates"]["logreg"])
    assert not {"calibration", "val", "run_id", "test_by_rule"} & set(report["candidates"]["logreg"])
    champ = report["champion"]
    assert champ["family"] in {"logreg", "cosine"} and champ["threshold_rule"] == "eer"
    assert {"far", "far_lo", "far_hi", "dir_far_1", "eer", "min_dcf", "accuracy"} <= set(champ["test"])
    assert set(report["candidates"]) == {"logreg", "cosine"}
    assert set(report["candidates"]["cosine"]["thresholds"]) == {"fbeta", "fpr", "eer", "fpr_point"}  # far_confidence 0.8
    for name in ("det.csv", "roc.csv", "scores.csv", "confusion.csv"):
        assert len(pd.read_csv(tmp_path / "plots" / "select" / name)) > 0
    version = tracking.aliased_version("vid-test", "champion")
    assert version is not None and version["version"] == champ["version"]
    assert version["tags"]["family"] == champ["family"]


def test_ecapa_candidate_from_an_exported_run(store: str, tmp_path: Path) -> None:
    """The ECAPA stage's run layout (pt2 graph + ecapa_config.json) becomes an embedding candidate."""
    import torch
    from synthetic_select import layout

    from voiceid import tracking
    from voiceid.ecapa.model import ECAPATDNN, EcapaConfig
    from voiceid.select.sources import find_sources, load_sources
    from voiceid.serve.frontend import EcapaEmbedder

    config = EcapaConfig(n_mels=20, channels=16, scale=4, se_channels=8, attention_channels=8, embedding_dim=8, cmn=False)
    torch.manual_seed(0)
    net = ECAPATDNN(config).eval()
    run_id = tracking.log_final_run(
        tracking.experiment_name("test", "logmel"), "ecapa-final", params={}, metrics={"val_eer": 0.1},
        tags={"family": "ecapa", "feature_set": "logmel", "kind": "embedder", "data_hash": "H"},
        json_artifacts={"ecapa_config.json": config.to_dict()},
    )
    rng = np.random.default_rng(0)
    tracking.log_pytorch_model(run_id, net, rng.normal(size=(2, 30, 20)).astype(np.float32), variable_axes=(0, 1))

    meta = layout(n_enrolled=4, n_unknown_val=3, n_unknown_test=3)
    spectra = {s: rng.normal(0, 2, 20) for s in meta["speaker"].unique()}
    mats = [(spectra[s] + 0.3 * rng.normal(size=(int(rng.integers(30, 50)), 20))).astype(np.float32) for s in meta["speaker"]]
    bank = FeatureBank({"logmel": (meta, mats)})

    write_run_ids(tmp_path / "models", "ecapa", {"logmel": run_id})
    sources, skipped = find_sources(SelectParams(families=("ecapa",)), tmp_path / "models", trained=("ecapa",))
    assert [s.run_id for s in sources] == [run_id] and skipped == {}
    (source, model), = load_sources(sources)
    with torch.no_grad():
        x = torch.from_numpy(mats[0][None])
        assert torch.allclose(model(x), net(x), atol=1e-5)
    result = select([(source, model)], bank, SelectParams(families=("ecapa",), n_bootstrap=10), FEATURES)
    assert "ecapa" not in result.skipped and result.champion.family == "ecapa" and result.embedding is result.champion
    assert isinstance(result.champion.scorer.embedder, EcapaEmbedder)
    assert result.champion.scorer.embedder_id == f"ecapa:{run_id}"
