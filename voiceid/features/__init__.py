"""Feature extraction (stage ``features``): clip-level vectors and log-mel frames from the waveform.

Modules: ``params`` (the ``features`` section), ``signal`` (pure signal processing: one STFT
feeds chroma, mel, MFCC, tonnetz; a second feeds logmel), ``dvector`` (Resemblyzer's
pretrained GE2E speaker encoder: 256-d embeddings), ``tables`` (parquet layouts),
``extract`` (the runner: content-hash cache, parallel workers, rejects), ``jit`` (numba
warm-up), ``seed_recipe`` (the seed work's recipe, the parity and benchmark reference).

May import: ``voiceid.data.audio``, ``voiceid.atomic``, librosa, numpy, pandas, pyarrow;
torch and resemblyzer only inside ``dvector``'s functions (when that set is computed); never
models, MLflow or Optuna.
"""
