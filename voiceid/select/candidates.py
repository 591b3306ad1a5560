"""Selection candidates: each family's best model (or an embedding model) calibrated and thresholded on val."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from voiceid.adapt.params import SET_NAME as ADAPTED_SET
from voiceid.features.params import ENCODER_SETS, FeatureParams
from voiceid.features.tables import read_feature_table, read_logmel
from voiceid.scoring import openset
from voiceid.scoring.backend import AsNorm, EmbeddingBackend
from voiceid.scoring.calibration import ScoreCalibrator
from voiceid.scoring.centroids import speaker_centroids
from voiceid.scoring.openset import Probes
from voiceid.scoring.scaling import IsotropicScaler, vector_scaler
from voiceid.scoring.verification import StrangerScores, eer
from voiceid.select.calibration import calibrate_classifier
from voiceid.select.later import later_trials
from voiceid.select.params import SelectParams
from voiceid.select.thresholds import fit_thresholds
from voiceid.serve.champion import ClassifierScorer, EmbeddingScorer, Scored
from voiceid.serve.decision import open_set_statistic
from voiceid.serve.frontend import BackendEmbedder, EcapaEmbedder, FrontEnd, JointEmbedder, StatsEmbedder, leaves

if TYPE_CHECKING:
    from voiceid.serve.fusion import Trials

Kind = Literal["classifier", "embedding", "fusion"]


EMBEDDING_FAMILIES = ("ecapa", "cosine", "dvector", "dvector_ft", "joint", "joint_ft")


class FeatureBank:
    """Per feature set: metadata rows and model inputs ((n, dim) array, or a list of log-mel matrices)."""

    def __init__(self, tables: Mapping[str, tuple[pd.DataFrame, Any]], adapted: bytes | None = None) -> None:
        self.tables = {k: (m.reset_index(drop=True), v) for k, (m, v) in tables.items()}
        self.adapted = adapted  # the adapted encoder's weights behind a dvector_ft table (a champion's front end needs them)

    @classmethod
    def from_dir(cls, features_dir: str | Path, sets: Sequence[str]) -> FeatureBank:
        """The tables of ``sets`` (a joint ``"a+b"`` loads ``a`` and ``b``) from ``features_dir/<set>.parquet``."""
        tables: dict[str, tuple[pd.DataFrame, Any]] = {}
        for name in dict.fromkeys(part for fs in sets for part in fs.split("+")):
            path = Path(features_dir) / f"{name}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: feature table not found (is '{name}' in features.sets?)")
            tables[name] = read_logmel(path) if name == "logmel" else read_feature_table(path)
        weights = Path(features_dir) / f"{ADAPTED_SET}.pt"
        return cls(tables, weights.read_bytes() if ADAPTED_SET in tables else None)

    def without_test(self) -> FeatureBank:
        """The same bank with every test row removed: what calibration and thresholds may see."""
        out = {}
        for name, (meta, inputs) in self.tables.items():
            keep = np.flatnonzero((meta["split"] != "test").to_numpy())
            out[name] = (meta.iloc[keep], _take(inputs, keep))
        return FeatureBank(out, self.adapted)

    def front_end(self, feature_set: str, features: FeatureParams) -> FrontEnd:
        """How a waveform becomes ``feature_set`` input, carrying the adapted encoder when the set uses it."""
        uses = ADAPTED_SET in feature_set.split("+")
        if uses and self.adapted is None:
            raise ValueError(f"{feature_set}: {ADAPTED_SET} needs the adapted encoder's weights ({ADAPTED_SET}.pt, stage adapt)")
        return FrontEnd(feature_set, features, self.adapted if uses else None)

    def rows(self, feature_set: str, role: str, split: str) -> tuple[Any, np.ndarray]:
        """(inputs, speakers) of the rows with this role and split."""
        inputs, speakers, _ = self.rows_with_ids(feature_set, role, split)
        return inputs, speakers

    def rows_with_ids(self, feature_set: str, role: str, split: str) -> tuple[Any, np.ndarray, np.ndarray]:
        """(inputs, speakers, utterance ids) of the rows with this role and split.

        ``"a+b"`` (a joint embedding's sets, or a fusion's classifier and embedding sets) gives
        ``(input_a, input_b)`` tuples of the utterances both tables hold, in ``a``'s order;
        ``"a+b+c"`` nests to the right, ``(input_a, (input_b, input_c))``, as :class:`FrontEnd`
        builds them from a waveform.
        """
        if "+" in feature_set:
            first, rest = feature_set.split("+", 1)
            xa, ya, ia = self.rows_with_ids(first, role, split)
            xb, _, ib = self.rows_with_ids(rest, role, split)
            pos = {u: i for i, u in enumerate(ib)}
            keep = np.array([i for i, u in enumerate(ia) if u in pos], dtype=int)
            return [(xa[i], xb[pos[ia[i]]]) for i in keep], ya[keep], ia[keep]
        if feature_set not in self.tables:
            raise KeyError(f"feature set {feature_set!r} not loaded (have {sorted(self.tables)})")
        meta, inputs = self.tables[feature_set]
        idx = np.flatnonzero(((meta["role"] == role) & (meta["split"] == split)).to_numpy())
        return _take(inputs, idx), meta["speaker"].astype(str).to_numpy()[idx], meta["utt_id"].astype(str).to_numpy()[idx]

    def probes(self, feature_set: str, split: str) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
        """Enrolled then unknown rows of ``split``: (inputs as a list, speakers, known mask, utterance ids)."""
        xk, yk, ik = self.rows_with_ids(feature_set, "enrolled", split)
        xu, yu, iu = self.rows_with_ids(feature_set, "unknown", split)
        if len(yk) == 0 or len(yu) == 0:
            raise ValueError(f"{feature_set}/{split}: need enrolled and unknown rows, found {len(yk)} and {len(yu)}")
        inputs = list(xk) + list(xu)
        known = np.r_[np.ones(len(yk), bool), np.zeros(len(yu), bool)]
        return inputs, np.concatenate([yk, yu]), known, np.concatenate([ik, iu])


def _take(inputs: Any, idx: np.ndarray) -> Any:
    return inputs[idx] if isinstance(inputs, np.ndarray) else [inputs[i] for i in idx]


@dataclass(frozen=True)
class Source:
    """Where a candidate comes from: an MLflow final run, or (``cosine``) nothing to load."""

    family: str
    kind: Kind
    feature_set: str
    run_id: str | None = None
    model_uri: str | None = None
    val_metric: str | None = None
    val_value: float | None = None


@dataclass
class Candidate:
    """A calibrated, thresholded model and what validation said about it."""

    source: Source
    scorer: ClassifierScorer | EmbeddingScorer
    calibration: dict[str, Any]
    val: Probes
    thresholds: dict[str, Any]  # rule -> fitted threshold estimator
    val_report: dict[str, float]
    # embedding systems only: how well the val-unknown speakers are identified once enrolled as
    # later speakers (identification EER, voiceid.select.later; None when they are too few to tell),
    # and the back-end variant with the lowest such EER (unmeasured: the best without LDA, NO_LDA),
    # calibrated and thresholded like this candidate, when it is another variant than this candidate's
    later_eer: float | None = None
    store: Candidate | None = None

    @property
    def family(self) -> str:
        return self.source.family

    def threshold(self, rule: str) -> float:
        return float(self.thresholds[rule].threshold_)

    @property
    def for_enrolling(self) -> Candidate:
        """What serves the enrollment store: :attr:`store` when it is another variant, else this candidate."""
        return self.store if self.store is not None else self


@dataclass(frozen=True)
class Later:
    """The back-end variant that serves speakers enrolled later best (:mod:`voiceid.select.later`)."""

    variant: str
    scorer: EmbeddingScorer
    val: Probes  # its val probes (enrolled val + val-unknown): what its thresholds are fitted on
    eer: float | None  # identification EER of the later-enrolled val trials; None: not measurable (NO_LDA rule)


# Without later speakers to measure (val-unknown speakers with one clip each), the store takes the
# best variant without LDA: LDA keeps at most (training speakers - 1) directions, the ones that
# separate *those* voices, and new voices collapse in them (later-speaker EER of LDA+WCCN: az_digits
# 0.53 vs 0.33 for WCCN; a LibriSpeech enroll draw with 8 training speakers identified 6 of 29 new
# speakers' files through a 7-d LDA store, other draws 26-29 of 27-29 through plain/WCCN stores)
NO_LDA = "the best val EER without LDA: too few val-unknown speakers with two clips to measure later speakers"


def val_thresholds(val: Probes, params: SelectParams) -> dict[str, Any]:
    """Every threshold rule fitted on the val probes; the ``fpr`` rule resamples unknown speakers (``select.far_confidence``)."""
    return fit_thresholds(
        val.score, val.known.astype(int), params.beta, params.target_fpr, val.true, params.far_confidence, params.seed
    )


def build_candidate(source: Source, model: Any, bank: FeatureBank, params: SelectParams, features: FeatureParams) -> Candidate:
    """Calibrate ``model`` and fit its thresholds on the val rows of ``bank`` (never test rows)."""
    front = bank.front_end(source.feature_set, features)
    scorer: ClassifierScorer | EmbeddingScorer
    later: Later | None = None
    if source.kind == "classifier":
        scorer, val, calibration = _best_classifier_score(source, model, bank, params, front)
    else:
        scorer, val, calibration, later = _best_embedding_variant(source, model, bank, params, front)
    candidate = _thresholded(source, scorer, calibration, val, params)
    if later is not None:
        candidate.later_eer = later.eer
        if later.scorer is not scorer:
            a, b = later.scorer.calibrator.a_, later.scorer.calibrator.b_
            store_calibration = {**calibration, "a": a, "b": b, "backend": later.variant}
            candidate.store = _thresholded(source, later.scorer, store_calibration, later.val, params)
    return candidate


def _thresholded(
    source: Source, scorer: ClassifierScorer | EmbeddingScorer, calibration: dict[str, Any], val: Probes, params: SelectParams
) -> Candidate:
    """A candidate of ``scorer`` with every threshold rule fitted on its ``val`` probes, and its val report."""
    thresholds = val_thresholds(val, params)
    val_report = openset.report(val, float(thresholds[params.threshold_rule].threshold_), p_target=params.p_target)
    return Candidate(source, scorer, calibration, val, thresholds, val_report)


def _best_classifier_score(
    source: Source, model: Any, bank: FeatureBank, params: SelectParams, front: FrontEnd
) -> tuple[ClassifierScorer, Probes, dict[str, Any]]:
    """The classifier calibrated on val, with the open-set score (``select.classifier_scores``) of lowest val EER.

    The speaker is always the arg-max of the calibrated probabilities. Its score is either the
    top calibrated probability (enrolled val probes scored out-of-fold, unknown ones by the
    deployed fold ensemble, exactly as test probes will be: see calibration.CalibratedEnsemble)
    or the model's own statistic (:func:`voiceid.serve.decision.open_set_statistic`, from a
    model that never saw val) through a logistic calibrator fitted on the val probes, target
    "the answer is right" -- the embedding candidates' recipe. EER is rank-based, so the two
    are compared fairly although only the second calibrator is fitted in-sample.
    """
    Xk, yk, ik = bank.rows_with_ids(source.feature_set, "enrolled", "val")
    Xu, yu, iu = bank.rows_with_ids(source.feature_set, "unknown", "val")
    _check_width(model, np.asarray(Xk), source)
    choice = calibrate_classifier(
        model, Xk, yk, params.calibration_methods, params.calibration_metric, seed=params.seed, X_extra=Xu
    )
    scorer = ClassifierScorer(front, choice.calibrated, model)
    best = choice.oof_proba.argmax(axis=1)
    unk = scorer.score_inputs(list(Xu))
    truth, pred = np.concatenate([yk, yu]), np.concatenate([np.asarray(scorer.speakers)[best], unk.pred])
    known = np.r_[np.ones(len(yk), bool), np.zeros(len(yu), bool)]
    scores: dict[str, tuple[ScoreCalibrator | None, np.ndarray]] = {}
    for kind in params.classifier_scores:
        if kind == "calibrated":
            scores[kind] = (None, np.concatenate([choice.oof_proba[np.arange(len(best)), best], unk.score]))
            continue
        stat = open_set_statistic(model, np.concatenate([np.asarray(Xk), np.asarray(Xu)]))
        try:
            calibrator = ScoreCalibrator().fit(stat, (known & (pred == truth)).astype(int))
        except ValueError:
            continue  # e.g. a higher statistic is not more often right on this val set
        scores[kind] = (calibrator, calibrator.predict_proba(stat))
    if not scores:
        raise ValueError(f"{source.family}: no open-set score of {list(params.classifier_scores)} could be calibrated on val")
    tried = {kind: float(eer(score, known.astype(int))[0]) for kind, (_, score) in scores.items()}
    chosen = min(tried, key=lambda kind: tried[kind])  # ties: the first listed
    scorer.decision = scores[chosen][0]
    val = Probes(truth, pred, scores[chosen][1], known, np.concatenate([ik, iu]))
    losses = {**choice.losses, "val_eer": tried}
    return scorer, val, {"method": choice.method, "folds": choice.n_folds, "score": chosen, "losses": losses}


def _fit_fusion(t: Trials, speakers: np.ndarray, known: np.ndarray, names: np.ndarray) -> tuple[Any, Any]:
    """(identify, detect) weights from val trials: who (every probe-speaker pair), whether (the chosen speaker)."""
    from sklearn.linear_model import LogisticRegression

    from voiceid.serve.fusion import fused_scores

    target = speakers[:, None] == names[None, :]
    who = LogisticRegression(C=1.0, max_iter=1000).fit(np.column_stack([t.lo.ravel(), t.es.ravel()]), target.ravel().astype(int))
    identify = np.r_[who.coef_[0], who.intercept_]
    best = fused_scores(identify, t).argmax(axis=1)
    rows = np.arange(len(best))
    right = known & (names[best] == speakers)
    if right.all() or not right.any():
        raise ValueError("every val answer is right (or none is): nothing to learn a detection score from")
    features = np.column_stack([t.lo[rows, best], t.es[rows, best], t.own])
    whether = LogisticRegression(C=1.0, max_iter=1000).fit(features, right.astype(int))
    return identify, np.r_[whether.coef_[0], whether.intercept_]


@dataclass(frozen=True)
class EmbeddingTrials:
    """One embedding candidate's val scores against its enrolled speakers, by utterance id.

    Selection fuses one embedding system with every classifier; its scores are the same each
    time, and for ECAPA computing them means running the network over every val clip.
    """

    family: str
    ids: np.ndarray  # (n,) utterance ids
    scores: np.ndarray  # (n, n_speakers), the candidate's speaker order

    @classmethod
    def of(cls, embedding: Candidate, bank: FeatureBank) -> EmbeddingTrials:
        from voiceid.serve.fusion import embedding_scores

        inputs, _, _, ids = bank.probes(embedding.source.feature_set, "val")
        return cls(embedding.family, ids, embedding_scores(embedding.scorer, inputs))  # type: ignore[arg-type]

    def rows(self, ids: np.ndarray) -> np.ndarray | None:
        """Scores of ``ids`` in that order; None when one of them is not here."""
        where = {u: i for i, u in enumerate(self.ids)}
        idx = [where.get(u) for u in ids]
        return None if any(i is None for i in idx) else self.scores[np.asarray(idx, dtype=int)]


def build_fusion(
    classifier: Candidate,
    embedding: Candidate,
    bank: FeatureBank,
    params: SelectParams,
    cached: EmbeddingTrials | None = None,
) -> Candidate:
    """Logistic fusion of a classifier and an embedding candidate, fitted on val (:mod:`voiceid.serve.fusion`).

    *Who*: trials of every val probe (enrolled val + val-unknown) against every enrolled
    speaker, target "this is the probe's speaker".  *Whether*: the probe's top speaker, target
    "the answer is right".  Like classifier calibration, it is cross-fitted: the val scores
    that thresholds and the champion choice see come from weights fitted on the other folds
    (5, by speaker), so the fusion is not judged on the data it was fitted on; the deployed
    weights are fitted on all val probes.  ``bank`` must hold no test rows.  ``cached``: the
    embedding candidate's val scores (:class:`EmbeddingTrials`), so they are not computed again.
    """
    from voiceid.serve.fusion import FusionScorer

    if any((meta["split"] == "test").any() for meta, _ in bank.tables.values()):
        raise ValueError("fusion must be fitted without test rows")
    sets = f"{classifier.source.feature_set}+{embedding.source.feature_set}"
    inputs, speakers, known, ids = bank.probes(sets, "val")
    scorer = FusionScorer(classifier.scorer, embedding.scorer, [1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0])  # type: ignore[arg-type]
    names = np.asarray(scorer.speakers)
    known_scores = cached.rows(ids) if cached is not None and cached.family == embedding.family else None
    trials = scorer.pair_scores(inputs, known_scores)
    # folds by speaker for unknown probes (a stranger's clips stay together), by probe for enrolled ones
    rng = np.random.default_rng(params.seed)
    unknown_spk = np.unique(speakers[~known])
    spk_fold = dict(zip(unknown_spk, rng.permutation(len(unknown_spk)) % 5, strict=True))
    fold = np.where(known, rng.permutation(len(known)) % 5, [spk_fold.get(s, 0) for s in speakers])
    oof_pred, oof_score = np.empty(len(known), dtype=object), np.empty(len(known))
    for k in range(5):
        held = fold == k
        if not held.any():
            continue
        scorer.identify, scorer.detect = _fit_fusion(trials.take(~held), speakers[~held], known[~held], names)
        out = scorer.score_pairs(trials.take(held))
        oof_pred[held], oof_score[held] = out.pred, out.score
    scorer.identify, scorer.detect = _fit_fusion(trials, speakers, known, names)  # deployed: all val probes
    val = Probes(speakers, oof_pred.astype(str), oof_score, known, ids)
    source = Source("fusion", "fusion", sets, None, None, None, None)
    calibration = {
        "method": "logistic, cross-fitted (5 folds)",
        "identify_weights": [round(float(x), 6) for x in scorer.identify],
        "detect_weights": [round(float(x), 6) for x in scorer.detect],
        "of": f"{classifier.family}+{embedding.family}",
    }
    return _thresholded(source, scorer, calibration, val, params)  # type: ignore[arg-type]


MAX_STRANGER_EMB = 1000


def _best_embedding_variant(
    source: Source, model: Any, bank: FeatureBank, params: SelectParams, front: FrontEnd
) -> tuple[EmbeddingScorer, Probes, dict[str, Any], Later | None]:
    """The embedding scorer with the scoring back-end (``select.backends``) that gives the lowest val EER.

    Everything is fitted on training rows only: the base embedder (``cosine``/``dvector``: a
    scaler; ``joint``: one scaler per block), LDA/WCCN (enrolled train + background speakers), centroids (enrolled train) and
    the AS-norm cohort (background speakers alone: never a probe).  Each variant is then
    calibrated and scored on the val probes; test is not involved.  The last item is the
    variant that serves speakers enrolled later best (:mod:`voiceid.select.later`), or None when
    the val-unknown speakers are too few to tell.
    """
    fs = source.feature_set
    Xt, yt = bank.rows(fs, "enrolled", "train")
    Xb, yb = bank.rows(fs, "background", "train")
    if model is None and "+" in fs:  # joint: e.g. the pretrained d-vector and MFCC statistics
        blocks = list(zip(*(leaves(r) for r in [*Xt, *Xb]), strict=True))  # per block: its rows
        base: Any = JointEmbedder([block_scaler(name, np.stack(b)) for name, b in zip(fs.split("+"), blocks, strict=True)])
    elif model is None:  # built here from the training rows: cosine (MFCC stats) or dvector (pretrained)
        base = StatsEmbedder(block_scaler(fs, np.asarray(list(Xt) + list(Xb))))
    else:
        base = EcapaEmbedder(model)
    base_id = _embedder_id(source, base, bank.adapted)
    train_emb = base.embed(list(Xt))
    bg_emb = base.embed(list(Xb)) if len(yb) else np.zeros((0, train_emb.shape[1]))
    inputs, speakers, known, ids = bank.probes(fs, "val")
    val_emb = base.embed(inputs)
    tried: dict[str, float] = {}
    later_tried: dict[str, float] = {}
    best: tuple[float, EmbeddingScorer, Probes, str] | None = None
    later_best: Later | None = None
    no_lda: Later | None = None  # the store when later speakers cannot be measured (NO_LDA)
    for variant in params.backends:
        parts = set(variant.split("+"))
        if "asnorm" in parts and len(np.unique(yb)) < 2:
            continue  # no background speakers: no cohort free of probe voices
        backend = None
        if variant != "plain":
            backend = EmbeddingBackend(params.lda_dim if "lda" in parts else None, wccn="wccn" in parts)
            backend.fit(np.concatenate([train_emb, bg_emb]), np.concatenate([yt, yb]))
        space = backend.transform if backend is not None else (lambda e: e)
        embedder: Any = base if backend is None else BackendEmbedder(base, backend)
        variant_id = (
            base_id if backend is None else f"{base_id}|{variant}|{hashlib.sha256(backend.mean_.tobytes()).hexdigest()[:8]}"
        )
        scorer = EmbeddingScorer(front, embedder, speaker_centroids(space(train_emb), yt), ScoreCalibrator(), variant_id)
        scorer.asnorm = AsNorm(params.as_norm_top_n).fit(space(bg_emb)) if "asnorm" in parts else None
        emb = space(val_emb)
        _, cos = scorer.cosines(emb)
        # The champion decides on the top-1 score, so that is the statistic calibrated: its
        # target is "the top-1 speaker is the right one" (a known probe, correctly named), fitted
        # on val probes only (enrolled val + val-unknown).
        top = cos.argmax(axis=1)
        right = known & (np.asarray(scorer.centroids.speakers)[top] == speakers)
        try:
            scorer.calibrator.fit(cos[np.arange(len(top)), top], right.astype(int))
        except ValueError:
            continue  # e.g. no val probe answered right: this variant cannot be calibrated
        out = scorer.score_embeddings(emb)
        val = Probes(speakers, out.pred, out.score, known, ids)
        tried[variant] = float(eer(val.score, val.known.astype(int))[0])
        # val strangers against every enrolled speaker: how the threshold must rise as a gallery grows
        scorer.strangers = StrangerScores.fit(cos[~known], fisher=scorer.asnorm is None) if (~known).any() else None
        # every k-th of at most ~MAX_STRANGER_EMB: they are scored against the gallery on each identify call
        every = max(1, int((~known).sum()) // MAX_STRANGER_EMB)
        scorer.stranger_emb, scorer.stranger_groups = emb[~known][::every], speakers[~known][::every]
        scorer.far_confidence = params.far_confidence
        if best is None or tried[variant] < best[0]:
            best = (tried[variant], scorer, val, variant)
        if "lda" not in parts and (no_lda is None or tried[variant] < tried[no_lda.variant]):
            no_lda = Later(variant, scorer, val, None)
        trials = later_trials(scorer, emb[~known], speakers[~known], params.enroll_files, params.seed)
        if trials is not None:
            later_tried[variant] = float(openset.identification_eer(trials))
            # ties (few val-unknown speakers make a coarse figure): the lower val EER
            if later_best is None or (later_tried[variant], tried[variant]) < (later_best.eer, tried[later_best.variant]):
                later_best = Later(variant, scorer, val, later_tried[variant])
    if best is None:
        raise ValueError(f"no back-end variant of {list(params.backends)} could be calibrated on val")
    _, scorer, val, chosen = best
    if later_best is None and "lda" in chosen.split("+") and no_lda is not None:
        later_best = no_lda
    calibration: dict[str, Any] = {"method": "logistic", "a": scorer.calibrator.a_, "b": scorer.calibrator.b_}
    calibration.update(backend=chosen, losses={"val_eer": tried, **({"later_eer": later_tried} if later_tried else {})})
    return scorer, val, calibration, later_best


def _check_width(model: Any, X: np.ndarray, source: Source) -> None:
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and X.ndim == 2 and X.shape[1] != expected:
        raise ValueError(
            f"{source.family} (run {source.run_id}) expects {expected} features, "
            f"data/features/{source.feature_set}.parquet has {X.shape[1]}"
        )


def block_scaler(feature_set: str, rows: np.ndarray) -> StandardScaler | IsotropicScaler:
    """The scaler of one feature set's (or joint block's) training rows: an encoder's embedding as a whole, statistics
    per dimension (:mod:`voiceid.scoring.scaling`: per-dimension scaling of a d-vector let strangers in).

    >>> rows = np.array([[1.0, 10.0], [3.0, 10.1]])
    >>> [block_scaler(name, rows).transform(rows).round(3).tolist() for name in ("dvector", "mfcc60")]
    [[[-1.412, -0.071], [1.412, 0.071]], [[-1.0, -1.0], [1.0, 1.0]]]
    """
    return vector_scaler(feature_set in ENCODER_SETS).fit(np.asarray(rows, dtype=np.float64))


def _embedder_id(source: Source, embedder: Any, adapted: bytes | None = None) -> str:
    """Names the embedding space, so a gallery built with another model is refused."""
    if isinstance(embedder, (StatsEmbedder, JointEmbedder)):
        scalers = embedder.scalers if isinstance(embedder, JointEmbedder) else [embedder.scaler]
        raw = b"".join(
            np.asarray(s.mean_).tobytes() + (b"" if s.scale_ is None else np.asarray(s.scale_).tobytes()) for s in scalers
        )
        if adapted is not None and ADAPTED_SET in source.feature_set.split("+"):
            raw += adapted  # the same scalers over another adapted encoder are another space
        return f"{source.family}:{source.feature_set}:{hashlib.sha256(raw).hexdigest()[:16]}"
    return f"{source.family}:{source.run_id}"


def score_split(candidate: Candidate, bank: FeatureBank, split: str) -> Probes:
    """Enrolled + unknown probes of ``split`` scored by the candidate's frozen scorer."""
    inputs, speakers, known, ids = bank.probes(candidate.source.feature_set, split)
    out: Scored = candidate.scorer.score_inputs(inputs)
    return Probes(speakers, out.pred, out.score, known, ids)
