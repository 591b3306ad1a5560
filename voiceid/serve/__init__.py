"""Serving: the champion (audio in, speaker or ``unknown`` out), the enrollment store, the CLI.

Modules: ``frontend`` (waveform -> features or embedding), ``champion`` (scorers and the
decision), ``persist`` (saving/loading champions and galleries), ``store`` (the enrollment
store: locking and persistence), ``enroll`` (validating and embedding recordings),
``request`` (what the served model accepts per row: validation, confined server-side paths,
the server's settings), ``cli`` (the ``voiceid`` command).

May import: ``voiceid.data.audio``, ``voiceid.features``, ``voiceid.ecapa.embed``,
``voiceid.scoring``, ``voiceid.atomic``; ``cli`` also ``voiceid.tracking`` (to load models).
Never ``select`` or ``grid``.
"""
