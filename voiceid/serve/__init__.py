"""Serving: the champion (audio in, speaker or ``unknown`` out), the enrollment store, the CLI, the demo page.

Modules: ``frontend`` (waveform -> features or embedding), ``champion`` (scorers and the
decision, gallery-size-aware thresholds), ``decision`` (a classifier's own open-set statistic), ``fusion`` (a classifier and an embedding system
answering together), ``persist`` (saving/loading champions), ``gallery`` (extra speakers as
an ``.npz``), ``store`` (the enrollment store: locking and persistence), ``enroll``
(validating and embedding recordings), ``request`` (what the served model accepts per row:
validation, confined server-side paths, the server's settings), ``cli`` (the ``voiceid``
command), ``demo`` (the ``voiceid demo`` web page).

May import: ``voiceid.data.audio``, ``voiceid.features``, ``voiceid.ecapa.embed``,
``voiceid.scoring``, ``voiceid.atomic``; ``cli`` and ``demo`` also ``voiceid.tracking`` (to load
models). Never ``select`` or ``grid``.
"""
