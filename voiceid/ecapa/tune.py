"""The ECAPA experiment: Optuna over lr / margin / channels, evaluation, the MLflow final run.

Protocol (README "ECAPA-TDNN embedder"):

* Training uses the enrolled speakers' ``split == "train"`` utterances only; the same
  utterances enroll each speaker (its centroid of unit embeddings).
* Verification trials of a split pair every utterance of that split -- enrolled speakers'
  held-out utterances and unknown speakers' -- with every other utterance of the split and
  with every enrollment utterance (never enrollment with enrollment).  Cosine scores give
  EER and minDCF.  Closed-set identification assigns each enrolled held-out utterance to the
  nearest centroid (accuracy / F1 as the classifier grid computes them).
* Every epoch of every trial is scored on the ``val`` trials: that EER drives early stopping,
  median pruning and the choice of the best trial.  The best trial's best-epoch weights are
  the final model (no refit: the training data would be the same); ``test`` is scored once.
* Resuming: the study is in memory with a seeded sampler, and every trial checkpoints under a
  hash of its exact settings and data.  A rerun after a kill proposes the same trials again;
  finished ones return from their checkpoints at once, the interrupted one continues, and
  trials already logged under the MLflow study run are not logged twice.

MLflow layout as the grid (:mod:`voiceid.grid.run`): experiment ``voiceid/<dataset>/logmel``, a
study run with one child run per trial, and a final run tagged ``family=ecapa``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna

from voiceid import tracking
from voiceid.config import as_dict
from voiceid.ecapa import distributed
from voiceid.ecapa.data import EcapaData
from voiceid.ecapa.embed import embed
from voiceid.ecapa.evaluate import (
    build_trials,
    identification_metrics,
    trial_scores,
    verification_metrics,
)
from voiceid.ecapa.model import ECAPATDNN, EcapaConfig, count_parameters
from voiceid.ecapa.params import EcapaError, EcapaParams
from voiceid.ecapa.train import (
    TrainConfig,
    TrainResult,
    fingerprint,
    pick_device,
    train_embedder,
)
from voiceid.scoring.centroids import Centroids, identify, speaker_centroids
from voiceid.scoring.verification import DetPoints, det_curve
from voiceid.study import study_name, trial_counts, trial_logger
from voiceid.viz.det import det_figure

FEATURE_SET = "logmel"


FAMILY = "ecapa"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # eer, min_dcf (+ thresholds, trial counts), accuracy, f1_*, top5_accuracy
    det: DetPoints
    centroids: Centroids


class Evaluator:
    """Scores a model on one held-out split; the trial list is built once and reused every epoch."""

    def __init__(self, data: EcapaData, split: Literal["val", "test"], params: EcapaParams) -> None:
        self.enroll, self.held = data.train, getattr(data, split)
        speakers = np.concatenate([self.enroll.speakers, self.held.speakers])
        probe = np.r_[np.zeros(len(self.enroll.speakers), bool), np.ones(len(self.held.speakers), bool)]
        self.trials = build_trials(speakers, probe, params.max_nontarget, seed=params.train.seed)
        if self.trials.labels.all() or not self.trials.labels.any():
            raise EcapaError(f"split {split!r}: trials need both target and non-target pairs")
        self.p_target = params.p_target

    def _embeddings(self, model: ECAPATDNN) -> tuple[np.ndarray, np.ndarray]:
        return embed(model, self.enroll.feats), embed(model, self.held.feats)

    def eer(self, model: ECAPATDNN) -> float:
        return verification_metrics(np.concatenate(self._embeddings(model)), self.trials, self.p_target)["eer"]

    def full(self, model: ECAPATDNN) -> Evaluation:
        enroll, held = self._embeddings(model)
        emb = np.concatenate([enroll, held])
        metrics = verification_metrics(emb, self.trials, self.p_target)
        centroids = speaker_centroids(enroll, self.enroll.speakers)
        known = np.isin(self.held.speakers, centroids.speakers)
        if known.any():
            _, scores = identify(held[known], centroids)
            metrics.update(identification_metrics(self.held.speakers[known], scores, centroids))
        return Evaluation(metrics, det_curve(trial_scores(emb, self.trials), self.trials.labels), centroids)


@dataclass(frozen=True)
class EcapaResult:
    study_name: str
    study_run_id: str
    final_run_id: str
    model_uri: str
    best_trial: int
    best_params: dict[str, Any]
    val: dict[str, float]
    test: dict[str, float]
    n_parameters: int
    embedding_dim: int
    counts: dict[str, int]

    def summary(self) -> dict[str, Any]:
        """metrics/ecapa.json."""
        return {
            "val_eer": self.val["eer"],
            **{f"test_{k}": v for k, v in self.test.items()},
            "n_parameters": self.n_parameters,
            "embedding_dim": self.embedding_dim,
            **self.counts,
            "best_trial": self.best_trial,
            **{f"best_{k}": v for k, v in self.best_params.items()},
            "study_name": self.study_name,
            "study_run_id": self.study_run_id,
            "final_run_id": self.final_run_id,
        }


def trial_configs(params: EcapaParams, n_mels: int, hp: Mapping[str, Any]) -> tuple[EcapaConfig, TrainConfig]:
    model = dataclasses.replace(params.model, n_mels=n_mels, channels=int(hp["channels"]))
    return model, dataclasses.replace(params.train, lr=float(hp["lr"]), margin=float(hp["margin"]))


def run_ecapa(
    data: EcapaData,
    params: EcapaParams,
    base_tags: Mapping[str, str],
    checkpoint_dir: str | Path,
) -> EcapaResult | None:
    """Tune, pick the best trial, score val and test, log the final run; see the module doc.

    Under torchrun every rank runs the same seeded study (its trials train with DDP, see
    :func:`~voiceid.ecapa.train.train_embedder`); only rank 0 logs to MLflow, evaluates the
    best model and returns the result, the other ranks return None.
    """
    device = pick_device(params.device)
    ctx = distributed.current()
    # enrolled speakers are only enrolled unless train_speakers says so
    fit = data.training(params.train_speakers, params.min_utts_per_speaker)
    space, train_labels = params.search, _label_codes(fit.speakers)
    settings = {k: v for k, v in as_dict(params).items() if k not in ("device", "threads")}  # results do not depend on them
    run_key = hashlib.sha256((data.fingerprint + json.dumps(settings, sort_keys=True, default=str)).encode())
    sname = study_name(params.dataset_name, FEATURE_SET, FAMILY, "eer", run_key.hexdigest())
    experiment = tracking.experiment_name(params.dataset_name, FEATURE_SET)
    tags = {
        **base_tags,
        "family": FAMILY,
        "feature_set": FEATURE_SET,
        "kind": "embedder",
        "seed": str(params.train.seed),
        "dataset": params.dataset_name,
        "study_name": sname,
        "device": device.type,
        "world_size": str(ctx.world),
    }
    val_eval, results = Evaluator(data, "val", params), {}

    def objective(trial: optuna.Trial) -> float:
        hp = {
            "lr": trial.suggest_float("lr", *space.lr, log=True),
            "margin": trial.suggest_float("margin", *space.margin),
            "channels": trial.suggest_categorical("channels", list(space.channels)),
        }
        model_cfg, train_cfg = trial_configs(params, data.n_mels, hp)
        ckpt = Path(checkpoint_dir) / f"trial-{fingerprint(model_cfg, train_cfg, fit.feats, train_labels)[:16]}.pt"

        def on_epoch(record: dict[str, float]) -> None:
            trial.report(record["val_eer"], int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"val EER {record['val_eer']:.3f} at epoch {int(record['epoch'])}")

        start = time.perf_counter()
        result = train_embedder(
            fit.feats,
            train_labels,
            model_cfg,
            train_cfg,
            validate=val_eval.eer,
            checkpoint=ckpt,
            on_epoch=on_epoch,
            device=device,
        )
        results[trial.number] = result
        trial.set_user_attr(
            "params",
            {
                **hp,
                "n_parameters": count_parameters(result.model),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "train_seconds": round(time.perf_counter() - start, 1),
            },
        )
        assert result.best_val_eer is not None  # validate= is given: every epoch sets it
        trial.set_user_attr("metrics", {"eer": result.best_val_eer})  # logged as val_eer
        return float(result.best_val_eer)

    study = optuna.create_study(
        study_name=sname,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=params.train.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=space.pruner_startup_trials, n_warmup_steps=space.pruner_warmup_epochs
        ),
    )
    study.enqueue_trial({"lr": params.train.lr, "margin": params.train.margin, "channels": params.model.channels})
    if not ctx.is_main:  # trains its share of every trial (same proposals: same seed, same broadcast EERs)
        study.optimize(objective, n_trials=space.n_trials, catch=(Exception,))
        return None
    with tracking.start_study_run(experiment, sname, tags, params={f"ecapa.{k}": v for k, v in as_dict(params).items()}) as srun:
        log_trial = trial_logger(srun, tags)

        def log_new(st: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
            if ft.number not in srun.logged_trials:  # logged before a kill: a rerun replays it
                log_trial(st, ft)

        study.optimize(objective, n_trials=space.n_trials, catch=(Exception,), callbacks=[log_new])
        if not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            raise EcapaError(f"study {sname}: no trial completed; see the MLflow trial runs")
        best, counts = study.best_trial, trial_counts(study)
    tracking.annotate_run(srun.run_id, tags={"best_trial": best.number}, metrics={"best_objective": best.value, **counts})

    best_result = results[best.number]
    model_cfg, train_cfg = trial_configs(params, data.n_mels, best.params)
    model = best_result.model.to(device)
    val = val_eval.full(model)
    test = Evaluator(data, "test", params).full(model)  # the one look at test
    model = model.cpu()
    run_id, uri = _log_final(
        experiment, tags, srun.run_id, best.number, model, model_cfg, train_cfg, best_result, val, test, data
    )
    tracking.annotate_run(srun.run_id, tags={"final_run_id": run_id})
    return EcapaResult(
        sname,
        srun.run_id,
        run_id,
        uri,
        best.number,
        dict(best.params),
        val.metrics,
        test.metrics,
        count_parameters(model),
        model_cfg.embedding_dim,
        counts,
    )


def _label_codes(speakers: np.ndarray) -> list[int]:
    names = sorted(set(speakers.tolist()))
    return [names.index(s) for s in speakers]


VERIFICATION_KEYS = ("eer", "min_dcf", "eer_threshold", "min_dcf_threshold")


IDENTIFICATION_KEYS = ("accuracy", "f1_weighted", "f1_macro", "top5_accuracy")


def _log_final(
    experiment: str,
    tags: Mapping[str, str],
    study_run_id: str,
    best_trial: int,
    model: ECAPATDNN,
    model_cfg: EcapaConfig,
    train_cfg: TrainConfig,
    result: TrainResult,
    val: Evaluation,
    test: Evaluation,
    data: EcapaData,
) -> tuple[str, str]:
    n_params = count_parameters(model)
    keys = (*VERIFICATION_KEYS, *IDENTIFICATION_KEYS, "n_target_trials", "n_nontarget_trials")
    metrics = {
        **{k: test.metrics[k] for k in keys if k in test.metrics},  # unprefixed = test, as the issue asks
        **{f"test_{k}": test.metrics[k] for k in keys if k in test.metrics},
        **{f"val_{k}": val.metrics[k] for k in keys if k in val.metrics},
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "n_parameters": n_params,
    }
    params = {
        **{f"model.{k}": v for k, v in as_dict(model_cfg).items()},
        **{f"train.{k}": v for k, v in as_dict(train_cfg).items()},
        "embedding_dim": model_cfg.embedding_dim,
        "n_parameters": n_params,
        "seed": train_cfg.seed,
        "objective": "val_eer",
        "enrollment": "enrolled train utterances",
    }
    centroids = {
        "speakers": val.centroids.speakers,
        "vectors": val.centroids.vectors.round(6).tolist(),
        "embedding_dim": model_cfg.embedding_dim,
        "n_mels": model_cfg.n_mels,
        "scoring": "cosine to centroid",
        "val_eer_threshold": val.metrics["eer_threshold"],
        "val_min_dcf_threshold": val.metrics["min_dcf_threshold"],
    }
    fig = det_figure(
        {"val": val.det, "test": test.det},
        title=f"ECAPA ({n_params / 1e6:.2f} M params): test EER {100 * test.metrics['eer']:.1f}%",
    )
    run_id = tracking.log_final_run(
        experiment,
        f"{FAMILY}-final",
        params=params,
        metrics=metrics,
        tags={**tags, "study_run_id": study_run_id, "best_trial": str(best_trial), "objective": "val_eer"},
        figures={"det.png": fig},
        json_artifacts={
            "centroids.json": centroids,
            "classes.json": val.centroids.speakers,
            "ecapa_config.json": model_cfg.to_dict(),
            "history.json": result.history,
        },
    )
    frames = min(200, *(len(f) for f in data.train.feats[:2]))
    example = np.stack([f[:frames] for f in data.train.feats[:2]]).astype(np.float32)  # (2, frames, n_mels)
    uri = tracking.log_pytorch_model(run_id, model, example, variable_axes=(0, 1))
    return run_id, uri
