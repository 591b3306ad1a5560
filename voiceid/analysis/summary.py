"""The end of ``make run`` and ``voiceid report``: the selection at a glance, in at most 100 columns.

Reads ``metrics/selection.json`` (each candidate's test figures with bootstrap intervals, the
champion, the skipped families) and, when present, ``reports/selection.json`` (validation
figures, probe counts), plus ``params.yaml`` for where the runs are. Prints one row per
selection candidate (best validation ``champion_metric`` first; the champion starred) with
closed-set accuracy, EER and DIR@FAR1% on test, the champion's threshold and test FAR/FRR, the
metric that chose it and why, where the plots, reports and MLflow runs are, and the commands
to try next. Nothing here imports MLflow: the summary prints in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voiceid.scoring.openset import LOWER_IS_BETTER
from voiceid.select.report import threshold_basis
from voiceid.tracking.ui import UI_URL, training_runs_url

WIDTH = 100
# Test figures per candidate row: key in selection.json -> column header.
COLUMNS = {"accuracy": "accuracy", "eer": "EER", "dir_far_1": "DIR@FAR1%"}
LABELS = {
    "accuracy": "accuracy",
    "eer": "EER",
    "dir_far_1": "DIR@FAR1%",
    "dir_far_5": "DIR@FAR5%",
    "min_dcf": "minDCF",
    "open_set_accuracy": "open-set acc",
    "far": "FAR",
    "frr": "FRR",
}
PERCENT = frozenset({"accuracy", "eer", "dir_far_1", "dir_far_5", "open_set_accuracy", "far", "frr", "dir"})
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class SummaryError(Exception):
    """The select stage's outputs are missing or unreadable."""


def _read(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise SummaryError(f"{path}: not found; run the pipeline first (`make run` or `dvc repro`)")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SummaryError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or "champion" not in data or "candidates" not in data:
        raise SummaryError(f"{path}: not a selection summary (no 'champion' / 'candidates')")
    return data


def _params(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN: not a number to show


def fmt(metric: str, value: Any) -> str:
    """A figure as printed: percentages with one decimal (100 as "100"), others with 3 decimals.

    >>> fmt("eer", 0.1234), fmt("accuracy", 1.0), fmt("min_dcf", 0.5), fmt("eer", None)
    ('12.3', '100', '0.500', '-')
    """
    v = _num(value)
    if v is None:
        return "-"
    if metric in PERCENT:
        return "100" if round(100 * v, 1) == 100 else f"{100 * v:.1f}"
    return f"{v:.3f}"


def cell(metric: str, flat: Mapping[str, Any]) -> str:
    """``value [lo-hi]`` of ``metric`` from a flattened test dict (``eer``, ``eer_lo``, ``eer_hi``).

    >>> cell("eer", {"eer": 0.1, "eer_lo": 0.05, "eer_hi": 0.2})
    '10.0 [5.0, 20.0]'
    >>> cell("eer", {"eer": 0.1})
    '10.0'
    """
    value = fmt(metric, flat.get(metric))
    if _num(flat.get(f"{metric}_lo")) is None or _num(flat.get(f"{metric}_hi")) is None:
        return value
    return f"{value} [{fmt(metric, flat[f'{metric}_lo'])}, {fmt(metric, flat[f'{metric}_hi'])}]"


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first or indent, subsequent_indent=indent, break_on_hyphens=False) or [
        first.rstrip()
    ]


def _order(candidates: Mapping[str, Any], val: Mapping[str, Any], metric: str, champion: str) -> list[str]:
    """Champion first, then by validation ``metric`` (best first), then the file's order."""
    names = list(candidates)
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(f: str) -> tuple[int, float, int]:
        v = _num(val.get(f))
        return (f != champion, sign * v if v is not None else float("inf"), names.index(f))

    return sorted(names, key=key)


def _bin_prefix(root: Path) -> str:
    """``.venv/bin/`` when this interpreter is a virtualenv under ``root`` (so the commands work as printed)."""
    bindir = Path(sys.executable).parent
    try:
        rel = bindir.absolute().relative_to(root.absolute())
    except ValueError:
        return ""
    return f"{rel.as_posix()}/"


def _example_audio(root: Path) -> str | None:
    """An enrolled speaker's test recording from the prepared manifest, for the ``voiceid identify`` hint."""
    manifest = root / "data" / "prepared" / "manifest.parquet"
    if not manifest.is_file():
        return None
    try:
        import pandas as pd

        frame = pd.read_parquet(manifest, columns=["path", "role", "split"])
    except Exception:  # a hint only: never fail the summary over it
        return None
    rows = frame[(frame["role"] == "enrolled") & (frame["split"] == "test")]
    return str(rows["path"].iloc[0]) if len(rows) else None


def render(
    selection: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    prefix: str = "",
    example: str | None = None,
    tracking_uri: str | None = None,
    experiments: Mapping[str, str] | None = None,
) -> str:
    """The summary text (every line at most :data:`WIDTH` characters).

    ``selection``: metrics/selection.json; ``report``: reports/selection.json (optional: it adds
    the validation column and the probe counts); ``params``: params.yaml (optional: experiment
    names); ``prefix``: put before the commands (``.venv/bin/``); ``example``: an audio file
    for the ``voiceid identify`` hint; ``experiments``: ``{name: id}`` of the store's voiceid
    experiments, for direct links to their training-runs tables.
    """
    params = params or {}
    champ = selection["champion"]
    family = str(champ.get("family", "?"))
    metric = str(champ.get("champion_metric", ""))
    candidates: Mapping[str, Any] = selection.get("candidates", {})
    full = (report or {}).get("candidates", {})
    val = {f: (full.get(f, {}).get("val") or {}).get(metric) for f in candidates}
    if _num(val.get(family)) is None:
        val[family] = champ.get(f"val_{metric}")
    n = (report or {}).get("n_probes") or {}
    lines: list[str] = []

    probes = f" ({n['test_enrolled']} enrolled + {n['test_unknown']} unknown probes)" if n else ""
    lines.append(f"voiceid selection, scored once on test{probes}; % [95% bootstrap interval]")
    lines.append("")
    names = _order(candidates, val, metric, family)
    fs_width = max([len("features"), *(len(str(candidates[f].get("feature_set", ""))) for f in names)])
    name_width = max([len("candidate"), *(len(f) for f in names)])
    val_head = f"val {LABELS.get(metric, metric)}"
    widths = {k: max([len(h), *(len(cell(k, candidates[f].get("test", {}))) for f in names)]) for k, h in COLUMNS.items()}
    # the table stays within WIDTH: long feature-set names (a fusion's "a+b+c") are cut, not wrapped
    others = 2 + name_width + 2 + 2 + len(val_head) + sum(2 + w for w in widths.values())
    fs_width = max(len("features"), min(fs_width, WIDTH - others))
    head = f"  {'candidate':{name_width}s}  {'features':{fs_width}s}  {val_head:>{len(val_head)}s}"
    head += "".join(f"  {h:{widths[k]}s}" for k, h in COLUMNS.items())
    lines.append(head)
    for f in names:
        c = candidates[f]
        test = c.get("test", {})
        mark = "*" if f == family else " "
        fs_name = str(c.get("feature_set", ""))
        fs_name = fs_name if len(fs_name) <= fs_width else fs_name[: fs_width - 3] + "..."
        row = f"{mark} {f:{name_width}s}  {fs_name:{fs_width}s}  {fmt(metric, val.get(f)):>{len(val_head)}s}"
        row += "".join(f"  {cell(k, test):{widths[k]}s}" for k in COLUMNS)
        lines.append(row.rstrip())
    lines.append("  * champion. accuracy: closed-set, enrolled probes; EER: enrolled vs unknown probes; DIR@FAR1%:")
    lines.append("    right speaker and accepted while 1% of unknowns are; val: the figure that chose the champion")
    skipped: Mapping[str, str] = selection.get("skipped", {}) or {}
    if skipped:
        lines.append("")
        for f, why in skipped.items():
            text = f"skipped {f}: {why}"
            lines.append(text if len(text) <= WIDTH else text[: WIDTH - 3] + "...")

    test = champ.get("test", {})
    fs = str(candidates.get(family, {}).get("feature_set", "")) or "-"
    lines.append("")
    rule = str(champ.get("threshold_rule", "?"))
    lines += _wrap(
        f"{family} on {fs}: decides at threshold {fmt('', champ.get('threshold'))} ({threshold_basis(rule, champ)})",
        indent="          ",
        first="champion  ",
    )
    lines.append(f"          test FAR {cell('far', test)} %, FRR {cell('frr', test)} %")
    reason = str(champ.get("champion_metric_reason", "")).strip()
    # the reason names the metric first: "eer instead of dir_far_1: ..." / "dir_far_1 as configured (...)"
    chosen = f"chosen on val by {reason if reason.startswith(metric) else metric}"
    lines += _wrap(chosen, indent="          ", first="          ")
    runner = champ.get("runner_up") or {}
    if runner:
        diff = runner.get(f"test_{metric}_minus_champion") or {}
        flat = {metric: diff.get("value"), f"{metric}_lo": diff.get("lo"), f"{metric}_hi": diff.get("hi")}
        verdict = "distinguishable" if runner.get("distinguishable_on_test") else "not distinguishable"
        lines += _wrap(
            f"runner-up {runner.get('family', '?')}: test {LABELS.get(metric, metric)} minus champion's "
            f"{cell(metric, flat)}, {verdict} on test (paired bootstrap)",
            indent="          ",
            first="          ",
        )
    if champ.get("version"):
        name = champ.get("registered_model", "voiceid")
        lines.append(f"          registered as models:/{name}@champion (version {champ['version']})")

    select = params.get("select") or {}
    grid = params.get("grid") or {}
    uri = (
        tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (params.get("tracking") or {}).get("uri") or DEFAULT_TRACKING_URI
    )
    dataset = grid.get("dataset_name", "default")
    sets = [*(grid.get("feature_sets") or []), "logmel"]
    lines.append("")
    lines.append("where")
    hang = " " * 11
    lines.append("  plots    plots/select/: det.csv, roc.csv (every candidate), scores.csv, confusion.csv (champion)")
    lines.append(f"{hang}and plots/prepare/utts_per_speaker.png; `dvc plots show` draws them all")
    lines.append("  results  metrics/selection.json (test figures), reports/selection.json (+ val, calibration)")
    grids = f"voiceid/{dataset}/{{{','.join(dict.fromkeys(sets))}}}" if sets else f"voiceid/{dataset}/*"
    lines += _wrap(
        f"MLflow   {uri}: per family a <family>-final run and a study run (its trials nested) in {grids}; "
        f"the champion's run in {select.get('experiment', 'voiceid/select')}",
        indent=hang,
        first="  ",
    )
    if experiments:
        base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_URL
        lines.append(f"{hang}the training runs of experiment N (once `voiceid ui` or `mlflow ui` serves):")
        lines.append(f"{hang}  {training_runs_url(base, 'N')}")
        line = f"{hang}  N:"
        for i, (name, eid) in enumerate(experiments.items()):
            item = f" {eid} {name}" + ("," if i < len(experiments) - 1 else "")
            if len(line) + len(item) > WIDTH:
                lines.append(line)
                line = f"{hang}    "
            line += item
        lines.append(line)

    lines.append("")
    lines.append("next")
    if uri.startswith(("http://", "https://")):
        ui = (f"open {uri}", 'the MLflow server (choose "Model training" at the top left once)')
    else:
        store = "" if uri == DEFAULT_TRACKING_URI else f" --tracking-uri {uri}"
        ui = (f"{prefix}voiceid ui{store}", f"mlflow ui on {UI_URL}, opened on the training runs")
    commands = [
        ui,
        (f"{prefix}voiceid identify {example or 'FILE.wav'}", "an enrolled speaker or unknown"),
        (f"{prefix}dvc plots show", "writes plots/html/index.html (works offline)"),
        (f"{prefix}voiceid report", "this summary again"),
    ]
    pad = max([0, *(len(c) for c, _ in commands if len(c) <= 30)])  # long commands are not padded to
    for command, what in commands:
        line = f"  {command:{pad}s}  # {what}"
        if len(line) <= WIDTH:
            lines.append(line)
        else:  # the comment goes below its command
            lines += _wrap(command, indent="      ", first="  ")
            lines += _wrap(f"# {what}", indent="      ", first="      ")
    # whatever the names and paths, nothing wider than WIDTH: a long line continues indented below
    fitted = [part for line in lines for part in (_wrap(line, indent="    ") if len(line) > WIDTH else [line])]
    return "\n".join(line.rstrip() for line in fitted) + "\n"


def summarize(
    root: str | Path = ".",
    metrics: str | Path | None = None,
    report: str | Path | None = None,
    params: str | Path | None = None,
) -> str:
    """The summary of the select stage's outputs under ``root`` (the repo root)."""
    base = Path(root)
    selection = _read(Path(metrics) if metrics else base / "metrics" / "selection.json", required=True)
    assert selection is not None
    full = _read(Path(report) if report else base / "reports" / "selection.json", required=False)
    settings = _params(Path(params) if params else base / "params.yaml")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (settings.get("tracking") or {}).get("uri") or DEFAULT_TRACKING_URI
    return render(
        selection,
        full,
        settings,
        prefix=_bin_prefix(base),
        example=_example_audio(base),
        tracking_uri=uri,
        experiments=_experiment_ids(uri, base),
    )


def _experiment_ids(uri: str, root: Path) -> dict[str, str] | None:
    """``{name: id}`` of the voiceid experiments in a local sqlite store; None for other stores or none.

    Only a sqlite file that exists is opened (MLflow would create an empty one), and never a
    server (an unreachable one would be retried for minutes at the end of ``make run``).
    """
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :])
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        return None
    try:
        from voiceid import tracking

        with tracking.uri_override(f"sqlite:///{path.resolve()}"):
            tracking.configure()
            return tracking.experiment_ids("voiceid/") or None
    except Exception:  # links are a convenience: the summary prints without them
        return None


def cmd_report(args: argparse.Namespace) -> int:
    try:
        text = summarize(args.root, args.metrics, args.report, args.params)
    except SummaryError as exc:
        print(f"voiceid report: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def add_report_command(sub: Any) -> None:
    """Register ``voiceid report`` on the ``voiceid`` command's subparsers."""
    p = sub.add_parser("report", help="the last selection at a glance: candidates, champion, where results are, what next")
    p.add_argument("--root", default=".", help="repo root holding metrics/, reports/, params.yaml (default: .)")
    p.add_argument("--metrics", default=None, help="selection metrics (default ROOT/metrics/selection.json)")
    p.add_argument("--report", default=None, help="full selection report (default ROOT/reports/selection.json)")
    p.add_argument("--params", default=None, help="params file (default ROOT/params.yaml)")
    p.set_defaults(run=cmd_report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voiceid-report", description=__doc__.splitlines()[0] if __doc__ else None)
    add_report_command(parser.add_subparsers(dest="command", required=True))
    return cmd_report(parser.parse_args(["report", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    raise SystemExit(main())
