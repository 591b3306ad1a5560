"""Analysis behind ``notebooks/compare_runs.ipynb``: runs from MLflow and the select stage's outputs as tables.

Modules: ``runs`` (MLflow runs -> tidy tables), ``selection`` (``reports/selection.json`` and
``plots/select/*.csv`` -> tables). Figures are in ``voiceid.viz.compare``.

May import: ``voiceid.tracking``, ``voiceid.config``, ``voiceid.select.candidates`` (names),
``voiceid.select.report`` (how a threshold is described), pandas.
"""
