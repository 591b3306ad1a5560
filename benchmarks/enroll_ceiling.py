"""How far can the embeddings go on ``enroll_az_digits.py``'s task? Top-1 and identification at an *oracle* threshold.

Same held-out draws as ``benchmarks/enroll_az_digits.py`` (new speakers and strangers never seen
by the pipeline; the other speakers: 2/3 enrolled with 8 training clips each), but instead of
a threshold fitted on val, each system gets the threshold that rejects exactly 95% of *the test
strangers themselves* -- a bound no honest threshold can beat. If a system's identification
rate of new speakers stays below the 60% target here, no threshold rule will reach it.

Systems: cosine to speaker centroids of ``mfcc60`` (standardised), ``dvector`` (Resemblyzer)
and ``joint`` (both, :class:`voiceid.serve.frontend.JointEmbedder`), each plain or behind WCCN
fitted on the enrolled speakers' training clips (:class:`voiceid.scoring.backend.EmbeddingBackend`).
``dvector_ft`` / ``joint_ft``: the same with the d-vector encoder fine-tuned (the ``adapt`` stage's
code) *per draw* on exactly those training clips -- never on new speakers or strangers;
``--no-adapt`` leaves them out.

Usage:
    .venv/bin/python benchmarks/enroll_ceiling.py [--seeds 42 43 44] [--n-new 5 10 20] [--no-adapt] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _azdigits import DATA, REPO, Prepared, add_work_dir, open_work_dir, prepare_and_featurise
from enroll_az_digits import held_out

if TYPE_CHECKING:
    from voiceid.features.params import FeatureParams

SYSTEMS = ("mfcc60", "dvector", "joint")
ADAPTED = ("dvector_ft", "joint_ft")
JOINT = {"joint": ("dvector", "mfcc60"), "joint_ft": ("dvector_ft", "mfcc60")}


def embed(system: str, X: dict[str, np.ndarray], fit: np.ndarray) -> np.ndarray:
    """Every clip embedded by ``system``, scalers fitted on the rows ``fit`` (as selection fits them: encoders centred)."""
    from voiceid.select.candidates import block_scaler
    from voiceid.serve.frontend import JointEmbedder, StatsEmbedder

    if system in JOINT:
        scalers = [block_scaler(s, X[s][fit]) for s in JOINT[system]]
        return JointEmbedder(scalers).embed(list(zip(*(X[s] for s in JOINT[system]), strict=True)))
    return StatsEmbedder(block_scaler(system, X[system][fit])).embed(list(X[system]))


def adapted(meta: pd.DataFrame, paths: list[str], fit: np.ndarray, fparams: FeatureParams) -> np.ndarray:
    """Every clip embedded by the encoder fine-tuned on the rows ``fit`` only (role enrolled, split train; the rest unseen)."""
    from voiceid.adapt.params import AdaptParams
    from voiceid.adapt.run import adapt
    from voiceid.config import load_section
    from voiceid.features.tables import META_COLUMNS

    rows = meta[list(META_COLUMNS)].copy()
    rows["role"], rows["split"] = "unknown", "test"
    rows.loc[rows.index[fit], ["role", "split"]] = ("enrolled", "train")
    result = adapt(rows, paths, load_section(AdaptParams, "adapt", REPO / "params.yaml"), fparams.dvector, fparams.sample_rate)
    t = result.tuned
    print(
        f"  adapt: {t.n_clips} clips of {t.n_speakers} speakers, {t.seconds:.0f} s training, {result.embed_seconds:.0f} s "
        f"embedding; loss {t.losses[0]:.2f} -> {np.mean(t.losses[-10:]):.2f}",
        flush=True,
    )
    return np.asarray(result.X, dtype=np.float64)


def draw(
    seed: int,
    n_new: int,
    n_strangers: int,
    X: dict[str, np.ndarray],
    spk: np.ndarray,
    tune: Callable[[np.ndarray], np.ndarray] | None,
) -> dict[str, tuple[float, float]]:
    """(top-1 accuracy, identified at 95% strangers rejected) of new speakers' clips, per system and back-end.

    ``tune(fit)``: the ``dvector_ft`` table of an encoder fine-tuned on the rows ``fit`` (None: no adapted systems).
    """
    from voiceid.scoring.backend import EmbeddingBackend
    from voiceid.scoring.cosine import cosine_matrix, l2_normalize

    pipeline, new, strangers = held_out(seed, n_new, n_strangers)
    rng = np.random.default_rng(seed)
    own = [str(s) for s in rng.permutation(pipeline)[: round(len(pipeline) * 2 / 3)]]
    rows = {s: np.flatnonzero(spk == s) for s in np.unique(spk)}
    train = {s: rng.permutation(rows[s])[:8] for s in own}
    enrol, probe = {}, {}
    for s in new:
        p = rng.permutation(rows[s])
        enrol[s], probe[s] = p[:5], p[5:]
    fit = np.concatenate(list(train.values()))
    gallery = {**train, **enrol}
    names = np.array(list(gallery))
    probes = np.concatenate([probe[s] for s in new] + [rows[s] for s in strangers])
    is_new = np.isin(spk[probes], new)
    out = {}
    if tune is not None:
        X = {**X, "dvector_ft": tune(fit)}
    for system in (*SYSTEMS, *(ADAPTED if tune is not None else ())):
        E = embed(system, X, fit)
        for backend in ("plain", "wccn"):
            T = EmbeddingBackend(wccn=True).fit(E[fit], spk[fit]).transform(E) if backend == "wccn" else l2_normalize(E)
            C = np.stack([l2_normalize(T[gallery[n]].mean(axis=0)) for n in names])
            S = cosine_matrix(T[probes], C)
            right = names[S.argmax(axis=1)] == spk[probes]
            top = S.max(axis=1)
            t = np.quantile(top[~is_new], 0.95, method="higher")  # oracle: 95% of these strangers fall at or below
            out[f"{system}/{backend}"] = (float(right[is_new].mean()), float((right & (top > t))[is_new].mean()))
    return out


def add_draw_args(parser: argparse.ArgumentParser, seeds: list[int]) -> None:
    """``--seeds``, ``--n-strangers`` and the work dir whose feature tables the scores-only benchmarks share."""
    parser.add_argument("--seeds", type=int, nargs="*", default=seeds, help="one held-out draw per seed")
    parser.add_argument("--n-strangers", type=int, default=8)
    add_work_dir(parser, "enroll_ceiling")  # gallery_far.py and later_backends.py read the same tables


def open_features(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, Prepared] | None:
    """:func:`featurise_all` in the ``--work-dir`` of :func:`add_draw_args`; None when it cannot be opened."""
    work = open_work_dir(args)
    return None if work is None else featurise_all(work)


def featurise_all(work: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, Prepared]:
    """Every az_digits clip as ``mfcc60`` and ``dvector`` rows (roles are assigned per draw): meta, tables, speakers."""
    from voiceid.data.prepare import PrepareParams
    from voiceid.features.tables import read_feature_table

    files = [(str(f), s.name) for s in sorted(DATA.iterdir()) if s.is_dir() for f in sorted(s.glob("*.wav"))]
    pd.DataFrame(files, columns=["path", "speaker"]).to_csv(work / "files.csv", index=False)
    n = len({s for _, s in files})
    # roles do not matter here (every clip is featurised once; the draws assign the roles)
    plan = PrepareParams(
        adapter="csv",
        source=str(work / "files.csv"),
        min_utts=20,
        utts_per_speaker=20,
        train_per_speaker=10,
        val_per_speaker=5,
        n_enrolled=n - 2,
        n_unknown=2,
        unknown_utts_per_speaker=20,
        seed=0,
    )
    ws = prepare_and_featurise(work, plan, ("mfcc60", "dvector"))
    tables = {s: read_feature_table(work / "features" / f"{s}.parquet") for s in ("mfcc60", "dvector")}
    meta = tables["mfcc60"][0]
    assert (meta["utt_id"].to_numpy() == tables["dvector"][0]["utt_id"].to_numpy()).all()
    X = {s: np.asarray(t[1], dtype=np.float64) for s, t in tables.items()}
    return meta, X, meta["speaker"].astype(str).to_numpy(), ws


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_draw_args(parser, [42, 43, 44])
    parser.add_argument("--n-new", type=int, nargs="*", default=[5, 10, 20])
    parser.add_argument("--no-adapt", dest="adapt", action="store_false", help="skip fine-tuning: no dvector_ft / joint_ft")
    args = parser.parse_args(argv)
    features = open_features(args)
    if features is None:
        return 2
    meta, X, spk, ws = features
    paths = ws.manifest.set_index(ws.manifest["utt_id"].astype(str))["path"].astype(str).loc[meta["utt_id"].astype(str)].tolist()
    tune = (lambda fit: adapted(meta, paths, fit, ws.fparams)) if args.adapt else None

    print(
        f"az_digits, new speakers enrolled from 5 clips; oracle threshold: 95% of {args.n_strangers} strangers rejected; "
        f"mean over seeds {args.seeds}"
    )
    print(f"{'system':18s} " + " ".join(f"{f'{k} new: top-1 / ident':>24s}" for k in args.n_new))
    results = {k: [draw(seed, k, args.n_strangers, X, spk, tune) for seed in args.seeds] for k in args.n_new}
    for name in results[args.n_new[0]][0]:
        cells = [
            f"{np.mean([r[name][0] for r in results[k]]):11.1%} / {np.mean([r[name][1] for r in results[k]]):5.1%}"
            for k in args.n_new
        ]
        print(f"{name:18s} " + " ".join(f"{c:>24s}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
