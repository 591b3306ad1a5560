"""Shared set-up of the az_digits benchmarks: work dir, tracking store, prepare + features.

``../shared/data/az_digits`` has no licence: it is read in place, never copied into the
repo; everything a benchmark writes (manifest, feature cache and tables, MLflow and Optuna
stores, checkpoints) lands in its ``--work-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from voiceid.data.prepare import PrepareParams
    from voiceid.features.params import FeatureParams

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "az_digits"


def add_work_dir(parser: argparse.ArgumentParser, name: str) -> None:
    """``--work-dir`` defaulting to ``$TMPDIR/voiceid_<name>`` (studies and caches resume there)."""
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / f"voiceid_{name}"))


def add_far_confidence(parser: argparse.ArgumentParser) -> None:
    """``--far-confidence C|none``: override params.yaml's ``select.far_confidence`` (the fpr threshold's confidence)."""
    parser.add_argument(
        "--far-confidence",
        type=lambda v: None if v.lower() in ("none", "null") else float(v),
        default=argparse.SUPPRESS,  # absent: params.yaml's value
        help="fpr threshold: meet select.target_fpr on new strangers with this confidence; none: on the val ones",
    )


def far_confidence(args: argparse.Namespace) -> dict[str, float | None]:
    """The SelectParams override ``--far-confidence`` asks for (none when it was not given)."""
    return {"far_confidence": args.far_confidence} if hasattr(args, "far_confidence") else {}


def open_work_dir(args: argparse.Namespace) -> Path | None:
    """Create and enter ``args.work_dir`` and point MLflow at its sqlite store; None if az_digits is absent.

    The working directory moves so MLflow's ./mlruns artifacts land there, not in the repo;
    ``$MLFLOW_TRACKING_URI`` is set too, so the in-process ``voiceid`` CLI uses the same store.
    """
    if not DATA.is_dir():
        print(f"az_digits not found at {DATA}", file=sys.stderr)
        return None
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    from voiceid import tracking

    tracking.configure()
    return work


@dataclass(frozen=True)
class Prepared:
    """A prepared and featurised work dir: ``manifest.parquet`` and ``features/<set>.parquet``."""

    manifest: pd.DataFrame
    n_rejected: int
    fparams: FeatureParams
    n_files: int
    n_computed: int
    tags: dict[str, str]  # git_commit and data_hash, as the stages tag their runs
    prepare_s: float
    features_s: float


def prepare_and_featurise(work: Path, prep: PrepareParams, sets: tuple[str, ...]) -> Prepared:
    """Run the prepare and features stages' library code into ``work``."""
    from voiceid import tracking
    from voiceid.data.prepare import prepare
    from voiceid.features.extract import extract_features, write_tables
    from voiceid.features.params import FeatureParams

    start = time.perf_counter()
    result = prepare(prep, progress=False)
    manifest = result.manifest
    manifest_path = work / "manifest.parquet"
    manifest.to_parquet(manifest_path, index=False)
    prepare_s = time.perf_counter() - start

    start = time.perf_counter()
    fparams = FeatureParams(sets=sets)  # type: ignore[arg-type]
    feats = extract_features(manifest, fparams, work / "feature_cache", progress=False)
    write_tables(feats, work / "features")
    features_s = time.perf_counter() - start
    tags = {"git_commit": tracking.git_commit(REPO), "data_hash": tracking.data_hash(manifest_path)}
    return Prepared(manifest, len(result.rejects), fparams, len(feats.meta), feats.n_computed, tags, prepare_s, features_s)


def record_run(work: Path, family: str, feature_set: str, summary: dict) -> None:
    """Add a stage summary (with its ``final_run_id``) to ``work/models/<family>.json``, as the stages write it.

    The select stage compares exactly the runs named there (``voiceid.select.sources``).
    """
    import json

    path = work / "models" / f"{family}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.is_file() and family != "ecapa" else {}
    path.write_text(json.dumps(summary if family == "ecapa" else {**current, feature_set: summary}, indent=2, default=str))


def adapt_features(work: Path, manifest: pd.DataFrame, fparams: FeatureParams) -> tuple[float, dict]:
    """Run the ``adapt`` stage's library code into ``work/features``: ``dvector_ft.parquet`` and ``dvector_ft.pt``.

    Fine-tunes on the train clips of the training roles of the rows the features tables hold
    (``features/mfcc60.parquet``, in its order); returns (seconds, a small report).
    """
    from voiceid.adapt.params import AdaptParams
    from voiceid.adapt.run import adapt, write_adapted
    from voiceid.config import load_section
    from voiceid.features.tables import read_feature_table

    start = time.perf_counter()
    features = work / "features"
    meta = read_feature_table(features / "mfcc60.parquet")[0]
    paths = manifest.set_index(manifest["utt_id"].astype(str))["path"].astype(str)
    result = adapt(
        meta,
        paths.loc[meta["utt_id"].astype(str)].tolist(),
        load_section(AdaptParams, "adapt", REPO / "params.yaml"),
        fparams.dvector,
        fparams.sample_rate,
    )
    report = write_adapted(features, meta, result)
    return time.perf_counter() - start, report
