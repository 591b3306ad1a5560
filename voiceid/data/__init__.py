"""Data preparation (stage ``prepare``): decode and validate audio, ingest dataset layouts, split speakers.

Modules: ``audio`` (decode, resample, validate, fingerprint one file; the ``AudioError`` family),
``adapters`` (folder tree, CSV and Dusha manifests -> one table of candidate utterances),
``splits`` (speaker-disjoint roles and splits), ``prepare`` (the stage's logic end to end).

May import: numpy, pandas, soundfile, soxr and ``voiceid.config`` / ``voiceid.atomic``; never
features, models, MLflow or Optuna.
"""
