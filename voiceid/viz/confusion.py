"""Confusion matrices as heat maps (logged with each final run)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def confusion_figure(cm: np.ndarray, labels: Sequence[str], title: str = "") -> Figure:
    """Heat map of a confusion matrix (rows: true, columns: predicted)."""
    cm = np.asarray(cm)
    n = max(len(labels), 1)
    size = min(4 + 0.25 * n, 20)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = np.arange(len(labels))
    font = max(4, 10 - n // 10)
    ax.set_xticks(ticks, labels=list(labels), rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=list(labels), fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig
