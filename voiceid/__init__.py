"""voiceid: a reproducible speaker-identification experiment pipeline.

Stages in ``stages/`` are thin wrappers over its subpackages, one per stage: ``data``
decodes, validates, ingests and splits (``prepare``), ``features`` extracts, ``grid`` tunes
the model families, ``ecapa`` trains a neural embedder (both through ``study`` for Optuna and
``tracking``, the only MLflow importer), and ``select`` calibrates, thresholds and registers
the champion. ``serve`` runs the champion (the ``voiceid`` command); ``scoring`` holds the
shared numpy metrics, ``viz`` every figure, ``analysis`` the notebook's tables. Each
subpackage's docstring names its role and what it may import (README "Architecture").
"""

__version__ = "0.1.0"
