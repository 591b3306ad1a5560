"""Registering the champion: a self-contained pyfunc model with pinned requirements, aliased ``champion``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voiceid import tracking
from voiceid.config import as_dict
from voiceid.select.params import SelectParams
from voiceid.select.report import flatten_intervals
from voiceid.serve.champion import OUTPUT_COLUMNS, Champion
from voiceid.serve.persist import save_champion
from voiceid.serve.request import INPUT_COLUMNS

# Distributions the champion's code imports (explicit pins: no requirement inference).
CHAMPION_REQUIREMENTS = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "librosa",
    "soundfile",
    "soxr",
    "pyarrow",
    "pyyaml",
    "cloudpickle",
)


PACKAGE_DIR = Path(__file__).resolve().parent


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

    flat = flatten_intervals(summary["champion"]["test"])
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
            inputs=list(INPUT_COLUMNS),  # path | waveform + sample_rate | audio_b64, all optional per row
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
        tags={
            "family": champion.family,
            "threshold": f"{champion.threshold:.6g}",
            "threshold_rule": champion.threshold_rule,
            "select_run_id": run_id,
            **tags,
        },
    )
    return {
        "run_id": run_id,
        "model_uri": model_uri,
        "version": version,
        "registered_uri": f"models:/{params.registered_model}@champion",
    }
