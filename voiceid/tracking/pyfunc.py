"""MLflow pyfunc wrapper of :class:`voiceid.serve.champion.Champion`.

Kept tiny on purpose: the model logic lives in :mod:`voiceid.serve.champion`; this class only
unpickles the champion artifact and forwards ``predict``.  The voiceid package is logged with
the model (``code_paths``), so ``mlflow.pyfunc.load_model("models:/voiceid@champion")``
works wherever the pinned requirements are installed.

Logged as *models from code* (MLflow's recommended form for custom pyfunc models): the model
is the three-line script :data:`MODEL_CODE` (:func:`write_model_code`), which MLflow runs at
load time, not a cloudpickle of this class, so loading needs no
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``.  The champion artifact itself is the project's own
pickle (:func:`voiceid.serve.persist.load_champion`): serve only models from a trusted store.

Requests are untrusted (:mod:`voiceid.serve.request`): each row is validated and answered on
its own; ``path`` rows and the ``gallery`` param are refused unless the server was started with
``VOICEID_AUDIO_ROOT=DIR``, and then confined to DIR; ``VOICEID_STORE=DIR`` serves an enrollment
store (re-read when it changes).  Both are read from the environment when the model is loaded
(:class:`voiceid.serve.request.ServeConfig`), never from a request.  A bad ``gallery`` param fails
the request with HTTP 400.  ``unwrap_python_model().champion`` gives the Champion itself
(``embed``, ``identify``) to the CLI.

Not imported by ``voiceid.tracking`` itself: the class must subclass mlflow's PythonModel,
so importing this module imports mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from voiceid.serve.champion import Champion
from voiceid.serve.persist import load_champion
from voiceid.serve.request import LiveGallery, RowError, ServeConfig, request_gallery
from voiceid.serve.store import EnrollmentError
from voiceid.tracking.config import import_mlflow

import_mlflow()  # telemetry off before mlflow.pyfunc pulls mlflow in
# Imported by name: mypy sees ``mlflow.pyfunc`` as the package's LazyLoader attribute, not the module.
from mlflow.pyfunc import PythonModel  # noqa: E402

ARTIFACT_KEY = "champion"

# Run by MLflow when the model loads, with the logged voiceid source on sys.path (code_paths).
MODEL_CODE = """\
from mlflow.models import set_model

from voiceid.tracking.pyfunc import ChampionModel

set_model(ChampionModel())
"""


def write_model_code(directory: Path) -> Path:
    """Write :data:`MODEL_CODE` to ``directory/champion_model.py`` (what ``log_model`` is given) and return its path."""
    path = directory / "champion_model.py"
    path.write_text(MODEL_CODE)
    return path


class ChampionModel(PythonModel):
    """pyfunc face of a Champion: DataFrame(path | waveform + sample_rate | audio_b64) -> DataFrame."""

    def __init__(self) -> None:
        # Empty until load_context: the champion comes from the artifact, the settings from the server's environment.
        self.champion: Champion | None = None
        self.config = ServeConfig()
        self.live: LiveGallery | None = None

    def load_context(self, context: Any) -> None:
        self.champion = load_champion(context.artifacts[ARTIFACT_KEY])
        self.config = ServeConfig.from_env()  # raises on a VOICEID_AUDIO_ROOT that is not a directory
        emb = self.champion.embedding
        self.live = LiveGallery(self.config.store, emb.embedder_id if emb else None) if self.config.store else None
        _warm_up(self.champion)

    # A DataFrame hint tells MLflow to validate against the logged signature only.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.champion is None:
            raise RuntimeError("champion not loaded (load_context was not called)")
        emb = self.champion.embedding
        try:
            gallery = request_gallery((params or {}).get("gallery"), self.config, self.live, emb.embedder_id if emb else None)
        except (RowError, EnrollmentError) as exc:  # a request-level problem: HTTP 400 with the reason
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(f"gallery: {exc}", error_code=INVALID_PARAMETER_VALUE) from exc
        return self.champion.predict_frame(model_input, gallery, audio_root=self.config.audio_root)


def _warm_up(champion: Champion) -> None:
    """One identification of a synthetic tone at load time: the feature stack's lazy imports and
    numba kernels (~3 s on a cold process) are paid here, not by the first request."""
    import logging

    import numpy as np

    t = np.arange(champion.sample_rate) / champion.sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 140.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
    try:
        champion.identify(tone, champion.sample_rate)
    except Exception:  # a warm-up is an optimisation: a failure here shows again, with context, on a real request
        logging.getLogger(__name__).warning("champion warm-up failed", exc_info=True)
