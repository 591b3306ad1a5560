"""Figures (matplotlib, Agg backend; no display): every plot voiceid draws lives here.

Modules: ``det`` (DET curves), ``bars`` (bar charts), ``confusion`` (confusion matrices),
``compare`` (the analysis notebook's figures).

May import: matplotlib, numpy, pandas, ``voiceid.scoring``; never MLflow or the stages' logic.
"""
