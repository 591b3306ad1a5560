"""``voiceid`` command line: identify speakers with the champion, enroll new ones without retraining.

    voiceid identify FILE_OR_DIR... [--model URI] [--store DIR | --no-store] [--json]
    voiceid enroll --speaker NAME FILE_OR_DIR... [--append] [--min-files 3] [--model URI]
    voiceid enroll --list [--json]
    voiceid enroll --remove NAME

``--model`` is an MLflow model URI (default ``models:/voiceid@champion``, the select stage's
registration, in ``--tracking-uri`` / ``$MLFLOW_TRACKING_URI`` / ``sqlite:///mlflow.db``) or a
champion pickle (:func:`voiceid.serve.persist.save_champion`).  Identification considers the
model's own speakers plus those of the enrollment store (``--store``, default
``data/enrollment``; format in :mod:`voiceid.serve.store`).

A folder stands for the audio files below it (walked in sorted order, symlinks followed once,
hidden entries skipped); a folder without any is reported (``no_audio``).  The progress bar
(stderr, more than one file) shows an error count; the errors themselves are printed as whole
lines once it is closed.  The store is read once per command.

Exit codes: 0 every file was processed (``unknown`` is an answer, not an error); 1 some file
or folder could not be used (each named on stderr as ``voiceid: <file>: <problem>``; the others
are still answered) or an enrollment was refused; 2 no usable model, store, arguments or audio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "models:/voiceid@champion"


class CliError(Exception):
    """A problem that stops the command (exit code 2)."""


def _err(message: str) -> None:
    print(f"voiceid: {message}", file=sys.stderr, flush=True)  # never while a progress bar runs (see cmd_identify)


def load_model(uri: str, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(champion, identity) for a champion pickle path or an MLflow model URI."""
    from voiceid.serve.persist import load_champion

    if Path(uri).is_file():
        try:
            champion = load_champion(uri)
        except Exception as exc:
            raise CliError(f"{uri}: not a loadable champion model ({exc})") from exc
        return champion, _identity(champion, {"uri": str(Path(uri).resolve())})

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # requirement-mismatch chatter is not the user's problem
    from voiceid import tracking

    with tracking.uri_override(tracking_uri):  # an explicit --tracking-uri, for this call only
        store = tracking.configure()
        info: dict[str, Any] = {"uri": uri, "tracking_uri": store}
        # Asking MLflow about a missing sqlite file would create an empty store there.
        if store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
            raise CliError(
                f"cannot load model {uri}: no MLflow store at {store}; run the pipeline (dvc repro) to "
                "register a champion, or pass --model / --tracking-uri"
            )
        try:
            pyfunc = tracking.load_pyfunc(uri)
            champion = pyfunc.unwrap_python_model().champion
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CliError(
                f"cannot load model {uri} from {store}: {first}; run the pipeline (dvc repro) to register "
                "a champion, or pass --model / --tracking-uri"
            ) from exc
        if uri.startswith("models:/") and "@" in uri:
            name, alias = uri[len("models:/") :].split("@", 1)
            version = tracking.aliased_version(name, alias)
            if version:
                info.update(version=version["version"], run_id=version["run_id"])
    return champion, _identity(champion, info)


def _identity(champion: Any, info: dict[str, Any]) -> dict[str, Any]:
    emb = champion.embedding
    return {**info, "family": champion.family, "embedder_id": emb.embedder_id if emb is not None else None}


def _describe(info: dict[str, Any]) -> str:
    return info["uri"] + (f" v{info['version']}" if info.get("version") else "")


def expand(args: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(files, problems as (folder, error)): a folder stands for the audio files below it; one without any is a problem.

    Folders are walked in sorted order, following symlinks but never the same folder twice;
    hidden files and folders (``.name``) are skipped.  Other arguments are kept as given: a
    missing file is reported by ``load_audio``, naming it.
    """
    from voiceid.data.audio import AUDIO_EXTENSIONS

    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for a in args:
        if not Path(a).is_dir():
            files.append(a)
            continue
        found, unreadable = _audio_below(Path(a), AUDIO_EXTENSIONS)
        files += found
        problems += [(d, f"unreadable: expected a readable folder, found {why}") for d, why in unreadable]
        if not found and not unreadable:
            problems.append((a, f"no_audio: expected audio files ({', '.join(AUDIO_EXTENSIONS)}) below this folder, found none"))
    return files, problems


def _audio_below(folder: Path, extensions: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Audio files below ``folder`` (sorted walk) and the sub-folders that could not be listed."""
    found: list[str] = []
    unreadable: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    for here, dirs, names in os.walk(
        folder, followlinks=True, onerror=lambda e: unreadable.append((str(e.filename), e.strerror or str(e)))
    ):
        st = os.stat(here)
        if (st.st_dev, st.st_ino) in seen:  # a symlink back up the tree
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(here, n) for n in sorted(names) if not n.startswith(".") and Path(n).suffix.lower() in extensions]
    return found, unreadable


def identify_file(champion: Any, path: str, gallery: Any, min_duration: float, silence_db: float) -> dict[str, Any]:
    """One result row: path, speaker (or "unknown"), score, threshold, known, error."""
    from voiceid.data.audio import AudioError, load_audio, validate_clip

    try:
        clip = load_audio(path, champion.sample_rate)
        validate_clip(clip, path, min_duration, None, silence_db)
        d = champion.identify(clip.wave, clip.sample_rate, gallery)
    except AudioError as exc:
        return _error_row(path, f"{exc.reason}: expected {exc.expected}, found {exc.found}")
    except ValueError as exc:  # e.g. a clip the front end cannot frame
        return _error_row(path, str(exc))
    return {
        "path": path,
        "speaker": d.speaker,
        "score": round(d.score, 6),
        "threshold": round(d.threshold, 6),
        "known": d.known,
        "error": None,
    }


def cmd_identify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from voiceid.serve.store import EnrollmentError, EnrollmentStore

    files, problems = expand(args.files)
    if not files:
        raise CliError("; ".join(f"{p}: {e}" for p, e in problems) or f"no audio files in {' '.join(args.files)}")
    champion, info = load_model(args.model, args.tracking_uri)
    gallery, store_info = None, None
    if not args.no_store:
        store = EnrollmentStore(args.store)
        try:
            state = store.load()  # once: the gallery and the version reported are the same version
            gallery = store.gallery(info["embedder_id"], state)
        except EnrollmentError as exc:
            raise CliError(f"{exc}; or pass --no-store") from exc
        store_info = {"path": str(store.root), "version": state.version, "speakers": sorted(state.speakers)}

    results = [_error_row(p, e) for p, e in problems]
    errors = [f"{p}: {e}" for p, e in problems]
    bar = tqdm(files, desc="identify", unit="file", file=sys.stderr, disable=args.json or len(files) <= 1)
    with bar:
        for path in bar:
            row = identify_file(champion, path, gallery, args.min_duration, args.silence_db)
            if row["error"]:
                errors.append(f"{path}: {row['error']}")
                bar.set_postfix(errors=len(errors), refresh=False)
            results.append(row)
    for message in errors:  # after the bar is closed: whole lines, not mixed into its redraws
        _err(message)

    if args.json:
        print(json.dumps({"model": info, "store": store_info, "results": results}, indent=2))
    else:
        width = max(len("file"), *(len(r["path"]) for r in results))
        names = max(len("speaker"), *(len(r["speaker"] or "-") for r in results))
        print(f"{'file':{width}s}  {'speaker':{names}s}  {'score':>7s}  {'threshold':>9s}")
        for r in results:
            if r["error"]:
                print(f"{r['path']:{width}s}  {'-':{names}s}  {'-':>7s}  {'-':>9s}  error: {r['error']}")
            else:
                print(f"{r['path']:{width}s}  {r['speaker']:{names}s}  {r['score']:7.4f}  {r['threshold']:9.4f}")
    return 1 if any(r["error"] for r in results) else 0


def _error_row(path: str, error: str) -> dict[str, Any]:
    return {"path": path, "speaker": None, "score": None, "threshold": None, "known": False, "error": error}


def cmd_enroll(args: argparse.Namespace) -> int:
    from voiceid.serve.enroll import EnrollParams, enroll_speaker
    from voiceid.serve.store import EnrollmentError, EnrollmentStore

    store = EnrollmentStore(args.store)
    try:
        if args.list:
            return _list(store, args.json)
        if args.remove is not None:
            version = store.remove(args.remove)
            print(f"removed {args.remove!r} from {store.root} (store version {version})")
            return 0
        files, problems = expand(args.files)
        if not files:
            detail = "".join(f"; {p}: {e}" for p, e in problems)
            raise CliError(f"enroll --speaker needs recordings (files or folders){detail}")
        params = EnrollParams(args.min_files, args.min_duration, None, args.silence_db)
        params.check()  # before the seconds a model load costs
        champion, info = load_model(args.model, args.tracking_uri)
        model = {k: info[k] for k in ("uri", "version", "run_id", "family") if info.get(k)}
        speaker, skipped = enroll_speaker(store, champion, args.speaker, files, params, model, append=args.append)
    except EnrollmentError as exc:
        _err(str(exc))
        return 1
    except ValueError as exc:  # bad option values (EnrollParams.check)
        raise CliError(str(exc)) from exc
    for message in [f"{p}: {e}" for p, e in problems] + skipped:
        _err(f"skipped {message}")
    if speaker.name in champion.label_map:
        _err(
            f"note: {speaker.name!r} is also one of the model's own speakers; with the store, these recordings replace "
            "its centroid"
        )
    print(
        f"enrolled {speaker.name!r} with {speaker.n_utterances} recording(s) into {store.root} (store version "
        f"{speaker.version}; embeddings by {_describe(info)}, {info['embedder_id']})"
    )
    return 0


def _list(store: Any, as_json: bool) -> int:
    state = store.load()
    speakers = store.speakers(state)
    if as_json:
        print(
            json.dumps(
                {
                    "path": str(store.root),
                    "version": state.version,
                    "embedder_id": state.embedder_id,
                    "model": state.model,
                    "speakers": [
                        {"name": s.name, "n_utterances": s.n_utterances, "created": s.created, "updated": s.updated}
                        for s in speakers
                    ],
                },
                indent=2,
            )
        )
        return 0
    if not speakers:
        print(f"{store.root}: no enrolled speakers")
        return 0
    made = state.model.get("uri", "?") + (f" v{state.model['version']}" if state.model.get("version") else "")
    print(f"{store.root} (version {state.version}; embeddings by {made}, {state.embedder_id})")
    width = max(len("speaker"), *(len(s.name) for s in speakers))
    print(f"{'speaker':{width}s}  {'files':>5s}  {'created':25s}  updated")
    for s in speakers:
        print(f"{s.name:{width}s}  {s.n_utterances:5d}  {s.created:25s}  {s.updated}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"MLflow model URI or champion .pkl (default {DEFAULT_MODEL})")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--store", default="data/enrollment", help="enrollment store directory (default data/enrollment)")
    p.add_argument("--silence-db", type=float, default=-50.0, help="a file whose loudest 25 ms frame is quieter is unusable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voiceid", description="Identify speakers with the champion model; enroll new ones without retraining."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ident = sub.add_parser("identify", help="who is speaking in each file (or unknown)")
    ident.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders of them")
    _common(ident)
    ident.add_argument("--no-store", action="store_true", help="ignore the enrollment store")
    ident.add_argument("--json", action="store_true", help="one JSON document on stdout (no progress bar)")
    ident.add_argument("--min-duration", type=float, default=0.25, help="shorter files are reported unusable (s)")
    ident.set_defaults(run=cmd_identify)

    enroll = sub.add_parser("enroll", help="add, update, list or remove enrolled speakers (no retraining)")
    what = enroll.add_mutually_exclusive_group(required=True)
    what.add_argument("--speaker", metavar="NAME", help="enroll (or re-enroll) NAME from FILE...")
    what.add_argument("--list", action="store_true", help="list the enrolled speakers")
    what.add_argument("--remove", metavar="NAME", help="remove an enrolled speaker")
    enroll.add_argument("files", nargs="*", metavar="FILE", help="recordings of the speaker (files or folders)")
    _common(enroll)
    enroll.add_argument("--append", action="store_true", help="add the recordings to the speaker's existing ones")
    enroll.add_argument("--min-files", type=int, default=3, help="usable distinct recordings required (default 3)")
    enroll.add_argument("--min-duration", type=float, default=0.5, help="shorter recordings are unusable (s)")
    enroll.add_argument("--json", action="store_true", help="--list as JSON")
    enroll.set_defaults(run=cmd_enroll)

    from voiceid.serve import demo  # `voiceid demo`: the web page (voiceid/serve/demo.py)

    demo.register(sub, _common)

    from voiceid.analysis import summary  # `voiceid report`: the selection at a glance (voiceid/analysis/summary.py)

    summary.add_report_command(sub)

    from voiceid.tracking import ui  # `voiceid ui`: mlflow ui opened on the training runs (voiceid/tracking/ui.py)

    ui.add_ui_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "enroll" and args.files and (args.list or args.remove is not None):
        parser.error("--list and --remove take no files")
    try:
        return int(args.run(args))
    except CliError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
