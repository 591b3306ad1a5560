"""DET figure: one curve per system with its EER point, on normal-deviate axes."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

import voiceid.viz.det
from voiceid.scoring.verification import det_curve
from voiceid.viz.det import det_figure


def test_one_curve_and_eer_marker_per_system() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    curves = {name: det_curve(rng.normal(labels * shift, 1.0), labels) for name, shift in (("good", 3.0), ("poor", 0.5))}
    fig = det_figure(curves, title="two systems")
    (ax,) = fig.axes
    labels_shown = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [t.split(" (")[0] for t in labels_shown] == ["good", "poor"]
    assert "EER ~" in labels_shown[0]
    # Curves live on probit axes: the 10% tick sits at the normal deviate of 0.1.
    assert np.isclose(ax.get_xticks()[list(voiceid.viz.det.TICKS_PCT).index(10)], norm.ppf(0.1))
    # The better-separated system reports the lower EER in its legend.
    good, poor = (float(t.split("~")[1].rstrip("%)")) for t in labels_shown)
    assert good < poor
