"""Scoring, pure numpy (WeSpeaker style): no file handling, no models, no MLflow.

Modules: ``verification`` (DET points, EER, minDCF), ``cosine`` (unit vectors and cosine
scores), ``centroids`` (speaker centroids and cosine identification), ``classification``
(closed-set metrics), ``openset`` (open-set identification metrics, ``UNKNOWN``, bootstrap),
``calibration`` (the logistic score calibrator the champion applies).

May import: numpy, scipy, scikit-learn; nothing else of voiceid.
"""
