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
from voiceid.select.report import flatten_intervals, threshold_basis
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


# Test figures copied onto the registered version (tags and description), each with its interval.
VERSION_METRICS = {"accuracy": "accuracy", "eer": "EER", "dir_far_1": "DIR@FAR1%", "far": "FAR", "frr": "FRR"}


def _fmt(x: Any) -> str:
    return f"{float(x):.4g}"


def version_tags(champion: Champion, summary: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, str]:
    """Tags of the registered champion version: what it is, how it decides, how it scored, on what data and code."""
    champ = summary["champion"]
    metric = champ["champion_metric"]
    source = summary["candidates"].get(champion.family, {})
    out = {
        "family": champion.family,
        "feature_set": str(source.get("feature_set", "")),
        "source_run_id": str(source.get("run_id", "")),
        "threshold": f"{champion.threshold:.6g}",
        "threshold_rule": champion.threshold_rule,
        "champion_metric": metric,
        f"val_{metric}": _fmt(champ[f"val_{metric}"]),
    }
    flat = flatten_intervals(champ["test"])
    out.update({f"test_{k}": _fmt(flat[k]) for k in VERSION_METRICS if k in flat})
    return {**out, **tags}


MODEL_DESCRIPTION = """voiceid champions: open-set speaker identification (*is this person enrolled, and who?*).

Each version is the model one `dvc repro` selected on validation data among every grid family,
embedding system and fusion candidate, then scored once on test; the alias **@champion** names
the current one, and each version's description gives its family, feature set, threshold and
test figures. Use it with `voiceid identify --model models:/<name>@champion`, `voiceid enroll`,
or `mlflow models serve -m models:/<name>@champion`."""


def version_description(champion: Champion, summary: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """Markdown the registry shows on the version page: family, features, threshold, val/test figures, data, code."""
    champ, n = summary["champion"], summary.get("n_probes", {})
    metric = champ["champion_metric"]
    source = summary["candidates"].get(champion.family, {})
    fs = source.get("feature_set") or "-"
    run = f", from final run `{source['run_id']}`" if source.get("run_id") else ""
    test = champ["test"]
    figures = "; ".join(
        f"{label} {_fmt(test[k]['value'])} [{_fmt(test[k]['lo'])}, {_fmt(test[k]['hi'])}]"
        for k, label in VERSION_METRICS.items()
        if k in test
    )
    emb = summary.get("embedding_model") or {}
    lines = [
        f"voiceid champion: **{champion.family}** on feature set `{fs}`{run}.",
        "",
        f"- Decides at threshold **{champion.threshold:.4g}** ({threshold_basis(champion.threshold_rule, champ)}): "
        "a probe scoring below it is `unknown`.",
        f"- Chosen by val `{metric}` = {_fmt(champ[f'val_{metric}'])}: {champ.get('champion_metric_reason', '')}",
        f"- Test ({n.get('test_enrolled', '?')} enrolled + {n.get('test_unknown', '?')} unknown probes, "
        f"95% bootstrap intervals): {figures}.",
        f"- Data: prepared manifest `data_hash` {tags.get('data_hash', 'unknown')}; code: git commit "
        f"{tags.get('git_commit', 'unknown')}.",
    ]
    if emb:
        backend = f" ({emb['backend']} back-end)" if emb.get("backend") else ""
        lines.append(f"- New speakers are enrolled through its embedding model `{emb['family']}`{backend} (`voiceid enroll`).")
    return "\n".join(lines)


def register_champion(
    champion: Champion,
    params: SelectParams,
    summary: Mapping[str, Any],
    tags: Mapping[str, str],
) -> dict[str, str]:
    """Log the champion as a pyfunc model, register it under ``registered_model`` with alias ``champion``."""
    from voiceid.tracking.pyfunc import ARTIFACT_KEY, write_model_code

    flat = flatten_intervals(summary["champion"]["test"])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save_champion(champion, Path(tmp) / "champion.pkl")
        # The model script and the champion pickle refer to voiceid: ship the package source (no caches) with them.
        code = shutil.copytree(PACKAGE_DIR, Path(tmp) / "voiceid", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run_id, model_uri = tracking.log_pyfunc_run(
            params.experiment,
            f"select-{champion.family}",
            python_model=str(write_model_code(Path(tmp))),  # models from code: no pickle of the wrapper
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
        tags={**version_tags(champion, summary, tags), "select_run_id": run_id},
        description=version_description(champion, summary, tags),
        model_description=MODEL_DESCRIPTION,
        model_tags={"task": "open-set speaker identification", "pipeline": "voiceid (dvc repro)"},
    )
    return {
        "run_id": run_id,
        "model_uri": model_uri,
        "version": version,
        "registered_uri": f"models:/{params.registered_model}@champion",
    }
