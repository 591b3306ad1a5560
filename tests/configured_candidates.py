"""The selection candidates a pipeline's params.yaml configures, derived from the configuration alone.

Tests that read a pipeline run's outputs compare them with this set rather than with the
run's own ``metrics/selection.json``: a selection that silently dropped ECAPA (or any
configured family) must fail them, not redefine what is expected.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from voiceid.adapt.params import SET_NAME as ADAPTED_SET
from voiceid.config import load_section
from voiceid.grid import clustering
from voiceid.select.params import SelectParams

ALWAYS = frozenset({"cosine", "ecapa"})  # the seed's baseline (built by select) and the embedder the pipeline trains


def configured_candidates(params_path: Path) -> set[str]:
    """``select.families`` that this pipeline produces a model for: the grid's classifier
    families, ``ecapa`` (its own stage) and the embedding systems select builds from the
    features (``cosine``, ``dvector``, ``joint``) and from the adapted encoder that stage
    ``adapt`` always makes (``dvector_ft``, ``joint_ft``).  ``fusion`` is not in it: select builds it
    only when val allows (it is skipped, with a reason, when every val answer is right).

    Asserts that the configuration asks for both ``cosine`` and ``ecapa``: the pipeline's
    selection is meant to compare the embedder with the baselines.
    """
    params = yaml.safe_load(Path(params_path).read_text())
    families = set(params["select"]["families"])
    classifiers = {f for f in params["grid"]["families"] if f not in clustering.FAMILIES}
    missing = ALWAYS - families
    assert not missing, f"{params_path}: select.families {sorted(families)} lacks {sorted(missing)}"
    sets = set(params["features"]["sets"]) | {ADAPTED_SET}  # stage adapt makes it whatever features.sets holds
    built = load_section(SelectParams, "select", params_path).built_feature_sets()
    embeddings = {f for f, fs in built.items() if set(fs.split("+")) <= sets}
    expected = families & (classifiers | ALWAYS | embeddings)
    assert expected >= ALWAYS and expected - ALWAYS, f"{params_path}: no classifier family is both trained and selected"
    return expected
