"""Mutation check: does the test suite notice when core logic breaks?

Applies each mutation in :data:`MUTATIONS` (a source edit that breaks one rule the suite
should guard) alone, runs the suite (``pytest -q -p no:cacheprovider -m "not slow"`` on
``tests/`` and the ``voiceid/`` doctests; no ``-x``), restores the file in a ``finally``,
and prints per mutation how many tests turned red and which.  "Red" means failed or errored
under the mutation but passed in an unmutated baseline run, so tests that are already
failing do not count as catching anything.  A mutation nothing catches is a gap in the tests.

    python scripts/mutation_check.py                     # every mutation, whole suite (~1 suite run each)
    python scripts/mutation_check.py --only eer far      # mutations whose id contains "eer" or "far"
    python scripts/mutation_check.py --focus             # each mutation against its own test files only (quick)
    python scripts/mutation_check.py --copy              # work in a temporary copy of the checkout
    python scripts/mutation_check.py --list              # the mutations, nothing run
    python scripts/mutation_check.py -- -k "not notebook"  # extra pytest arguments after "--"

Safety: every snippet is checked before anything is touched (exactly one occurrence of the
original, none of the mutant; else exit 2).  A mutated file is restored by swapping the
mutant snippet back, so edits other people made to the file meanwhile survive; SIGTERM and
SIGHUP are turned into exceptions so the ``finally`` runs; at the end every file is checked
to hold no mutant (and, in place, ``git diff --stat`` of the mutated files is compared with
the one before the run).  ``--copy`` leaves the checkout untouched altogether: use it while
others work in the same tree (a mutation in place is visible to their test runs).

Exit status: 0 when every mutation turned at least one test red, 1 when some survived,
2 on a setup error (a snippet not found, the baseline suite not collecting).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    description: str
    focus: tuple[str, ...] = ()  # test files most likely to notice it (--focus)


MUTATIONS: list[Mutation] = [
    Mutation(
        "atomic-in-place",
        "voiceid/atomic.py",
        '    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")\n',
        "    fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), str(path)\n",
        "atomic_write writes the target in place (no temporary, no rename)",
        ("tests/test_featcache.py", "tests/test_enrollment.py", "tests/test_serve_store.py", "tests/test_ecapa_train.py"),
    ),
    Mutation(
        "atomic-no-fsync",
        "voiceid/atomic.py",
        "            if fsync:\n                f.flush()\n",
        "            if False:\n                f.flush()\n",
        "atomic_write never fsyncs, even with fsync=True (the enrollment store's commit point)",
        ("tests/test_enrollment.py", "tests/test_serve_store.py"),
    ),
    Mutation(
        "atomic-leaves-temp",
        "voiceid/atomic.py",
        "    except BaseException:\n        Path(tmp).unlink(missing_ok=True)\n        raise\n",
        "    except BaseException:\n        raise\n",
        "a failed atomic_write leaves its temporary file behind",
        ("tests/test_featcache.py", "tests/test_enrollment.py", "tests/test_serve_store.py", "tests/test_ecapa_train.py"),
    ),
    Mutation(
        "eer-threshold",
        "voiceid/scoring/verification.py",
        "    return float(rate), float(thresholds[i])\n",
        "    return float(rate), float(thresholds[i - 1])\n",
        "eer returns the threshold one step before the P_miss/P_fa crossing",
        ("tests/test_scoring.py", "tests/test_thresholds.py", "tests/test_openset.py", "voiceid/scoring/verification.py"),
    ),
    Mutation(
        "eer-interpolation",
        "voiceid/scoring/verification.py",
        "    alpha = diff[i - 1] / (diff[i - 1] - diff[i])\n",
        "    alpha = diff[i] / (diff[i - 1] - diff[i])\n",
        "eer interpolates from the wrong end of the crossing segment",
        ("tests/test_scoring.py", "tests/test_openset.py", "voiceid/scoring/verification.py"),
    ),
    Mutation(
        "far-off-by-one",
        "voiceid/scoring/verification.py",
        "    ok = accepted <= far * len(unk) + 1e-9  # tolerance",
        "    ok = accepted <= far * len(unk) + 1  # tolerance",
        "far_threshold lets one more non-target in than the FAR allows",
        ("tests/test_scoring.py", "tests/test_openset.py", "tests/test_thresholds.py", "voiceid/scoring/verification.py"),
    ),
    Mutation(
        "split-enrolled-unknown-leak",
        "voiceid/data/splits.py",
        "    pool = enrollable[n_enrolled:] + [s for s in speakers if s not in set(enrollable)]\n",
        "    pool = enrollable[max(n_enrolled - 1, 0) :] + [s for s in speakers if s not in set(enrollable)]\n",
        "the last enrolled speaker is also drawn as an unknown speaker",
        ("tests/test_splits.py", "tests/test_speech_activity.py", "tests/test_prepare.py", "voiceid/data/splits.py"),
    ),
    Mutation(
        "split-unknown-val-test-leak",
        "voiceid/data/splits.py",
        '        parts.append(kept.assign(role="unknown", split="val" if i < n_val_unknown else "test", split_by="speaker"))\n',
        '        parts.append(kept.assign(role="unknown", split=(["val", "test"] * len(kept))[: len(kept)], split_by="speaker"))\n',
        "unknown speakers split by utterance: the same voice fits thresholds (val) and is reported (test)",
        ("tests/test_splits.py", "tests/test_speech_activity.py", "tests/test_prepare.py", "voiceid/data/splits.py"),
    ),
    Mutation(
        "split-session-leak",
        "voiceid/data/splits.py",
        "    test = _pick(held, min(n_test, len(held)), plan.order, rng)\n",
        "    test = _pick(side, min(n_test, len(side)), plan.order, rng)\n",
        "enrolled test clips come from the training sessions (train/test session leak, even shared clips)",
        ("tests/test_splits.py", "tests/test_speech_activity.py", "tests/test_prepare.py"),
    ),
    Mutation(
        "label-metrics-weighted",
        "voiceid/scoring/classification.py",
        '        "f1_weighted": float((f1 * support).sum() / support.sum()),\n',
        '        "f1_weighted": float((f1 * predicted).sum() / predicted.sum()),\n',
        "label_metrics weights F1 by predicted instead of true label counts",
        ("tests/test_openset.py", "tests/test_scoring.py", "tests/test_models.py", "voiceid/scoring/classification.py"),
    ),
    Mutation(
        "label-metrics-macro",
        "voiceid/scoring/classification.py",
        '        "f1_macro": float(f1.mean()),\n',
        '        "f1_macro": float(f1[support > 0].mean()),\n',
        "label_metrics macro-F1 ignores labels that are only predicted (sklearn counts them)",
        ("tests/test_openset.py", "tests/test_scoring.py", "tests/test_models.py", "voiceid/scoring/classification.py"),
    ),
    Mutation(
        "bootstrap-pooled",
        "voiceid/scoring/openset.py",
        "        idx = np.concatenate([rng.choice(ki, len(ki)), rng.choice(ui, len(ui))])\n",
        "        idx = rng.choice(len(first), len(first))\n",
        "the bootstrap resamples known and unknown probes together (replicates change the class mix)",
        ("tests/test_openset.py", "tests/test_selection.py", "tests/test_select_honesty.py"),
    ),
    Mutation(
        "probes-take-misaligned",
        "voiceid/scoring/openset.py",
        "        return Probes(self.true[i], self.pred[i], self.score[i], self.known[i], None if self.ids is None else self.ids[i])\n",
        "        return Probes(self.true[i], self.pred[i], self.score[np.sort(i)], self.known[i], None if self.ids is None else self.ids[i])\n",
        "Probes.take pairs scores with the wrong probes when the indices are not sorted (bootstrap, align)",
        ("tests/test_openset.py", "tests/test_selection.py", "voiceid/scoring/openset.py"),
    ),
]


class Interrupted(BaseException):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def check_snippets(root: Path, mutations: list[Mutation]) -> list[str]:
    """Problems that forbid running: a file or original snippet missing or ambiguous, a mutant already present."""
    problems = []
    for m in mutations:
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        text = path.read_text(encoding="utf-8")
        n_old, n_new = text.count(m.old), text.count(m.new)
        if n_old != 1:
            problems.append(f"{m.id}: the original snippet occurs {n_old} times in {m.file} (need exactly 1): {m.old.strip()!r}")
        if n_new:
            problems.append(f"{m.id}: the MUTANT snippet is already in {m.file} (a mutation left behind?): {m.new.strip()!r}")
    return problems


def apply(root: Path, m: Mutation) -> str:
    """Mutate the file; returns its original text."""
    path = root / m.file
    original = path.read_text(encoding="utf-8")
    if original.count(m.old) != 1:
        raise RuntimeError(f"{m.id}: the original snippet is no longer exactly once in {m.file}")
    path.write_text(original.replace(m.old, m.new, 1), encoding="utf-8")
    return original


def restore(root: Path, m: Mutation, original: str) -> None:
    """Undo one mutation, keeping any other edit made to the file meanwhile."""
    path = root / m.file
    current = path.read_text(encoding="utf-8")
    if current == original.replace(m.old, m.new, 1):
        path.write_text(original, encoding="utf-8")
    elif current.count(m.new) == 1:
        path.write_text(current.replace(m.new, m.old, 1), encoding="utf-8")  # someone else edited the file too
    elif m.new in current:
        raise RuntimeError(
            f"{m.id}: cannot restore {m.file}: the mutant snippet occurs {current.count(m.new)} times; fix by hand"
        )
    else:
        print(
            f"warning: {m.id}: the mutant snippet is gone from {m.file} (edited meanwhile); nothing to restore", file=sys.stderr
        )
    if m.new in path.read_text(encoding="utf-8"):
        raise RuntimeError(f"{m.id}: {m.file} still holds the mutant after restoring; fix by hand")


@dataclass
class Outcome:
    passed: set[str]
    red: set[str]  # failed or errored
    seconds: float
    returncode: int
    tail: str


def run_suite(root: Path, args: list[str], timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", f"--junitxml={xml}", *args]
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        if root != REPO:  # child processes (pipeline run, notebook kernel) import voiceid from the copy too
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f"\nmutation_check: pytest killed after {timeout:.0f} s"
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        seconds = time.perf_counter() - start
        passed, red = set(), set()
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                if case.find("failure") is not None or case.find("error") is not None:
                    red.add(name)
                elif case.find("skipped") is None:
                    passed.add(name)
        return Outcome(passed, red, seconds, proc.returncode, out[-3000:])


def copy_checkout(dest: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files, copied to ``dest``."""
    files = (
        subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # An empty git repository: dvc (the plots tests) refuses to work outside one.  Nothing is committed.
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def git_diff_stat(files: list[str]) -> str:
    done = subprocess.run(["git", "diff", "--stat", "--", *files], cwd=REPO, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else f"(git diff failed: {done.stderr.strip()})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run the mutations whose id contains one of these")
    parser.add_argument("--focus", action="store_true", help="run each mutation against its own test files only")
    parser.add_argument("--paths", nargs="+", default=["tests", "voiceid"], help="what pytest runs (default: tests voiceid)")
    parser.add_argument("--copy", action="store_true", help="mutate a temporary copy of the checkout, not the checkout")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per suite run (default 1800)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("pytest_args", nargs="*", help='extra pytest arguments, after "--"')
    args = parser.parse_args(argv)

    mutations = [m for m in MUTATIONS if not args.only or any(key in m.id for key in args.only)]
    if args.list:
        for m in mutations:
            print(f"{m.id:30} {m.file:36} {m.description}")
        return 0
    if not mutations:
        print(f"no mutation matches {args.only}", file=sys.stderr)
        return 2
    problems = check_snippets(REPO, mutations)
    if problems:
        print("mutation_check: refusing to run; the source no longer matches these mutations:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    files = sorted({m.file for m in mutations})
    diff_before = git_diff_stat(files)
    scratch = tempfile.TemporaryDirectory(prefix="mutation-copy-") if args.copy else None
    root = copy_checkout(Path(scratch.name)) if scratch else REPO
    print(
        f"mutation_check: {len(mutations)} mutation(s) in {root}{' (a copy)' if scratch else ''}; "
        f"pytest {' '.join(args.paths)} {' '.join(args.pytest_args)}".rstrip(),
        flush=True,
    )
    results: list[tuple[Mutation, Outcome, set[str]]] = []
    try:
        baselines: dict[tuple[str, ...], Outcome] = {}

        def suite_args(m: Mutation) -> tuple[str, ...]:
            paths = [p for p in m.focus if (root / p).exists()] if args.focus else []
            return (*(paths or args.paths), *args.pytest_args)

        for m in mutations:
            key = suite_args(m)
            if key not in baselines:
                base = baselines[key] = run_suite(root, list(key), args.timeout)
                print(
                    f"baseline ({' '.join(key)}): {len(base.passed)} passed, {len(base.red)} red, {base.seconds:.0f} s"
                    + "".join(f"\n  already red: {t}" for t in sorted(base.red)),
                    flush=True,
                )
                if not base.passed:
                    print(f"mutation_check: the baseline suite ran no test:\n{base.tail}", file=sys.stderr)
                    return 2
            original = apply(root, m)
            try:
                outcome = run_suite(root, list(key), args.timeout)
            finally:
                restore(root, m, original)
            turned = outcome.red & baselines[key].passed
            if not outcome.passed and not outcome.red:  # nothing ran: an import or collection error is a catch too
                turned = {f"<collection: pytest exit {outcome.returncode}>"}
            results.append((m, outcome, turned))
            print(f"{m.id}: {len(turned)} red in {outcome.seconds:.0f} s", flush=True)
    finally:
        leftovers = [m.id for m in mutations if m.new in (root / m.file).read_text(encoding="utf-8")]
        if scratch:
            scratch.cleanup()
        if leftovers:
            print(f"mutation_check: MUTATIONS LEFT IN PLACE: {leftovers}", file=sys.stderr)
        diff_after = git_diff_stat(files)
        if not scratch and diff_after != diff_before:
            print(
                f"mutation_check: note: git diff --stat of {files} changed during the run (someone else edited them?):\n"
                f"before:\n{diff_before}after:\n{diff_after}",
                file=sys.stderr,
            )

    print("\n" + "=" * 100)
    print(f"{'mutation':30} {'file':36} {'red':>4}  tests that turned red")
    print("-" * 100)
    survived = []
    for m, _outcome, turned in results:
        names = sorted(turned)
        shown = ", ".join(n.split("::")[-1] for n in names[:6]) + (f", ... (+{len(names) - 6})" if len(names) > 6 else "")
        print(f"{m.id:30} {m.file:36} {len(turned):4}  {shown or 'SURVIVED: no test noticed'}")
        if not turned:
            survived.append(m.id)
    print("-" * 100)
    print(
        f"{len(results) - len(survived)}/{len(results)} mutations caught"
        + (f"; survived: {', '.join(survived)}" if survived else "")
    )
    print("\nper mutation, every red test:")
    for m, _, turned in results:
        print(f"  {m.id} ({m.description}):")
        for name in sorted(turned) or ["(none)"]:
            print(f"    {name}")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
