"""DET curves (miss vs false-alarm rate on normal-deviate axes) as a matplotlib Figure.

On probit axes a system whose target and non-target scores are Gaussian plots as a straight
line, so systems are easy to compare over the whole operating range.  The figure is built
with the object API (no pyplot state), ready for ``tracking.log_final_run(figures=...)``.

Example:
    >>> from voiceid.scoring.verification import det_curve
    >>> fig = det_figure({"toy": det_curve([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0])})
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['false alarm rate (%)']
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from voiceid.scoring.verification import DET_CLIP, DetPoints, probit

TICKS_PCT = (0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95)


def det_figure(curves: Mapping[str, DetPoints], title: str = "", emphasize: Collection[str] = ()) -> Figure:
    """One DET curve per entry (label -> :func:`voiceid.scoring.verification.det_curve` points), EER marked.

    Curves named in ``emphasize`` (e.g. the embedding systems) are drawn solid and thick and
    the others dashed, so a few systems read against many.
    """
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for label, (p_fa, p_miss, _) in curves.items():
        style: dict[str, Any] = (
            {}
            if not emphasize
            else {"linestyle": "-", "linewidth": 2.6}
            if label in emphasize
            else {"linestyle": "--", "linewidth": 1.4}
        )
        line = ax.plot(probit(p_fa), probit(p_miss), label=label, drawstyle="steps-post", **style)[0]
        i = int(np.argmin(np.abs(p_fa - p_miss)))
        rate = 0.5 * (p_fa[i] + p_miss[i])
        ax.plot(probit(np.array([rate])), probit(np.array([rate])), "o", color=line.get_color())
        line.set_label(f"{label} (EER ~{100 * rate:.1f}%)")
    ticks = probit(np.array(TICKS_PCT) / 100)
    labels = [f"{t:g}" for t in TICKS_PCT]
    ax.set_xticks(ticks, labels=labels)
    ax.set_yticks(ticks, labels=labels)
    lim = (probit(np.array([DET_CLIP]))[0], probit(np.array([1 - DET_CLIP]))[0])
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.plot(lim, lim, ":", color="grey", linewidth=0.8)  # the EER diagonal
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
