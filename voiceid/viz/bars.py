"""Static figures (matplotlib, Agg backend) shared by stages; no display needed."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

matplotlib.use("Agg")  # stages and tests run headless


def bar_plot(table: pd.DataFrame, x: str, y: str, hue: str | None, title: str, path: str | Path) -> None:
    """A bar chart of ``table[y]`` per ``table[x]``, coloured by ``table[hue]``."""
    width = min(max(6.0, 0.12 * len(table)), 30.0)
    fig, ax = plt.subplots(figsize=(width, 4))
    groups = table.groupby(hue, sort=False) if hue else [("", table)]
    for name, part in groups:
        ax.bar(part[x].astype(str), part[y], label=str(name) if hue else None)
    ax.set_title(title)
    ax.set_ylabel(y)
    ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    if hue:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
