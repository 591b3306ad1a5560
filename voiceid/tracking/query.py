"""Reading runs back: filtered searches, the best run by a metric, artifacts, a runs table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voiceid.tracking._common import STAGE_TAG, Stage, finite, quote
from voiceid.tracking.config import import_mlflow

if TYPE_CHECKING:
    import pandas as pd

_MAX_RESULTS = 50000
_NEWEST_FIRST = ["attributes.start_time DESC"]


@dataclass(frozen=True)
class RunRecord:
    """What other stages need to know about a logged run."""

    run_id: str
    experiment: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def model_uri(self) -> str | None:
        return self.tags.get("model_uri")

    @property
    def family(self) -> str:
        return self.tags.get("family", "")


def _filter(stage: str | None, family: str | None = None, tags: Mapping[str, str] | None = None, extra: str | None = None) -> str:
    clauses = [f"tags.{STAGE_TAG} = '{quote(stage)}'"] if stage is not None else []
    if family is not None:
        clauses.append(f"tags.family = '{quote(family)}'")
    clauses += [f"tags.`{quote(k)}` = '{quote(str(v))}'" for k, v in (tags or {}).items()]
    if extra:
        clauses.append(extra)
    return " and ".join(clauses)


def _experiments(client: Any, prefix: str) -> dict[str, str]:
    """``{experiment_id: name}`` of every experiment named ``prefix*``."""
    return {e.experiment_id: e.name for e in client.search_experiments(max_results=_MAX_RESULTS) if e.name.startswith(prefix)}


def experiment_ids(prefix: str = "voiceid/") -> dict[str, str]:
    """``{name: experiment_id}`` of every active experiment named ``prefix*``, oldest first (for UI links)."""
    client = import_mlflow().MlflowClient()
    found = _experiments(client, prefix)
    return {name: eid for eid, name in sorted(found.items(), key=lambda kv: (len(kv[0]), kv[0]))}


def _search(client: Any, names: Mapping[str, str], filter_string: str) -> list[RunRecord]:
    """Runs of the experiments ``names`` (id -> name) matching ``filter_string``, newest first."""
    if not names:
        return []
    runs = client.search_runs(list(names), filter_string=filter_string, order_by=_NEWEST_FIRST, max_results=_MAX_RESULTS)
    return [_record(r, names.get(r.info.experiment_id, r.info.experiment_id)) for r in runs]


def _record(run: Any, experiment: str) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        experiment=experiment,
        run_name=run.info.run_name or "",
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
    )


def get_runs(run_ids: Sequence[str]) -> list[RunRecord]:
    """The runs with these ids, in that order; an id the store does not hold raises LookupError naming it.

    The select stage reads the run ids the grid/ECAPA stages of this pipeline run wrote
    (so ``dvc.lock`` pins which models were compared) and fetches exactly those runs.
    """
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    experiments: dict[str, str] = {}
    out = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException as exc:
            raise LookupError(f"run {run_id} is not in the MLflow store {mlflow.get_tracking_uri()}") from exc
        exp_id = run.info.experiment_id
        if exp_id not in experiments:
            experiments[exp_id] = client.get_experiment(exp_id).name
        out.append(_record(run, experiments[exp_id]))
    return out


def search_runs(
    experiment: str,
    *,
    stage: Stage | None = "final",
    family: str | None = None,
    tags: Mapping[str, str] | None = None,
    extra_filter: str | None = None,
) -> list[RunRecord]:
    """Runs of ``experiment`` (newest first) with the given stage/family/tags; [] if it does not exist."""
    client = import_mlflow().MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return _search(client, {exp.experiment_id: experiment}, _filter(stage, family, tags, extra_filter))


def search_final_runs(
    *,
    family: str | None = None,
    tags: Mapping[str, str] | None = None,
    experiment_prefix: str = "voiceid/",
) -> list[RunRecord]:
    """Final runs (newest first) of every experiment named ``experiment_prefix*``, filtered by tags.

    The grid logs one experiment per feature set, so "the best svc" has to be looked for
    across experiments; ``tags`` (e.g. ``{"data_hash": ...}``) keeps runs of other data out.
    """
    client = import_mlflow().MlflowClient()
    return _search(client, _experiments(client, experiment_prefix), _filter("final", family, tags))


def best_of(runs: Sequence[RunRecord], metric: str, *, maximize: bool = True) -> RunRecord | None:
    """The run with the best finite ``metric`` (ties: the first, i.e. newest); None if none has it."""
    usable = [r for r in runs if finite(r.metrics.get(metric))]
    if not usable:
        return None
    sign = 1.0 if maximize else -1.0
    return max(usable, key=lambda r: sign * r.metrics[metric])


def search_best_run(
    experiment: str,
    family: str | None = None,
    metric: str = "val_f1_weighted",
    *,
    maximize: bool = True,
    stage: Stage = "final",
) -> RunRecord | None:
    """The ``stage`` run of ``experiment`` (optionally one ``family``) with the best ``metric``.

    Runs lacking the metric are ignored; ties go to the newest run. None when nothing matches.
    """
    return best_of(search_runs(experiment, stage=stage, family=family), metric, maximize=maximize)


def load_run_json(run_id: str, artifact: str) -> Any:
    """A JSON artifact of a run (e.g. ``classes.json``), parsed; FileNotFoundError if absent."""
    mlflow = import_mlflow()
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except Exception as exc:
        raise FileNotFoundError(f"run {run_id}: artifact {artifact!r} not readable ({exc})") from exc


def runs_frame(*, experiment_prefix: str = "voiceid/", stage: str | None = None) -> pd.DataFrame:
    """Runs of every experiment named ``experiment_prefix*`` as a pandas DataFrame (newest first).

    One row per run with MLflow's columns (``run_id``, ``experiment_id``, ``status``,
    ``start_time``, ``end_time``, ``metrics.*``, ``params.*``, ``tags.*``) plus ``experiment``
    (the name); ``stage`` keeps only runs with that ``stage`` tag. Empty (no columns) when
    nothing matches.
    """
    mlflow = import_mlflow()
    import pandas as pd

    names = _experiments(mlflow.MlflowClient(), experiment_prefix)
    if not names:
        return pd.DataFrame()
    frame = mlflow.search_runs(
        experiment_ids=list(names),
        filter_string=_filter(stage or None),
        order_by=_NEWEST_FIRST,
        max_results=_MAX_RESULTS,
        output_format="pandas",
    )
    if not frame.empty:
        frame.insert(1, "experiment", frame["experiment_id"].map(names))
    return frame
