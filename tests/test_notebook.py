"""notebooks/compare_runs.ipynb runs headless (nbclient) over a small real pipeline run and draws its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from configured_candidates import configured_candidates
from nbclient import NotebookClient
from pipeline_run import PipelineRun

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_runs.ipynb"
# metric bars, training time, trial objectives, score distributions, DET
N_FIGURES = 5


def _parameter_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "REPO_ROOT" in _parameter_cell(nb).source and "TRACKING_URI" in _parameter_cell(nb).source
    # helper code lives in voiceid.analysis: cells stay short calls
    assert all(len(c.source.splitlines()) <= 15 for c in code)
    assert not any("def " in c.source or "import mlflow" in c.source for c in code)


def test_notebook_executes_and_draws_figures(
    pipeline_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = pipeline_run  # prepare .. select on a subset of data/default (tests/pipeline_run.py)
    # an outer store must not win over the parameters; the kernel inherits this environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    _parameter_cell(nb).source = f"REPO_ROOT = {str(run.root)!r}\nTRACKING_URI = {run.uri!r}\nEXPERIMENT_PREFIX = 'voiceid/'"
    # the kernel starts in another folder than the repo: the parameters alone must locate everything
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= N_FIGURES, f"expected {N_FIGURES} figures, got {len(images)}"
    assert all(len(o["data"]["image/png"]) > 5000 for o in images)  # base64 PNGs with content, not blanks

    html = "\n".join(o["data"].get("text/html", "") for o in outputs if "data" in o)
    for family in run.families:  # grid.families of params.yaml and ecapa
        assert f">{family}<" in html, f"final-run table lacks {family}"
    for feature_set in (*run.feature_sets, "logmel"):
        assert f">{feature_set}<" in html, f"final-run table lacks feature set {feature_set}"
    # The open-set table (its own cell's output: the final-run table above names ecapa anyway) lists
    # every candidate the params configure, cosine and ecapa included, whatever selection.json says.
    (openset_cell,) = [c for c in nb.cells if c.cell_type == "code" and "openset_table(" in c.source]
    openset_html = "\n".join(o["data"].get("text/html", "") for o in openset_cell.outputs if "data" in o)
    assert "<table" in openset_html
    for family in sorted(configured_candidates(run.root / "params.yaml")):
        assert f">{family}<" in openset_html, f"open-set table lacks {family}"
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"in {run.uri}" in text
