"""voiceid: a reproducible speaker-identification experiment pipeline.

Stages in ``stages/`` are thin wrappers over this package: ``audio`` decodes and
validates, ``datasets`` ingests and splits, ``features`` extracts, ``models`` /
``tuning`` / ``tracking`` run and log the experiment grid, ``ecapa`` trains a
neural embedder, ``thresholds`` / ``selection`` make open-set decisions, and
``cli`` serves the champion model.
"""

__version__ = "0.1.0"
