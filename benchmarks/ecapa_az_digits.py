"""ECAPA-TDNN on az_digits' held-out speakers next to the seed's cosine-on-MFCC-statistics baseline.

Protocol (speaker-disjoint, seeded):

* the 59 speakers of ../shared/data/az_digits are split into train / val / held-out test
  speakers (default 36 / 8 / 15); the embedder trains on the train speakers' utterances only,
  early stopping on the EER of the val speakers' trials;
* verification: every pair of held-out utterances is a trial (target = same speaker) -> EER
  and minDCF (p_target 0.01);
* closed-set identification among the held-out speakers: ``--enroll`` (5) utterances per
  speaker form its centroid, the remaining ones are identified by the nearest centroid;
  averaged over ``--draws`` random enrollment draws;
* the baseline scores the SAME trials and enrollment draws with the seed's features: the
  mfcc60 vector (mean/min/max of 20 MFCCs), raw and standardised with statistics of the
  train speakers only.

Run: ``.venv/bin/python benchmarks/ecapa_az_digits.py`` (CPU default: ~12 min on 2 busy cores);
``--channels 512 --embedding-dim 192 --epochs 40 --steps 200 --batch-size 128`` on a GPU.
Prints a table; never asserts.  The audio has no licence: it is read in place, never copied.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from voiceid.data.audio import load_audio
from voiceid.ecapa.augment import AugmentConfig
from voiceid.ecapa.embed import embed
from voiceid.ecapa.evaluate import (
    build_trials,
    identification_metrics,
    verification_metrics,
)
from voiceid.ecapa.model import EcapaConfig, count_parameters
from voiceid.ecapa.train import TrainConfig, pick_device, train_embedder
from voiceid.features.params import FeatureParams
from voiceid.features.signal import compute_sets
from voiceid.scoring.centroids import identify, speaker_centroids

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "az_digits"


def load_corpus(root: Path, cache: Path | None) -> tuple[pd.DataFrame, list[np.ndarray], np.ndarray]:
    """(metadata, log-mel matrices, mfcc60 vectors) of every file in metadata.csv."""
    if cache is not None and cache.exists():
        z = np.load(cache, allow_pickle=False)
        mats = np.split(z["logmel"], z["offsets"][1:-1])
        return pd.DataFrame({"path": z["path"], "speaker": z["speaker"]}), mats, z["mfcc60"]
    meta = pd.read_csv(root / "metadata.csv")
    params = FeatureParams()
    mats, mfcc = [], []
    for rel in meta["path"]:
        clip = load_audio(root / rel, target_sr=params.sample_rate)
        sets = compute_sets(clip.wave, clip.sample_rate, ("mfcc60", "logmel"), params)
        mats.append(sets["logmel"])
        mfcc.append(sets["mfcc60"])
    meta = meta.loc[:, ["path", "speaker"]].astype(str)
    if cache is not None:
        offsets = np.cumsum([0, *(len(m) for m in mats)])
        np.savez(cache, logmel=np.concatenate(mats), offsets=offsets, mfcc60=np.stack(mfcc),
                 path=np.asarray(meta["path"], dtype=str), speaker=np.asarray(meta["speaker"], dtype=str))
    return meta, mats, np.stack(mfcc)


def speaker_split(speakers: np.ndarray, n_val: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    names = np.random.default_rng(seed).permutation(sorted(set(speakers.tolist())))
    groups = {"test": names[:n_test], "val": names[n_test : n_test + n_val], "train": names[n_test + n_val :]}
    return {k: np.isin(speakers, v) for k, v in groups.items()}


def closed_set(emb: np.ndarray, speakers: np.ndarray, n_enroll: int, draws: int, seed: int) -> dict[str, float]:
    """Nearest-centroid identification among ``speakers``, ``n_enroll`` utterances enroll each."""
    accs, f1s = [], []
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        enroll = np.zeros(len(speakers), bool)
        for s in sorted(set(speakers.tolist())):
            enroll[rng.choice(np.flatnonzero(speakers == s), n_enroll, replace=False)] = True
        cents = speaker_centroids(emb[enroll], speakers[enroll])
        _, scores = identify(emb[~enroll], cents)
        m = identification_metrics(speakers[~enroll], scores, cents)
        accs.append(m["accuracy"])
        f1s.append(m["f1_macro"])
    return {"accuracy": float(np.mean(accs)), "accuracy_sd": float(np.std(accs)), "f1_macro": float(np.mean(f1s))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cache", type=Path, default=None, help="npz to keep the extracted features in")
    p.add_argument("--n-val", type=int, default=8)
    p.add_argument("--n-test", type=int, default=15)
    p.add_argument("--enroll", type=int, default=5)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=30, help="batches per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop-frames", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--noise-prob", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if not (args.data / "metadata.csv").exists():
        print(f"az_digits not found at {args.data}; nothing to benchmark", file=sys.stderr)
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    meta, mats, mfcc = load_corpus(args.data, args.cache)
    t_feat = time.perf_counter() - t0
    speakers = meta["speaker"].to_numpy()
    part = speaker_split(speakers, args.n_val, args.n_test, args.seed)
    train_names = sorted(set(speakers[part["train"]].tolist()))
    train_idx = np.flatnonzero(part["train"])
    labels = [train_names.index(s) for s in speakers[train_idx]]
    val_idx, test_idx = np.flatnonzero(part["val"]), np.flatnonzero(part["test"])
    val_trials = build_trials(speakers[val_idx])
    test_trials = build_trials(speakers[test_idx])

    n_mels = mats[0].shape[1]
    model_cfg = EcapaConfig(n_mels=n_mels, channels=args.channels, se_channels=max(8, args.channels // 4),
                            attention_channels=64 if args.channels < 512 else 128, embedding_dim=args.embedding_dim)
    train_cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
                            crop_frames=args.crop_frames, lr=args.lr, margin=args.margin, margin_warmup=0.3,
                            patience=args.patience, seed=args.seed,
                            augment=dataclasses.replace(AugmentConfig(), noise_prob=args.noise_prob, snr_db=(10.0, 30.0),
                                                        time_masks=1, time_mask_frames=5, freq_masks=1, freq_mask_bands=5))
    device = pick_device(args.device)
    val_feats = [mats[i] for i in val_idx]

    def val_eer(model: torch.nn.Module) -> float:
        return verification_metrics(embed(model, val_feats), val_trials)["eer"]

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_embedder([mats[i] for i in train_idx], labels, model_cfg, train_cfg, validate=val_eer,
                                checkpoint=Path(tmp) / "bench.pt", device=device,
                                on_epoch=lambda r: print(f"  epoch {int(r['epoch'])}: loss {r['loss']:.3f}, "
                                                         f"train acc {r['train_accuracy']:.2f}, val EER {r['val_eer']:.3f}",
                                                         flush=True))
    t_train = time.perf_counter() - t0
    model = result.model.to(device)
    test_emb = embed(model, [mats[i] for i in test_idx]).astype(np.float64)

    train_mfcc = mfcc[part["train"]].astype(np.float64)
    mu, sd = train_mfcc.mean(axis=0), train_mfcc.std(axis=0) + 1e-8
    systems = {
        f"ECAPA-TDNN C={args.channels} ({count_parameters(model) / 1e6:.2f} M)": test_emb,
        "cosine on mfcc60 stats (raw)": mfcc[test_idx].astype(np.float64),
        "cosine on mfcc60 stats (train-speaker z-score)": (mfcc[test_idx] - mu) / sd,
    }
    test_spk = speakers[test_idx]
    rows = []
    for name, emb in systems.items():
        ver = verification_metrics(emb, test_trials)
        ident = closed_set(emb, test_spk, args.enroll, args.draws, args.seed)
        rows.append((name, 100 * ver["eer"], ver["min_dcf"], 100 * ident["accuracy"], 100 * ident["accuracy_sd"],
                     100 * ident["f1_macro"]))

    n_spk = {k: len(set(speakers[v].tolist())) for k, v in part.items()}
    print(f"\naz_digits: {len(speakers)} utterances; speakers train {n_spk['train']} / val {n_spk['val']} / "
          f"held-out test {n_spk['test']}; test trials {int(test_trials.labels.sum())} target + "
          f"{int((test_trials.labels == 0).sum())} non-target; closed set: {n_spk['test']} speakers, "
          f"{args.enroll} enrollment utterances each, {args.draws} draws")
    print(f"features {t_feat:.0f} s; training {t_train:.0f} s on {device.type} ({len(result.history)} epochs, "
          f"best {result.best_epoch}, val EER {result.best_val_eer:.3f})\n")
    print(f"| {'system':<48} | EER % | minDCF(0.01) | closed-set acc % (sd) | F1 macro % |")
    print(f"|{'-' * 50}|-------|--------------|-----------------------|------------|")
    for name, e, dcf, acc, acc_sd, f1 in rows:
        print(f"| {name:<48} | {e:5.1f} | {dcf:12.3f} | {acc:13.1f} ({acc_sd:4.1f})  | {f1:10.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
