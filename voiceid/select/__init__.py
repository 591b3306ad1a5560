"""Selection (stage ``select``): calibrate and threshold each family's best model on val, report once on test.

Modules: ``params`` (the ``select`` section), ``calibration`` (classifier probability
calibration), ``thresholds`` (open-set threshold rules), ``candidates`` (building and scoring
a candidate), ``later`` (how an embedding system serves speakers enrolled later: the store's
back-end), ``protocol`` (choose the champion), ``sources`` (final runs from MLflow),
``register`` (the champion as a registered pyfunc model), ``report`` (report and plot tables).

May import: ``voiceid.scoring``, ``voiceid.serve`` (the champion it builds), ``voiceid.features``,
``voiceid.ecapa.model``, ``voiceid.tracking``, ``voiceid.config``.
"""
