"""MLflow pyfunc wrapper of :class:`voiceid.serve.champion.Champion`.

Kept tiny on purpose: the model logic lives in :mod:`voiceid.champion`; this class only
unpickles the champion artifact and forwards ``predict``.  The voiceid package is logged with
the model (``code_paths``), so ``mlflow.pyfunc.load_model("models:/voiceid@champion")``
works wherever the pinned requirements are installed.

``predict(frame, params={"gallery": "extra.npz"})`` also considers a gallery of speakers
enrolled later; ``unwrap_python_model().champion`` gives the Champion itself (``embed``,
``identify``) to the CLI.

Not imported by ``voiceid.tracking`` itself: the class must subclass mlflow's PythonModel,
so importing this module imports mlflow.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from voiceid.serve.champion import Champion
from voiceid.serve.persist import load_champion
from voiceid.tracking.config import import_mlflow

import_mlflow()  # telemetry off before mlflow.pyfunc pulls mlflow in
import mlflow.pyfunc  # noqa: E402

ARTIFACT_KEY = "champion"


class ChampionModel(mlflow.pyfunc.PythonModel):
    """pyfunc face of a Champion: DataFrame(path | waveform + sample_rate) -> DataFrame."""

    def __init__(self) -> None:
        self.champion: Champion | None = None

    def load_context(self, context: Any) -> None:
        self.champion = load_champion(context.artifacts[ARTIFACT_KEY])

    # A DataFrame hint tells MLflow to validate against the logged signature only.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.champion is None:
            raise RuntimeError("champion not loaded (load_context was not called)")
        gallery = (params or {}).get("gallery") or None
        return self.champion.predict_frame(model_input, gallery)
