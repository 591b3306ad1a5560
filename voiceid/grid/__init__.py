"""The experiment grid (stage ``grid@<family>``): tune a family on a feature set, log the final run.

Modules: ``params`` (the ``grid`` section), ``data`` (enrolled train/val/test rows of a feature
table), ``classifiers`` and ``clustering`` (the families: estimators, search spaces, scores),
``objectives`` (Optuna objectives), ``run`` (one family end to end).

May import: ``voiceid.study``, ``voiceid.scoring``, ``voiceid.tracking``, ``voiceid.config``,
``voiceid.features.params`` (which sets are encoder embeddings),
scikit-learn, CatBoost, Optuna; never ``select``, ``serve`` or ``ecapa``.
"""
