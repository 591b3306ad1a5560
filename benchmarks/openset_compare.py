"""Every selection candidate side by side on real speech: each family x feature set, cosine, dvector(_ft), joint(_ft), ECAPA, fusion.

Two corpora beside the repo (read in place, nothing copied; everything is written to a work dir):

* ``az_digits``: 59 speakers x 20 one-second Azerbaijani digits; 40 enrolled (5 enrollment,
  3 val, 12 test utterances), 19 unknown (about half fit thresholds on val, the rest are test);
* ``librispeech``: the LibriSpeech excerpts, 13 speakers with 10-12 utterances (enrolled: 5 / 2 /
  rest) and 248 speakers with one utterance (``--background`` of them train ECAPA/LDA and form
  the AS-norm cohort; the rest are unknown probes).

Each candidate is built and calibrated as the select stage builds them (val only), then all are
scored once on the same test probes with one paired bootstrap.  ``dvector_ft`` / ``joint_ft``: the
d-vector encoder fine-tuned on the train clips of the enrolled + background speakers (the
``adapt`` stage's code; ``--no-adapt`` leaves them out).  Prints per candidate: its val EER
(what selection saw), then on test closed-set accuracy, EER, DIR@FAR1%, DIR@FAR5% with 95%
intervals; the champion's test FAR / FRR at its own threshold, and the champion metric actually used.

Usage:
    .venv/bin/python benchmarks/openset_compare.py [--corpus az_digits librispeech] [--n-trials 6]
        [--families svc mlp knn logreg] [--feature-sets mfcc60 seed498 dvector dvector_ft] [--ecapa-trials 1] [--n-bootstrap 500]
        [--ecapa-train enrolled|background|both] [--az-background 15] [--no-adapt]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _azdigits import (
    REPO,
    adapt_features,
    add_far_confidence,
    add_work_dir,
    far_confidence,
    open_work_dir,
    prepare_and_featurise,
    record_run,
)

CORPORA = {
    "az_digits": REPO.parent / "shared" / "data" / "az_digits",
    "librispeech": REPO.parent / "shared" / "data" / "librispeech_excerpts",
}


def plan(corpus: str, background: int, az_background: int = 0):
    from voiceid.data.prepare import PrepareParams

    if corpus == "az_digits":  # --az-background N: N of the 40 enrolled speakers become background (20 clips each)
        return PrepareParams(
            adapter="folder",
            source=str(CORPORA[corpus]),
            min_utts=20,
            utts_per_speaker=20,
            train_per_speaker=5,
            val_per_speaker=3,
            n_enrolled=40 - az_background,
            n_unknown=19,
            unknown_utts_per_speaker=20,
            n_background=az_background,
            unknown_val_fraction=0.5,
            split_by="utterance",
            seed=42,
        )
    return PrepareParams(
        adapter="folder",
        source=str(CORPORA[corpus]),
        min_utts=10,
        utts_per_speaker=10,
        train_per_speaker=5,
        val_per_speaker=2,
        unknown_utts_per_speaker=1,
        n_background=background,
        unknown_val_fraction=0.5,
        group_pattern=r"^[^-]+-([^-]+)-",
        seed=42,
    )


def run_corpus(corpus: str, args: argparse.Namespace) -> None:
    import optuna
    import torch

    from voiceid import tracking
    from voiceid.config import load_section
    from voiceid.ecapa.data import split_logmel
    from voiceid.ecapa.params import EcapaParams
    from voiceid.ecapa.tune import run_ecapa
    from voiceid.features.tables import read_logmel
    from voiceid.grid.data import grid_data, read_table
    from voiceid.grid.params import GridParams
    from voiceid.grid.run import run_family
    from voiceid.select.candidates import FeatureBank, Source
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import select
    from voiceid.select.report import store_basis
    from voiceid.select.sources import load_ecapa

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(2)
    work = Path(args.work_dir) / corpus
    work.mkdir(parents=True, exist_ok=True)
    # dvector_ft is not a features-stage set: adapt_features writes it below, before the grid reads it
    sets = tuple(dict.fromkeys([*(s for s in args.feature_sets if s != "dvector_ft"), "mfcc60", "dvector", "logmel"]))
    t0 = time.perf_counter()
    ws = prepare_and_featurise(work, plan(corpus, args.background, args.az_background), sets)
    m = ws.manifest
    print(
        f"\n== {corpus}: speakers {m.groupby('role')['speaker'].nunique().to_dict()}, "
        f"utterances {m.groupby(['role', 'split']).size().to_dict()} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    if args.adapt:
        seconds, report = adapt_features(work, m, ws.fparams)
        print(f"adapt: {report} ({seconds:.0f} s)", flush=True)

    grid = load_section(GridParams, "grid", REPO / "params.yaml")
    grid = dataclasses.replace(
        grid,
        dataset_name=f"compare_{corpus}",
        feature_sets=tuple(args.feature_sets),
        families=tuple(args.families),
        n_trials=args.n_trials,
        timeout_s=300.0,
        storage=f"sqlite:///{work}/optuna.db",
    )
    sources: list[tuple[Source, object]] = []
    for fs in args.feature_sets:
        meta, X, names = read_table(str(work / "features" / f"{fs}.parquet"))
        data = grid_data(meta, X, fs, names)
        for family in args.families:
            r = run_family(family, data, grid, ws.tags)
            record_run(work, family, fs, r.summary())
            run = tracking.get_runs([r.final_run_id])[0]
            sources.append(
                (Source(f"{family}@{fs}", "classifier", fs, r.final_run_id), tracking.load_model(run.model_uri, "sklearn"))
            )
    if args.ecapa_trials > 0:
        ecapa = load_section(EcapaParams, "ecapa", REPO / "params.yaml")
        ecapa = dataclasses.replace(
            ecapa,
            dataset_name=f"compare_{corpus}",
            train_speakers=args.ecapa_train,
            search=dataclasses.replace(ecapa.search, n_trials=args.ecapa_trials),
        )
        lm_meta, mats = read_logmel(work / "features" / "logmel.parquet")
        r = run_ecapa(split_logmel(lm_meta, mats), ecapa, ws.tags, work / "checkpoints")
        run = tracking.get_runs([r.final_run_id])[0]
        src = Source("ecapa", "embedding", "logmel", r.final_run_id, run.model_uri)
        sources.append((src, load_ecapa(src)))
        print(f"ecapa ({args.ecapa_train} speakers): val EER {r.val['eer']:.3f}, test EER {r.test['eer']:.3f}", flush=True)
    sources += [
        (Source("cosine", "embedding", "mfcc60"), None),
        (Source("dvector", "embedding", "dvector"), None),
        (Source("joint", "embedding", "dvector+mfcc60"), None),
    ]
    adapted = ("dvector_ft", "joint_ft") if args.adapt else ()
    if args.adapt:
        sources += [
            (Source("dvector_ft", "embedding", "dvector_ft"), None),
            (Source("joint_ft", "embedding", "dvector_ft+mfcc60"), None),
        ]

    params = dataclasses.replace(
        load_section(SelectParams, "select", REPO / "params.yaml"),
        families=("cosine", "dvector", "joint", *adapted, "fusion"),
        n_bootstrap=args.n_bootstrap,
        **far_confidence(args),
    )
    bank = FeatureBank.from_dir(work / "features", sorted({s.feature_set for s, _ in sources}))
    result = select(sources, bank, params, ws.fparams)

    def ci(d: dict[str, float]) -> str:
        return f"{d['value']:.3f} [{d['lo']:.3f},{d['hi']:.3f}]"

    print(
        f"\n{corpus}: test, 95% paired bootstrap intervals (n={args.n_bootstrap}); champion chosen by {result.champion_metric_reason}"
    )
    print(
        f"{'candidate':18s} {'back-end':16s} {'val EER':8s} {'closed-set acc':22s} {'EER':22s} {'DIR@FAR1%':22s} {'DIR@FAR5%':22s}"
    )
    for c in sorted(result.candidates, key=lambda c: result.test_reports[c.family]["eer"]["value"]):
        t = result.test_reports[c.family]
        mark = " *" if c is result.champion else ""
        print(
            f"{c.family + mark:18s} {_scoring(c.calibration):16s} {c.val_report['eer']:<8.3f} "
            f"{ci(t['accuracy']):22s} {ci(t['eer']):22s} {ci(t['dir_far_1']):22s} {ci(t['dir_far_5']):22s}"
        )
    t = result.test_reports[result.champion.family]
    print(
        f"champion {result.champion.family}: {params.threshold_rule} threshold {result.champion.threshold(params.threshold_rule):.4f}, "
        f"test FAR {ci(t['far'])} FRR {ci(t['frr'])}; skipped {result.skipped or 'none'}"
    )
    e = result.embedding
    if e is not None:  # what `voiceid enroll` would use (voiceid.select.later)
        later = {k: round(v, 3) for k, v in e.calibration.get("losses", {}).get("later_eer", {}).items()}
        by_variant = f"; later-speaker val EER by back-end: {later}" if later else ""
        print(
            f"enrollment store: {e.family} through {e.for_enrolling.calibration.get('backend')} "
            f"({store_basis(e, params)}{by_variant})"
        )


def _scoring(calibration: dict) -> str:
    """How a candidate scores: its back-end, what it fuses, or its classifier score (calibration method / decision)."""
    if "backend" in calibration or "of" in calibration:
        return str(calibration.get("backend", calibration.get("of")))
    return "decision" if calibration.get("score") == "decision" else str(calibration["method"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="*", default=["az_digits", "librispeech"], choices=sorted(CORPORA))
    parser.add_argument("--n-trials", type=int, default=6)
    parser.add_argument("--families", nargs="*", default=["svc", "mlp", "knn", "logreg"])
    parser.add_argument("--feature-sets", nargs="*", default=["mfcc60", "seed498", "dvector", "dvector_ft"])
    parser.add_argument("--ecapa-trials", type=int, default=1)
    parser.add_argument("--ecapa-train", default="both", choices=["enrolled", "background", "both"])
    parser.add_argument("--background", type=int, default=100, help="librispeech: single-utterance speakers used as background")
    parser.add_argument(
        "--az-background", type=int, default=0, help="az_digits: enrolled speakers turned background (all 20 clips)"
    )
    parser.add_argument("--n-bootstrap", type=int, default=500)
    add_far_confidence(parser)
    parser.add_argument("--no-adapt", dest="adapt", action="store_false", help="skip fine-tuning: no dvector_ft / joint_ft")
    add_work_dir(parser, "openset_compare")
    args = parser.parse_args(argv)
    if "dvector_ft" in args.feature_sets and not args.adapt:
        parser.error("--feature-sets dvector_ft needs the adapted encoder: drop --no-adapt or the set")
    missing = [c for c in args.corpus if not CORPORA[c].is_dir()]
    if missing:
        print(f"corpora not found beside the repo: {missing}", file=sys.stderr)
        return 2
    if open_work_dir(args) is None:
        return 2
    for corpus in args.corpus:
        run_corpus(corpus, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
