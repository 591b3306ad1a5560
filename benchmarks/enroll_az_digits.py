"""Enroll speakers the pipeline never saw, with ``voiceid enroll``, then ``voiceid identify`` them.

On ../shared/data/az_digits (59 speakers x 20 spoken digits, ~1 s each), seeded:

* 3 *new* speakers and 8 *strangers* are held out entirely: no stage (prepare, features,
  grid, selection: calibration and thresholds included) ever reads their files;
* the other 48 speakers go through the pipeline's library code (32 enrolled, 16 unknown for
  thresholds/test) in a work dir with its own MLflow store; the champion is registered there;
* the CLI (``voiceid.serve.cli.main``, exactly what the console script runs) enrolls each new
  speaker from 5 of their files and identifies their other 15 files, the strangers' 20
  files each, and the model's own enrolled speakers' test files, with and without the store.

``--corpus librispeech`` runs the same protocol on ../shared/data/librispeech_excerpts (natural
read speech, 6 s clips): only its 13 speakers with 10-12 utterances can be enrolled, so 5 of them
are the new speakers (``--n-new 5``) and the pipeline enrolls the other 8; the strangers
(``--n-strangers``, default 100) are taken from its 248 one-utterance speakers first, and the rest
of those are the pipeline's unknown speakers. It shows what the store does where the encoder
hears more than one spoken digit.

Usage:
    .venv/bin/python benchmarks/enroll_az_digits.py [--families svc logreg] [--n-trials 4] [--ecapa] [--no-adapt]
                                                    [--seeds 42 43 44] [--background 0.25] [--work-dir DIR]
                                                    [--corpus az_digits|librispeech]

Prints the accuracy on the new speakers' remaining files, how many were called unknown, the
share of strangers' files called unknown, and the cost the store has on the model's own speakers,
for what ``voiceid identify`` does (with / without the store) and two rules it does not ("hybrid",
"routed": the primary model keeps answering for its own speakers).
Selection also weighs ``dvector_ft`` / ``joint_ft`` (the encoder fine-tuned on the pipeline
speakers' train clips, the ``adapt`` stage's code) unless ``--no-adapt``.
``--n-new 5 10 20`` measures how stranger acceptance holds as the gallery grows: each draw trains
once and holds out 20 new speakers, enrolls 5, then 5 more, then 10 more, and probes the same
strangers after each step.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _azdigits import (
    DATA,
    REPO,
    adapt_features,
    add_far_confidence,
    add_work_dir,
    far_confidence,
    open_work_dir,
    prepare_and_featurise,
    record_run,
)

MODEL_NAME = "voiceid-enroll-az"


@dataclass(frozen=True)
class Corpus:
    """A speaker-per-folder corpus and how the pipeline prepares it (PrepareParams fields)."""

    data: Path
    n_strangers: int  # default --n-strangers
    prepare: dict[str, Any] = field(default_factory=dict)

    @property
    def min_utts(self) -> int:
        return int(self.prepare["min_utts"])

    def clips(self, speaker: str) -> list[Path]:
        return sorted((self.data / speaker).glob("*.wav"))

    def speakers(self) -> dict[str, int]:
        """Every speaker and their number of clips."""
        return {p.name: len(self.clips(p.name)) for p in sorted(self.data.iterdir()) if p.is_dir()}


CORPORA = {
    "az_digits": Corpus(
        DATA,
        8,
        dict(min_utts=13, utts_per_speaker=20, train_per_speaker=8, val_per_speaker=4, unknown_utts_per_speaker=10),
    ),
    # openset_compare.py's LibriSpeech plan: 5 train / 2 val / 3+ test clips, sessions never split
    "librispeech": Corpus(
        REPO.parent / "shared" / "data" / "librispeech_excerpts",
        100,
        dict(
            min_utts=10,
            utts_per_speaker=10,
            train_per_speaker=5,
            val_per_speaker=2,
            unknown_utts_per_speaker=1,
            group_pattern=r"^[^-]+-([^-]+)-",
        ),
    ),
}


def held_out(
    seed: int, n_new: int, n_strangers: int, corpus: Corpus = CORPORA["az_digits"]
) -> tuple[list[str], list[str], list[str]]:
    """(pipeline speakers, new speakers, strangers), disjoint, from a seeded permutation.

    New speakers are the first ``n_new`` the pipeline could have enrolled (``min_utts`` clips);
    strangers the next ``n_strangers``, those it could not enroll first, so a corpus with few
    enrollable speakers keeps them for the pipeline. On az_digits (every speaker has 20 clips)
    this is the plain permutation: new, then strangers, then the pipeline's speakers.
    """
    counts = corpus.speakers()
    order = [str(x) for x in np.random.default_rng(seed).permutation(sorted(counts))]
    new = [s for s in order if counts[s] >= corpus.min_utts][:n_new]
    if len(new) < n_new:
        raise SystemExit(f"{corpus.data.name}: only {len(new)} speakers have {corpus.min_utts} clips, {n_new} asked")
    rest = [s for s in order if s not in new]
    strangers = sorted(rest, key=lambda s: counts[s] >= corpus.min_utts)[:n_strangers]  # stable: permutation order
    return sorted(set(rest) - set(strangers)), sorted(new), sorted(strangers)


def train_champion(work: Path, speakers: list[str], args: argparse.Namespace) -> pd.DataFrame:
    """prepare -> features -> grid [-> ECAPA] -> select -> register, on ``speakers`` only; returns the manifest."""
    import optuna

    from voiceid.config import load_section
    from voiceid.data.prepare import PrepareParams
    from voiceid.grid.data import grid_data, read_table
    from voiceid.grid.params import GridParams
    from voiceid.grid.run import run_family
    from voiceid.select.candidates import FeatureBank
    from voiceid.select.params import SelectParams
    from voiceid.select.protocol import make_champion, select
    from voiceid.select.register import register_champion
    from voiceid.select.report import summary
    from voiceid.select.sources import find_sources, load_sources

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    corpus = CORPORA[args.corpus]
    rows = [(str(f), s) for s in speakers for f in corpus.clips(s)]
    pd.DataFrame(rows, columns=["path", "speaker"]).to_csv(work / "pipeline_files.csv", index=False)
    # --background: a share of the pipeline's speakers is background (prepare.n_background, as the default
    # params.yaml has): the scoring back-end's training speakers and the AS-norm cohort, never probes
    n_background = round(len(speakers) * args.background)
    roles: dict[str, int | None] = {"n_enrolled": None, "n_unknown": None}  # every enrollable speaker, the rest unknown
    if all(n >= corpus.min_utts for n in Counter(s for _, s in rows).values()):  # az_digits: 2/3 enrolled
        n_enrolled = round((len(speakers) - n_background) * 2 / 3)
        roles = {"n_enrolled": n_enrolled, "n_unknown": len(speakers) - n_background - n_enrolled}
    ws = prepare_and_featurise(
        work,
        PrepareParams(
            adapter="csv",
            source=str(work / "pipeline_files.csv"),
            **corpus.prepare,
            **roles,
            n_background=n_background,
            order="random",
            seed=args.seed,
        ),
        ("mfcc60", "dvector", "logmel") if args.ecapa else ("mfcc60", "dvector"),
    )
    manifest, fparams, tags = ws.manifest, ws.fparams, ws.tags
    print(
        f"prepare+features: {manifest.groupby('role')['speaker'].nunique().to_dict()} speakers, {len(manifest)} files "
        f"({ws.prepare_s + ws.features_s:.1f} s)",
        flush=True,
    )
    if args.adapt:
        seconds, report = adapt_features(work, manifest, fparams)
        print(f"adapt: {report} ({seconds:.1f} s)", flush=True)

    grid = dataclasses.replace(
        load_section(GridParams, "grid", REPO / "params.yaml"),
        dataset_name=f"{args.corpus}_enroll",
        feature_sets=("mfcc60",),
        families=tuple(args.families),
        n_trials=args.n_trials,
        timeout_s=300.0,
        storage=f"sqlite:///{work}/optuna.db",
    )
    meta, X, names = read_table(str(work / "features" / "mfcc60.parquet"))
    data = grid_data(meta, X, "mfcc60", names)
    for family in args.families:
        t0 = time.perf_counter()
        r = run_family(family, data, grid, tags)
        record_run(work, family, "mfcc60", r.summary())
        print(
            f"grid: {family:8s} val_{r.objective} {r.val_metrics[r.objective]:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True
        )
    if args.ecapa:
        from voiceid.ecapa.data import split_logmel
        from voiceid.ecapa.params import EcapaParams
        from voiceid.ecapa.tune import run_ecapa
        from voiceid.features.tables import read_logmel

        ecapa = load_section(EcapaParams, "ecapa", REPO / "params.yaml")
        ecapa = dataclasses.replace(
            ecapa, dataset_name=f"{args.corpus}_enroll", search=dataclasses.replace(ecapa.search, n_trials=1)
        )
        lm_meta, mats = read_logmel(work / "features" / "logmel.parquet")
        r = run_ecapa(split_logmel(lm_meta, mats), ecapa, tags, work / "checkpoints")
        record_run(work, "ecapa", "logmel", r.summary())
        print(f"ecapa: val EER {r.val['eer']:.4f}", flush=True)

    t0 = time.perf_counter()
    adapted = ("dvector_ft", "joint_ft") if args.adapt else ()
    families = (*args.families, *(("ecapa",) if args.ecapa else ()), "cosine", "dvector", "joint", *adapted, "fusion")
    params = dataclasses.replace(
        load_section(SelectParams, "select", REPO / "params.yaml"),
        families=families,
        n_bootstrap=200,
        registered_model=MODEL_NAME,
        **far_confidence(args),
    )
    sources, _ = find_sources(params, work / "models", families)
    result = select(
        load_sources(sources), FeatureBank.from_dir(work / "features", [s.feature_set for s in sources]), params, fparams
    )
    champion = make_champion(result, params, fparams)
    registry = register_champion(champion, params, summary(result, params, {}), tags)
    print(
        f"select: champion {champion.family} ({params.threshold_rule} threshold {champion.threshold:.4f}), embedding "
        f"model {result.embedding.family if result.embedding else 'none'} (threshold {champion.embedding_threshold:.4f}); "
        f"registered {registry['registered_uri']} v{registry['version']} ({time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    return manifest


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``voiceid`` in process; (exit code, stdout, stderr)."""
    from voiceid.serve.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def identify(files: list[str], common: list[str], *extra: str) -> list[dict]:
    rc, out, err = cli(["identify", "--json", *common, *extra, *files])
    if rc != 0:
        raise SystemExit(f"identify failed ({rc}): {err}")
    return json.loads(out)["results"]


def top1(files: list[str], model_uri: str, store: Path) -> list[tuple[str, float]]:
    """The embedding model's closest speaker (own or enrolled) and its score, threshold ignored."""
    from voiceid import tracking
    from voiceid.data.audio import load_audio
    from voiceid.serve.store import EnrollmentStore

    champion = tracking.load_pyfunc(model_uri).unwrap_python_model().champion
    gallery = EnrollmentStore(store).gallery(champion.embedding.embedder_id)
    out = []
    for f in files:
        clip = load_audio(f, champion.sample_rate)
        s = champion.embedding.score_inputs([champion.embedding.front(clip.wave, clip.sample_rate)], gallery)
        out.append((str(s.pred[0]), float(s.score[0])))
    return out


def run_seed(seed: int, work: Path, args: argparse.Namespace) -> dict[int, dict[str, tuple[int, int, int, int]]]:
    """One held-out draw: train once, then grow the store through ``args.n_new`` sizes (5, then 10, ...).

    Per gallery size: (right, unknown, called a new speaker, n) per group and rule. The strangers
    and the trained champion are the same at every size, so the sizes differ only in how many
    new speakers ``voiceid enroll`` has added.
    """
    sizes = sorted(args.n_new)
    corpus = CORPORA[args.corpus]
    pipeline, new_all, strangers = held_out(seed, sizes[-1], args.n_strangers, corpus)
    print(
        f"\n== seed {seed}: held out (never seen by any stage): new {new_all}, strangers {strangers}; "
        f"pipeline: {len(pipeline)} speakers",
        flush=True,
    )
    manifest = train_champion(work, pipeline, _with_seed(args, seed))
    assert not set(manifest["speaker"]) & set(new_all + strangers)

    store = work / f"enrollment-{seed}"
    for f in store.glob("*"):
        f.unlink()
    model_uri = f"models:/{MODEL_NAME}@champion"
    common = ["--model", model_uri, "--store", str(store)]
    rng = np.random.default_rng(seed)
    enrolled_files, probes = {}, {}
    for s in new_all:
        files = [str(f) for f in corpus.clips(s)]
        pick = set(rng.choice(len(files), args.enroll_files, replace=False).tolist())
        enrolled_files[s] = [f for i, f in enumerate(files) if i in pick]
        probes[s] = [f for i, f in enumerate(files) if i not in pick]
    own = manifest[(manifest["role"] == "enrolled") & (manifest["split"] == "test")]
    fixed = {
        "strangers": [(str(f), "unknown") for s in strangers for f in corpus.clips(s)],
        "own": [(str(Path(p).resolve()), s) for p, s in zip(own["path"], own["speaker"])],
    }
    without_fixed = {g: identify([f for f, _ in v], common, "--no-store") for g, v in fixed.items()}
    by_size: dict[int, dict[str, tuple[int, int, int, int]]] = {}
    done = 0
    for n_new in sizes:
        new = new_all[:n_new]
        for s in new[done:]:
            rc, out, err = cli(["enroll", *common, "--speaker", s, *enrolled_files[s]])
            print(f"enroll {s}: {out.strip() or err.strip()}")
            if rc != 0:
                raise SystemExit(1)
        done = n_new
        groups = {"new": [(f, s) for s in new for f in probes[s]], **fixed}
        without = {**without_fixed, "new": identify([f for f, _ in groups["new"]], common, "--no-store")}
        with_store = {g: identify([f for f, _ in v], common) for g, v in groups.items()}
        closest = {g: top1([f for f, _ in v], model_uri, store) for g, v in groups.items()}
        counts: dict[str, tuple[int, int, int, int]] = {}
        for g, v in groups.items():
            truth = [t for _, t in v]
            # "hybrid" (a proposal, not what identify does): the primary model's answer when it accepts,
            # else the store's answer when it names an enrolled-later speaker, else unknown.
            hybrid = [
                a["speaker"] if a["known"] else (b["speaker"] if b["speaker"] in new else "unknown")
                for a, b in zip(without[g], with_store[g])
            ]
            for rule, said in (
                ("without store", [r["speaker"] for r in without[g]]),
                ("with store", [r["speaker"] for r in with_store[g]]),
                ("hybrid", hybrid),
                # "routed": the embedding model's closest speaker (own or enrolled later, no threshold) routes
                # the probe: an enrolled-later one -> the store's answer, an own one -> the primary's
                (
                    "routed",
                    [b["speaker"] if c in new else a["speaker"] for a, b, (c, _) in zip(without[g], with_store[g], closest[g])],
                ),
            ):
                counts[f"{g}/{rule}"] = (
                    sum(a == t for a, t in zip(said, truth)),
                    sum(a == "unknown" for a in said),
                    sum(a in new for a in said),
                    len(said),
                )
        closed = closest["new"]
        counts["new/top-1, no threshold"] = (
            sum(p == t for (p, _), (_, t) in zip(closed, groups["new"])),
            0,
            sum(p in new for p, _ in closed),
            len(closed),
        )
        print(
            f"seed {seed}, {n_new} new enrolled: threshold with the store {with_store['strangers'][0]['threshold']:.4f}; "
            + "; ".join(f"{k} {r}/{n} right, {u} unknown, {a} new" for k, (r, u, a, n) in counts.items()),
            flush=True,
        )
        by_size[n_new] = counts
    return by_size


def _with_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "seed": seed})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=["svc", "logreg"])
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--ecapa", action="store_true", help="also train ECAPA (slow on CPU: ~10 min per seed)")
    parser.add_argument("--no-adapt", dest="adapt", action="store_false", help="skip fine-tuning: no dvector_ft / joint_ft")
    parser.add_argument(
        "--n-new",
        type=int,
        nargs="*",
        default=[3],
        help="gallery sizes: new speakers enrolled per draw, grown in steps (one training per draw)",
    )
    parser.add_argument("--n-strangers", type=int, default=None, help="default: 8 (az_digits), 100 (librispeech)")
    parser.add_argument("--corpus", default="az_digits", choices=sorted(CORPORA))
    add_far_confidence(parser)
    parser.add_argument("--enroll-files", type=int, default=5)
    parser.add_argument(
        "--background",
        type=float,
        default=0.0,
        help="share of the pipeline's speakers made background (AS-norm cohort, back-end training)",
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44], help="one held-out draw per seed")
    add_work_dir(parser, "enroll_az_digits")
    args = parser.parse_args(argv)
    corpus = CORPORA[args.corpus]
    if args.n_strangers is None:
        args.n_strangers = corpus.n_strangers
    if not corpus.data.is_dir():
        print(f"{args.corpus} not found at {corpus.data}", file=sys.stderr)
        return 2
    if args.corpus != "az_digits":  # its own MLflow store and caches; az_digits keeps the work dir's root
        args.work_dir = str(Path(args.work_dir) / args.corpus)
    work = open_work_dir(args)
    if work is None:
        return 2
    import torch

    torch.set_num_threads(2)
    t_all = time.perf_counter()
    sizes = sorted(args.n_new)
    total: dict[int, Counter[str]] = {n: Counter() for n in sizes}
    keys: list[str] = []
    for seed in args.seeds:
        for n_new, counts in run_seed(seed, work, args).items():
            for k, (right, unknown, as_new, n) in counts.items():
                keys += [k] if k not in keys else []
                total[n_new][f"{k}:right"] += right
                total[n_new][f"{k}:unknown"] += unknown
                total[n_new][f"{k}:new"] += as_new
                total[n_new][f"{k}:n"] += n
    for n_new in sizes:
        t = total[n_new]
        print(
            f"\n{args.corpus}, {len(args.seeds)} held-out draws (seeds {args.seeds}), each: {n_new} new speakers enrolled "
            f"from {args.enroll_files} files, {args.n_strangers} strangers never enrolled; all never seen by the pipeline"
        )
        print(f"{'probes':10s} {'decision':24s} {'files':>6s} {'accuracy':>9s} {'unknown':>8s} {'new spk':>8s}")
        for k in keys:
            group, rule = k.split("/")
            n, right, unknown, as_new = (t[f"{k}:{c}"] for c in ("n", "right", "unknown", "new"))
            acc = f"{right / n:9.1%}" if group != "strangers" else f"{'':>9s}"
            print(f"{group:10s} {rule:24s} {n:6d} {acc} {unknown / n:8.1%} {as_new / n:8.1%}")
        print(
            "(strangers: 'unknown' is the right answer; 'new spk': called one of the newly enrolled speakers; "
            "'with store' is what voiceid identify does)"
        )
    if len(sizes) > 1:
        print("\nas the store grows (same draws, same strangers; with the store):")
        print(f"{'new enrolled':>12s} {'new identified':>15s} {'strangers unknown':>18s} {'strangers accepted':>19s}")
        for n_new in sizes:
            t = total[n_new]
            ident = t["new/with store:right"] / t["new/with store:n"]
            unk = t["strangers/with store:unknown"] / t["strangers/with store:n"]
            print(f"{n_new:12d} {ident:15.1%} {unk:18.1%} {1 - unk:19.1%}")
    print(f"total {time.perf_counter() - t_all:.1f} s; work dir {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
