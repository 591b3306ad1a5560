"""Where candidates come from: each family's final run in MLflow, loaded back (through ``voiceid.tracking``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voiceid import tracking
from voiceid.select.candidates import Source
from voiceid.select.params import SelectParams


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
