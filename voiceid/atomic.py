"""Atomic file replacement: write beside the target, then ``os.replace`` it.

A reader (or a resumed run) sees the old file or the new one, never a torn one; a failed
write leaves no temporary behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = True, fsync: bool = False) -> None:
    """Create ``path``'s folder, call ``write(file)`` on a temporary beside it, rename it into place.

    ``fsync`` flushes the data to disk before the rename, for files that must survive a power
    loss (an enrollment store); caches that are rebuilt when invalid can skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
