"""Where candidates come from: each family's final run in MLflow, loaded back (through ``voiceid.tracking``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voiceid import tracking
from voiceid.select.candidates import Kind, Source
from voiceid.select.params import SelectParams


def run_ids(runs_dir: str | Path, family: str) -> dict[str, str]:
    """``{feature_set: final_run_id}`` that this pipeline's stage for ``family`` wrote to ``runs_dir/<family>.json``.

    The grid writes one entry per feature set, ECAPA one flat summary (feature set ``logmel``).
    """
    path = Path(runs_dir) / f"{family}.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    if "final_run_id" in summary:
        return {"logmel": str(summary["final_run_id"])}
    return {
        fs: str(entry["final_run_id"]) for fs, entry in summary.items() if isinstance(entry, dict) and "final_run_id" in entry
    }


def find_sources(params: SelectParams, runs_dir: str | Path, trained: Sequence[str]) -> tuple[list[Source], dict[str, str]]:
    """Each configured family's best final run among *this pipeline run's* runs, and why a family has none.

    ``trained`` names the families the pipeline trains (``grid.families`` + ``ecapa``); their
    stages write their final run ids to ``runs_dir/<family>.json``, a file ``dvc.yaml`` declares,
    so ``dvc.lock`` pins exactly which models select compared.  Stale runs of earlier
    ``dvc repro`` calls in the same MLflow store are never considered.
    """
    sources: list[Source] = []
    skipped: dict[str, str] = {}
    built = params.built_feature_sets()
    for family in params.families:
        if family == "fusion":
            continue  # built by select from the other candidates
        if family in built:
            sources.append(Source(family, "embedding", built[family]))
            continue
        if family not in trained:
            skipped[family] = "not trained by this pipeline (not in grid.families)"
            continue
        try:
            ids = run_ids(runs_dir, family)
        except (OSError, ValueError) as exc:
            skipped[family] = f"no run ids from its stage ({exc})"
            continue
        runs = tracking.get_runs(list(ids.values()))
        metric: str
        kind: Kind
        if family == "ecapa":
            metric, maximize, kind = params.ecapa_val_metric, False, "embedding"
        else:
            runs = [r for r in runs if r.tags.get("kind", "classifier") == "classifier"]
            metric, maximize, kind = params.val_metric, True, "classifier"
        best = tracking.best_of(runs, metric, maximize=maximize)
        if best is None:
            skipped[family] = f"none of its final runs {sorted(ids.values())} has metric {metric}"
        elif best.model_uri is None:
            skipped[family] = f"final run {best.run_id} has no logged model"
        else:
            fs = "logmel" if family == "ecapa" else best.tags.get("feature_set", "")
            sources.append(Source(family, kind, fs, best.run_id, best.model_uri, metric, best.metrics[metric]))
    return sources, skipped


def load_sources(sources: Sequence[Source]) -> list[tuple[Source, Any]]:
    """Each source with its model loaded from its MLflow URI (``cosine``, ``dvector``, ``joint`` have none)."""
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
    """The ECAPA run's network as an eager :class:`~voiceid.ecapa.model.ECAPATDNN`.

    The run stores a ``torch.export`` graph; its weights are loaded into a network rebuilt
    from the run's ``ecapa_config.json``, which batches any length and pickles into the
    champion like any module.
    """
    from voiceid.ecapa.model import ECAPATDNN, EcapaConfig

    assert source.model_uri is not None and source.run_id is not None
    graph = tracking.load_model(source.model_uri, "pytorch")
    config = EcapaConfig(**tracking.load_run_json(source.run_id, "ecapa_config.json"))
    model = ECAPATDNN(config)
    model.load_state_dict(graph.state_dict())
    return model.eval()
