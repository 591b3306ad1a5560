"""Classifier families of the experiment grid: estimator factory + Optuna search space.

Every family builds ``Pipeline([("scale", scaler), ("clf", estimator)])`` so the scaler is
fitted on the training rows only and travels with the logged model: a ``StandardScaler`` for
statistics, an :class:`~voiceid.scoring.scaling.IsotropicScaler` for an encoder's embedding
(``FitContext.encoder``; per-dimension scaling blows up its near-silent units). All
pipelines expose ``predict_proba`` (the selection stage needs scores); SVC gets it from
temperature scaling in ``CalibratedClassifierCV(ensemble=False)`` because
``SVC(probability=True)`` is deprecated in scikit-learn 1.9.

Iterative families (``mlp``, ``catboost``) report validation accuracy while they train,
so a study can prune a poor trial early (:func:`fit_classifier` with ``monitor``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from voiceid.scoring.scaling import IsotropicScaler, vector_scaler

if TYPE_CHECKING:
    import optuna


Params = dict[str, Any]


# report(step, validation accuracy); raises optuna.TrialPruned to stop the fit.
Report = Callable[[int, float], None]


@dataclass(frozen=True)
class CatBoostLimits:
    """Bounds that keep CatBoost inside the time budget (~200 iterations, depth 4-6)."""

    iterations_min: int = 50
    iterations_max: int = 200
    depth_min: int = 4
    depth_max: int = 6
    border_count: int = 32
    thread_count: int = 2


@dataclass(frozen=True)
class FitContext:
    """What a factory needs beyond the hyper-parameters."""

    seed: int
    n_features: int
    min_class_count: int
    catboost: CatBoostLimits = CatBoostLimits()
    encoder: bool = False  # the rows are a speaker encoder's embeddings (features.params.ENCODER_SETS)


@dataclass(frozen=True)
class Monitor:
    """Validation rows watched during an iterative fit; ``every`` is in epochs/iterations."""

    X: np.ndarray
    y: np.ndarray
    report: Report
    every: int = 25


@dataclass(frozen=True)
class ClassifierFamily:
    """A model family: its search space, the configuration tried first, and its factory."""

    name: str
    space: Callable[[optuna.Trial, FitContext], Params]
    defaults: Callable[[FitContext], Params]
    build: Callable[[Params, FitContext], Any]
    requirements: tuple[str, ...] = ()  # pip distributions beyond scikit-learn's
    iterative: bool = False


def _svc_space(trial: optuna.Trial, ctx: FitContext) -> Params:
    kernel = trial.suggest_categorical("kernel", ["rbf", "linear"])
    params: Params = {"kernel": kernel, "C": trial.suggest_float("C", 0.05, 100.0, log=True)}
    if kernel == "rbf":
        params["gamma_scale"] = trial.suggest_float("gamma_scale", 0.1, 10.0, log=True)
    return params


def _mlp_space(trial: optuna.Trial, ctx: FitContext) -> Params:
    return {
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "layers": trial.suggest_int("layers", 1, 2),
        "alpha": trial.suggest_float("alpha", 1e-5, 1e-1, log=True),
        "learning_rate_init": trial.suggest_float("learning_rate_init", 1e-4, 1e-2, log=True),
        "epochs": trial.suggest_int("epochs", 50, 300, step=50),
    }


def _catboost_space(trial: optuna.Trial, ctx: FitContext) -> Params:
    lim = ctx.catboost
    return {
        "iterations": trial.suggest_int("iterations", lim.iterations_min, lim.iterations_max),
        "depth": trial.suggest_int("depth", lim.depth_min, lim.depth_max),
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 1.0, 10.0, log=True),
    }


def _knn_space(trial: optuna.Trial, ctx: FitContext) -> Params:
    return {
        "n_neighbors": trial.suggest_int("n_neighbors", 1, 15),
        "weights": trial.suggest_categorical("weights", ["uniform", "distance"]),
        "metric": trial.suggest_categorical("metric", ["euclidean", "cosine"]),
    }


def _logreg_space(trial: optuna.Trial, ctx: FitContext) -> Params:
    return {"C": trial.suggest_float("C", 1e-3, 100.0, log=True)}


def _pipeline(clf: Any, ctx: FitContext) -> Pipeline:
    return Pipeline([("scale", vector_scaler(ctx.encoder)), ("clf", clf)])


def _build_svc(p: Params, ctx: FitContext) -> Pipeline:
    # gamma relative to sklearn's "scale" (1 / (n_features * var), var = 1 after the scaler)
    # keeps one search range valid for 60 and for 500 features. break_ties makes predict the
    # arg-max of the one-vs-rest scores, as the calibrated probabilities are.
    gamma = p.get("gamma_scale", 1.0) / max(ctx.n_features, 1)
    svc = SVC(C=p["C"], kernel=p["kernel"], gamma=gamma, break_ties=True, random_state=ctx.seed)
    folds = max(2, min(3, ctx.min_class_count))
    return _pipeline(CalibratedClassifierCV(svc, method="temperature", ensemble=False, cv=folds), ctx)


def _build_mlp(p: Params, ctx: FitContext) -> Pipeline:
    clf = MLPClassifier(
        hidden_layer_sizes=(p["hidden"],) * p["layers"],
        alpha=p["alpha"],
        learning_rate_init=p["learning_rate_init"],
        batch_size=32,
        max_iter=p["epochs"],
        random_state=ctx.seed,
    )
    return _pipeline(clf, ctx)


def _build_catboost(p: Params, ctx: FitContext) -> Pipeline:
    from catboost import CatBoostClassifier

    clf = CatBoostClassifier(
        iterations=p["iterations"],
        depth=p["depth"],
        learning_rate=p["learning_rate"],
        l2_leaf_reg=p["l2_leaf_reg"],
        border_count=ctx.catboost.border_count,
        thread_count=ctx.catboost.thread_count,
        loss_function="MultiClass",
        random_seed=ctx.seed,
        allow_writing_files=False,  # no catboost_info/ in the working tree
        verbose=False,
    )
    return _pipeline(clf, ctx)


def _build_knn(p: Params, ctx: FitContext) -> Pipeline:
    return _pipeline(KNeighborsClassifier(n_neighbors=p["n_neighbors"], weights=p["weights"], metric=p["metric"]), ctx)


def _build_logreg(p: Params, ctx: FitContext) -> Pipeline:
    return _pipeline(LogisticRegression(C=p["C"], max_iter=2000, random_state=ctx.seed), ctx)


FAMILIES: Mapping[str, ClassifierFamily] = {
    f.name: f
    for f in (
        # The seed work's recipe, MFCC + SVC(C=5, rbf), is each study's first trial.
        ClassifierFamily("svc", _svc_space, lambda c: {"kernel": "rbf", "C": 5.0, "gamma_scale": 1.0}, _build_svc),
        ClassifierFamily(
            "mlp",
            _mlp_space,
            lambda c: {"hidden": 128, "layers": 1, "alpha": 1e-3, "learning_rate_init": 1e-3, "epochs": 200},
            _build_mlp,
            iterative=True,
        ),
        ClassifierFamily(
            "catboost",
            _catboost_space,
            lambda c: {
                "iterations": c.catboost.iterations_max,
                "depth": c.catboost.depth_min,
                "learning_rate": 0.1,
                "l2_leaf_reg": 3.0,
            },
            _build_catboost,
            requirements=("catboost",),
            iterative=True,
        ),
        ClassifierFamily("knn", _knn_space, lambda c: {"n_neighbors": 1, "weights": "uniform", "metric": "cosine"}, _build_knn),
        ClassifierFamily("logreg", _logreg_space, lambda c: {"C": 1.0}, _build_logreg),
    )
}


def get_family(name: str) -> ClassifierFamily:
    """The classifier family called ``name``; a clear error lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown classifier family {name!r} (known: {', '.join(FAMILIES)})") from None


def fit_classifier(
    family: ClassifierFamily,
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    ctx: FitContext,
    monitor: Monitor | None = None,
) -> Pipeline:
    """Fit ``family`` with ``params`` on (X, y); iterative families report to ``monitor``.

    Tuning and the final refit both go through here, so the refitted model is the one
    the best trial scored.
    """
    pipe = family.build(params, ctx)
    if family.name == "knn":
        # k larger than the training set is an error, not a worse model.
        pipe.set_params(clf__n_neighbors=min(params["n_neighbors"], len(y)))
    if not family.iterative:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return pipe.fit(X, y)
    scaler: StandardScaler | IsotropicScaler = pipe.named_steps["scale"].fit(X)
    Xs = scaler.transform(X)
    clf = pipe.named_steps["clf"]
    if family.name == "mlp":
        _fit_mlp_staged(clf, Xs, y, params["epochs"], scaler, monitor)
    else:
        _fit_catboost_staged(clf, Xs, y, scaler, monitor)
    return pipe


def _fit_mlp_staged(
    clf: MLPClassifier,
    Xs: np.ndarray,
    y: np.ndarray,
    epochs: int,
    scaler: StandardScaler | IsotropicScaler,
    monitor: Monitor | None,
) -> None:
    classes = np.unique(y)
    clf.set_params(batch_size=min(clf.batch_size, len(y)))
    Xv = scaler.transform(monitor.X) if monitor else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, epochs + 1):
            clf.partial_fit(Xs, y, classes=classes)
            if monitor and (epoch % monitor.every == 0 or epoch == epochs):
                monitor.report(epoch, float(accuracy_score(monitor.y, clf.predict(Xv))))


def _fit_catboost_staged(
    clf: Any, Xs: np.ndarray, y: np.ndarray, scaler: StandardScaler | IsotropicScaler, monitor: Monitor | None
) -> None:
    if monitor is None:
        clf.fit(Xs, y)
        return
    watcher = _CatBoostWatcher(monitor)
    clf.set_params(custom_metric=["Accuracy"], use_best_model=False)
    clf.fit(Xs, y, eval_set=(scaler.transform(monitor.X), monitor.y), callbacks=[watcher])
    if watcher.error is not None:
        raise watcher.error  # e.g. optuna.TrialPruned, kept out of CatBoost's C++ loop


class _CatBoostWatcher:
    """CatBoost callback: passes validation accuracy to the monitor, stops on its exception."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.error: BaseException | None = None

    def after_iteration(self, info: Any) -> bool:
        step = info.iteration
        if step % self.monitor.every:
            return True
        try:
            self.monitor.report(step, float(info.metrics["validation"]["Accuracy"][-1]))
        except BaseException as exc:
            self.error = exc
            return False
        return True
