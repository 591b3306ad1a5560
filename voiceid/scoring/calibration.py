"""Score calibration of a scalar decision score (logistic), fitted on validation data only."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from voiceid.scoring.openset import detection_labels


def log_odds(p: ArrayLike, eps: float = 1e-6) -> NDArray[np.float64]:
    """``log(p / (1 - p))`` of probabilities clipped to ``[eps, 1 - eps]``, so 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(q / (1 - q))


class ScoreCalibrator(BaseEstimator):
    """Logistic calibration of a 1-D score: ``p = 1 / (1 + exp(-(a_ * s + b_)))``.

    Fitted on validation trials (score of a probe against one enrolled speaker, label 1 when
    it is that speaker), it turns cosine similarities into probabilities.  Monotone, so a
    threshold on the probability is a threshold on the cosine (:meth:`inverse`).
    """

    def __init__(self, C: float = 1e4) -> None:
        self.C = C

    def fit(self, scores: ArrayLike, labels: ArrayLike) -> ScoreCalibrator:
        s, y = detection_labels(scores, labels)
        # The same objective (the slope on the raw score penalised by C, the intercept free) solved
        # on the standardised score, C scaled to match: on a raw score with a large offset and a
        # tiny spread (an SVC's "votes + confidence" statistic sits near n_classes - 1, spread
        # 0.005) lbfgs stopped early at a wrong-signed slope
        centre, spread = float(s.mean()), float(s.std())
        if spread == 0.0:
            raise ValueError("calibration failed: every score is the same")
        z = ((s - centre) / spread)[:, None]
        lr = LogisticRegression(C=self.C * spread**2, max_iter=1000, tol=1e-8).fit(z, y)
        slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        self.a_, self.b_ = slope / spread, intercept - slope * centre / spread
        if self.a_ <= 0:
            raise ValueError("calibration failed: higher scores are not more likely targets on this data")
        return self

    def predict_proba(self, scores: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probability (same shape as ``scores``) that each trial is a target."""
        z = self.a_ * np.asarray(scores, dtype=np.float64) + self.b_
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow

    def inverse(self, p: float) -> float:
        """The raw score whose calibrated probability is ``p`` (0 -> -inf, 1 -> +inf)."""
        if p <= 0.0:
            return float("-inf")
        if p >= 1.0:
            return float("inf")
        return float((np.log(p / (1.0 - p)) - self.b_) / self.a_)
