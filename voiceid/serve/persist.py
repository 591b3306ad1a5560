"""Saving and loading the champion: a trusted pickle, the pyfunc model's one artifact."""

from __future__ import annotations

import pickle
from pathlib import Path

from voiceid.serve.champion import Champion


def save_champion(champion: Champion, path: str | Path) -> Path:
    """Pickle the champion (the pyfunc model's one artifact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(champion, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load_champion(path: str | Path) -> Champion:
    """Unpickle a champion written by :func:`save_champion` (trusted files only)."""
    with Path(path).open("rb") as f:
        obj = pickle.load(f)
    if not isinstance(obj, Champion):
        raise ValueError(f"{path}: not a voiceid champion (found {type(obj).__name__})")
    return obj
