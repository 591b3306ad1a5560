"""Selection I/O: candidates from MLflow, the champion's pyfunc registration, report and plot tables.

The math of the selection is in :mod:`voiceid.selection`; every MLflow call goes through
:mod:`voiceid.tracking`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from voiceid import openset, tracking
from voiceid.champion import OUTPUT_COLUMNS, Champion, save_champion
from voiceid.config import as_dict
from voiceid.scoring import det_curve
from voiceid.selection import Candidate, SelectionResult, SelectParams, Source

# Distributions the champion's code imports (explicit pins: no requirement inference).
CHAMPION_REQUIREMENTS = ("numpy", "pandas", "scipy", "scikit-learn", "librosa", "soundfile", "soxr", "pyarrow", "pyyaml", "cloudpickle")
PACKAGE_DIR = Path(__file__).resolve().parent


def find_sources(params: SelectParams, data_hash: str) -> tuple[list[Source], dict[str, str]]:
    """Best final run per family among runs of this data; families without one are skipped (with a reason)."""
    sources: list[Source] = []
    skipped: dict[str, str] = {}
    for family in params.families:
        if family == "cosine":
            sources.append(Source("cosine", "embedding", params.cosine_feature_set))
            continue
        runs = tracking.search_final_runs(family=family, tags={"data_hash": data_hash})
        if family == "ecapa":
            metric, maximize, kind, feature_set = params.ecapa_val_metric, False, "embedding", "logmel"
        else:
            runs = [r for r in runs if r.tags.get("kind", "classifier") == "classifier"]
            metric, maximize, kind, feature_set = params.val_metric, True, "classifier", ""
        best = tracking.best_of(runs, metric, maximize=maximize)
        if best is None:
            skipped[family] = f"no final run with metric {metric} for data_hash {data_hash[:12]}"
        elif best.model_uri is None:
            skipped[family] = f"final run {best.run_id} has no logged model"
        else:
            fs = feature_set or best.tags.get("feature_set", "")
            sources.append(Source(family, kind, fs, best.run_id, best.model_uri, metric, best.metrics[metric]))
    return sources, skipped


def load_sources(sources: Sequence[Source]) -> list[tuple[Source, Any]]:
    """Each source with its model loaded from its MLflow URI (``cosine`` has none)."""
    out = []
    for s in sources:
        if s.model_uri is None:
            out.append((s, None))
        elif s.family == "ecapa":
            out.append((s, load_ecapa(s)))
        else:
            out.append((s, tracking.load_model(s.model_uri, "sklearn")))
    return out


def load_ecapa(source: Source) -> Any:
    """The ECAPA run's network as an eager :class:`~voiceid.ecapa.ECAPATDNN`.

    The run stores a ``torch.export`` graph; its weights are loaded into a network rebuilt
    from the run's ``ecapa_config.json``, which batches any length and pickles into the
    champion like any module.
    """
    from voiceid.ecapa import ECAPATDNN, EcapaConfig

    assert source.model_uri is not None and source.run_id is not None
    graph = tracking.load_model(source.model_uri, "pytorch")
    config = EcapaConfig(**tracking.load_run_json(source.run_id, "ecapa_config.json"))
    model = ECAPATDNN(config)
    model.load_state_dict(graph.state_dict())
    return model.eval()


def requirements_for(champion: Champion) -> list[str]:
    """Pinned pip requirements of the champion's scorers (torch/catboost only when used)."""
    dists = list(CHAMPION_REQUIREMENTS)
    families = {champion.family, *([champion.embedding.embedder_id.split(":")[0]] if champion.embedding else [])}
    if "ecapa" in families:
        dists.append("torch")
    if champion.family == "catboost":
        dists.append("catboost")
    return tracking.pip_requirements(*dists)


def register_champion(
    champion: Champion,
    params: SelectParams,
    summary: Mapping[str, Any],
    tags: Mapping[str, str],
) -> dict[str, str]:
    """Log the champion as a pyfunc model, register it under ``registered_model`` with alias ``champion``."""
    from voiceid.tracking.pyfunc import ARTIFACT_KEY, ChampionModel

    flat = _flat(summary["champion"]["test"])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save_champion(champion, Path(tmp) / "champion.pkl")
        # The pickle refers to voiceid classes: ship the package source (no caches) with it.
        code = shutil.copytree(PACKAGE_DIR, Path(tmp) / "voiceid", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run_id, model_uri = tracking.log_pyfunc_run(
            params.experiment,
            f"select-{champion.family}",
            python_model=ChampionModel(),
            artifacts={ARTIFACT_KEY: str(bundle)},
            code_paths=[str(code)],
            requirements=requirements_for(champion),
            inputs=[("path", "string", False), ("waveform", "double[]", False), ("sample_rate", "long", False)],
            outputs=[(c, t) for c, t in zip(OUTPUT_COLUMNS, ("string", "double", "double", "boolean", "string"))],
            predict_params={"gallery": ""},
            params=as_dict(params),
            metrics={f"test_{k}": v for k, v in flat.items()},
            tags={**tags, "family": champion.family, "threshold_rule": champion.threshold_rule},
            json_artifacts={"selection.json": summary, "label_map.json": champion.label_map},
        )
    version = tracking.register_model(
        model_uri,
        params.registered_model,
        alias="champion",
        tags={"family": champion.family, "threshold": f"{champion.threshold:.6g}", "threshold_rule": champion.threshold_rule,
              "select_run_id": run_id, **tags},
    )
    return {"run_id": run_id, "model_uri": model_uri, "version": version,
            "registered_uri": f"models:/{params.registered_model}@champion"}


# --- report ----------------------------------------------------------------------------------


def _flat(ci: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"eer": {"value", "lo", "hi"}}`` -> ``{"eer": v, "eer_lo": lo, "eer_hi": hi}``."""
    out: dict[str, float] = {}
    for k, d in ci.items():
        out[k], out[f"{k}_lo"], out[f"{k}_hi"] = d["value"], d["lo"], d["hi"]
    return out


def _r(x: float) -> float:
    return round(float(x), 6)


def candidate_summary(c: Candidate, result: SelectionResult, params: SelectParams) -> dict[str, Any]:
    s = c.source
    out: dict[str, Any] = {"kind": s.kind, "feature_set": s.feature_set, "run_id": s.run_id or ""}
    if s.val_metric:
        out[s.val_metric] = _r(s.val_value or float("nan"))
    cal = {k: (_r(v) if isinstance(v, float) else v) for k, v in c.calibration.items() if k != "losses"}
    cal.update({f"{m}_{k}": _r(v) for m, d in c.calibration.get("losses", {}).items() for k, v in d.items()})
    out["calibration"] = cal
    out["thresholds"] = {rule: _r(c.threshold(rule)) for rule in c.thresholds}
    if s.kind == "embedding":
        cal_obj = c.scorer.calibrator  # type: ignore[union-attr]
        out["cosine_thresholds"] = {rule: _r(cal_obj.inverse(c.threshold(rule))) for rule in c.thresholds}
    out["val"] = {k: _r(v) for k, v in c.val_report.items()}
    out["test"] = {k: _r(v) for k, v in _flat(result.test_reports[c.family]).items()}
    out["test_by_rule"] = {rule: {k: _r(v) for k, v in d.items()} for rule, d in result.test_by_rule[c.family].items()}
    return out


def summary(result: SelectionResult, params: SelectParams, skipped: Mapping[str, str]) -> dict[str, Any]:
    """The content of metrics/selection.json (registry fields are added by the stage)."""
    c, e = result.champion, result.embedding
    champ = {
        "family": c.family,
        "threshold_rule": params.threshold_rule,
        "threshold": _r(c.threshold(params.threshold_rule)),
        "champion_metric": params.champion_metric,
        f"val_{params.champion_metric}": _r(c.val_report[params.champion_metric]),
        "test": result.test_reports[c.family],
    }
    return {
        "champion": champ,
        "embedding_model": ({"family": e.family, "threshold": _r(e.threshold(params.threshold_rule))} if e else {}),
        "candidates": {x.family: candidate_summary(x, result, params) for x in result.candidates},
        "skipped": {**dict(skipped), **result.skipped},
        "n_probes": {
            "val_enrolled": int(c.val.known.sum()), "val_unknown": int((~c.val.known).sum()),
            "test_enrolled": int(result.test[c.family].known.sum()), "test_unknown": int((~result.test[c.family].known).sum()),
        },
    }


def for_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """The full summary with the champion's intervals flattened: reports/selection.json."""
    out = dict(report)
    champ = dict(out["champion"])
    champ["test"] = {k: _r(v) for k, v in _flat(champ["test"]).items()}
    out["champion"] = champ
    return out


_METRIC_KEYS = ("kind", "feature_set", "thresholds", "test")


def metrics_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """metrics/selection.json: the champion and each candidate's test figures with intervals.

    Calibration losses, val figures, per-rule FAR/FRR and run ids stay in the full report, so
    ``dvc metrics show`` lists the open-set numbers rather than every fitted quantity.
    """
    full = for_json(report)
    return {
        "champion": full["champion"],
        "embedding_model": full["embedding_model"],
        "candidates": {f: {k: c[k] for k in _METRIC_KEYS if k in c} for f, c in full["candidates"].items()},
    }


# --- plot tables (DVC plots: data files + templates in dvc_plots/) ---------------------------

_CLIP = 1e-3  # DET axes are normal deviates; 0 and 1 are clipped to stay finite


def plot_tables(result: SelectionResult, params: SelectParams) -> dict[str, pd.DataFrame]:
    """det.csv, roc.csv (every candidate, test), scores.csv and confusion.csv (the champion, test)."""
    det_rows, roc_rows = [], []
    for c in result.candidates:
        p = result.test[c.family]
        p_fa, p_miss, _ = det_curve(p.score, p.known.astype(int))
        # ``point`` keeps the threshold order, so a curve is drawn along it rather than sorted by x.
        for i, (fa, miss) in enumerate(zip(p_fa, p_miss)):
            det_rows.append((c.family, i, _r(fa), _r(miss), _r(norm.ppf(np.clip(fa, _CLIP, 1 - _CLIP))),
                             _r(norm.ppf(np.clip(miss, _CLIP, 1 - _CLIP)))))
            roc_rows.append((c.family, i, _r(fa), _r(1 - miss)))
    champ = result.champion
    p = result.test[champ.family]
    t = champ.threshold(params.threshold_rule)
    scores = pd.DataFrame({
        "score": np.round(p.score, 6),
        "group": np.where(p.known, "enrolled", "unknown"),
        "threshold": _r(t),
    })
    actual = np.where(p.known, p.true, openset.UNKNOWN)
    confusion = pd.DataFrame({"actual": actual, "predicted": openset.decide(p, t)})
    return {
        "det.csv": pd.DataFrame(det_rows, columns=["candidate", "point", "p_fa", "p_miss", "p_fa_probit", "p_miss_probit"]),
        "roc.csv": pd.DataFrame(roc_rows, columns=["candidate", "point", "fpr", "tpr"]),
        "scores.csv": scores,
        "confusion.csv": confusion,
    }
