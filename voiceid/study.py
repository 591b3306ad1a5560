"""Optuna study mechanics shared by the grid and ECAPA: names, resume, budgets, the trial -> MLflow logger,
and team mode: several workers (processes or machines) sharing one study in an RDB storage.

Team mode (README "Running on more than one machine"): every worker runs the same stage
command against the same ``grid.storage`` (PostgreSQL) and MLflow server. The workers agree
through the study itself, with :func:`claim_attr`, a compare-and-set on the study's user
attributes done under the study row's lock (``SELECT ... FOR UPDATE``, the lock Optuna itself
takes to number trials; SQLite: its write lock). The keys, all under ``voiceid/``:

* ``voiceid/mlflow_study_run``: the MLflow parent run of the study, created by the first
  worker and reused by every other one (and by reruns);
* ``voiceid/trial/<n>``: the worker that logs trial ``n`` to MLflow, so each trial is
  logged once even when a worker logs what a crashed one left unlogged;
* ``voiceid/round/<g>/worker/<k>``: the workers of round ``g`` (a round is every session
  that starts before its final run is logged, so a worker that arrives while another one
  refits adopts that run; a rerun after it is logged, or after it failed, starts round ``g + 1``);
  slot ``k`` salts the worker's sampler seed so workers do not propose the same points;
* ``voiceid/round/<g>/final``: the one worker that refits and logs the round's final run
  (``{"worker", "beat"}`` while it refits, re-stamped every ``FINAL_BEAT_S``; then
  ``{"worker", "run_id"}``); the others wait for the run id, and one of them takes the refit
  over when the claim has not been re-stamped for ``FINAL_GRACE_S`` (its worker was killed).

Budget: ``n_trials`` counts COMPLETE + PRUNED trials across all workers. A worker stops
asking for trials once the running and counted ones fill the budget, and a trial that
finds the budget filled by lower-numbered trials waits for them; if they all count, it
ends as FAIL without running (user attribute ``surplus``, not logged to MLflow).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from voiceid import tracking

log = logging.getLogger(__name__)

ATTR = "voiceid"  # prefix of the coordination keys in a study's user attributes
# The refitting worker re-stamps its claim this often; a claim older than the grace belongs to a
# dead worker. Stamps are wall-clock times of the workers' hosts, so hosts need synchronised
# clocks (NTP) to well within the grace, as Optuna's own heartbeat (grace_period=90) does.
FINAL_BEAT_S = 30.0
FINAL_GRACE_S = 120.0


class StudyError(RuntimeError):
    """A study cannot give a result (no completed trial, a best trial outside the search space)."""


def study_name(dataset: str, feature_set: str, family: str, objective: str, fingerprint: str, space: Any = None) -> str:
    """``<dataset>/<feature_set>/<family>/<objective>/<key>``; the key hashes the inputs and the
    search-space description ``space``, so a study only resumes on the same data and space."""
    key = hashlib.sha256(f"{fingerprint}|{space!r}".encode()).hexdigest()[:12]
    return f"{dataset}/{feature_set}/{family}/{objective}/{key}"


def open_study(name: str, storage: str, *, seed: int, startup_trials: int, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create or resume study ``name``; any SQLAlchemy URL works (sqlite, PostgreSQL).

    RDB storages get a heartbeat so a trial left RUNNING by a killed worker is marked FAIL
    when the study resumes. The sampler is re-seeded with the number of existing trials so
    a resumed study does not replay the random start-up configurations.
    """
    store: Any = storage
    rdb: optuna.storages.RDBStorage | None = None
    if "://" in storage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat is "experimental"
            store = rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=90)
    study = optuna.create_study(
        storage=store,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials),
    )
    if rdb is not None:
        _RDB[study] = rdb
    seed_sampler(study, seed, startup_trials)
    return study


def seed_sampler(study: optuna.Study, seed: int, startup_trials: int, salt: int = 0) -> None:
    """A TPE sampler seeded with ``seed`` + the number of trials so far (+ a worker's ``salt``).

    TPE's ``constant_liar`` (on by default) lets it see other workers' running trials.
    """
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials) + salt, n_startup_trials=startup_trials)


# --- team mode: compare-and-set on the study's user attributes -------------------------------

_RDB: weakref.WeakKeyDictionary[optuna.Study, optuna.storages.RDBStorage] = weakref.WeakKeyDictionary()
_MISSING = object()


def worker_id() -> str:
    """``<host>:<pid>``: names this worker in the study's attributes and on its MLflow trial runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_attr(
    study: optuna.Study, key: str, make: Callable[[], Any], keep: Callable[[Any], bool] | None = None
) -> tuple[bool, Any]:
    """Compare-and-set of user attribute ``key``: ``(True, make())`` stored if the key is unset
    (or its value fails ``keep``), else ``(False, current value)``.

    In an RDB storage it runs in one transaction holding the study row's lock, so among
    workers racing for the same key exactly one calls ``make`` (which may create an MLflow
    run) and all see its value. ``make``'s value must be JSON-serialisable.
    """
    rdb = _RDB.get(study)
    if rdb is None:  # in-memory study: one process
        current = study.user_attrs.get(key, _MISSING)
        if current is not _MISSING and (keep is None or keep(current)):
            return False, current
        value = make()
        study.set_user_attr(key, value)
        return True, value

    import sqlalchemy as sa

    # Core expressions, not SQL text: "key" is a reserved word in MySQL, and SQLAlchemy quotes it per dialect
    studies_t = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
    attrs_t = sa.table("study_user_attributes", sa.column("study_id"), sa.column("key"), sa.column("value_json"))
    study_id = rdb.get_study_id_from_name(study.study_name)
    this = (attrs_t.c.study_id == study_id) & (attrs_t.c.key == key)
    for attempt in range(60):
        try:
            with rdb.engine.begin() as conn:
                if conn.dialect.name == "sqlite":  # no row locks: a write takes SQLite's database lock
                    conn.execute(
                        sa.update(studies_t).where(studies_t.c.study_id == study_id).values(study_name=studies_t.c.study_name)
                    )
                else:  # the lock Optuna takes to number trials
                    conn.execute(sa.select(studies_t.c.study_id).where(studies_t.c.study_id == study_id).with_for_update())
                row = conn.execute(sa.select(attrs_t.c.value_json).where(this)).first()
                if row is not None:
                    current = json.loads(row[0])
                    if keep is None or keep(current):
                        return False, current
                value = make()
                if row is None:
                    conn.execute(sa.insert(attrs_t).values(study_id=study_id, key=key, value_json=json.dumps(value)))
                else:
                    conn.execute(sa.update(attrs_t).where(this).values(value_json=json.dumps(value)))
                return True, value
        except sa.exc.OperationalError as err:  # SQLite "database is locked" past its busy timeout
            if rdb.engine.dialect.name != "sqlite" or attempt == 59:
                raise
            log.debug("claim %s: %s; retrying", key, err)
            time.sleep(0.2)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Session:
    """This worker's place in a study: its round and slot (see the module doc)."""

    worker: str
    round: int
    slot: int

    @property
    def final_key(self) -> str:
        return f"{ATTR}/round/{self.round}/final"


def join(study: optuna.Study) -> Session:
    """Register this worker in the study's current round; the slot is 0 for the first worker."""
    attrs = study.user_attrs
    rnd = 0
    # A round stays open until its final run is logged: a worker that finished its share of a
    # study and refits it may start the next study before its partner gets there, and that
    # partner must join the refit in progress, not start a second one.
    while _settled(attrs.get(f"{ATTR}/round/{rnd}/final")):
        rnd += 1
    me = worker_id()
    slot = 0
    while True:
        won, holder = claim_attr(study, f"{ATTR}/round/{rnd}/worker/{slot}", lambda: me)
        if won or holder == me:
            return Session(me, rnd, slot)
        slot += 1


def _settled(claim: Any) -> bool:
    """A final-refit claim whose run is logged (or whose refit failed): its round is over."""
    return isinstance(claim, dict) and ("run_id" in claim or "error" in claim)


def study_run_id(study: optuna.Study, create: Callable[[], str], exists: Callable[[str], bool]) -> str:
    """The study's MLflow parent run: the one in its attributes if ``exists``, else ``create()``'s, agreed by every worker."""
    return str(claim_attr(study, f"{ATTR}/mlflow_study_run", create, lambda run_id: bool(run_id) and exists(str(run_id)))[1])


def finalise_once(
    study: optuna.Study,
    session: Session,
    refit: Callable[[], str],
    *,
    wait_s: float = 3600.0,
    beat_s: float = FINAL_BEAT_S,
    grace_s: float = FINAL_GRACE_S,
) -> tuple[bool, str]:
    """``(True, refit())`` for the one worker of the round that claims the final refit, else
    ``(False, its run id)`` once that worker has logged it (StudyError if it failed, or after ``wait_s``).

    The claimant re-stamps its claim every ``beat_s`` while it refits; a claim not re-stamped
    for ``grace_s`` is abandoned (its worker was killed) and the first waiter to see that takes
    the refit over, so a crashed worker costs the others ``grace_s``, not ``wait_s``.
    """
    key = session.final_key

    def mine() -> dict[str, Any]:
        return {"worker": session.worker, "beat": time.time()}

    def live(claim: Any) -> bool:
        return not _abandoned(claim, grace_s)

    won, claim = claim_attr(study, key, mine, keep=live)
    deadline = time.monotonic() + wait_s
    while not won:
        if "run_id" in claim:
            return False, str(claim["run_id"])
        if "error" in claim:
            raise StudyError(f"study {study.study_name}: worker {claim['worker']} failed its final refit: {claim['error']}")
        if time.monotonic() > deadline:
            raise StudyError(
                f"study {study.study_name}: worker {claim.get('worker')} claimed the final refit {wait_s:.0f} s ago "
                f"and has not logged it; rerun the stage (a new round refits)"
            )
        time.sleep(min(0.25, grace_s / 4))  # a short poll: the waiter moves on to the next study soon after
        claim = study.user_attrs.get(key, claim)
        if _abandoned(claim, grace_s):
            log.warning(
                "study %s: worker %s stopped refitting (no sign of life for %.0f s); taking over",
                study.study_name,
                claim.get("worker"),
                time.time() - float(claim["beat"]),
            )
            won, claim = claim_attr(study, key, mine, keep=live)
    try:
        with _heartbeat(study, key, session.worker, beat_s):
            run_id = refit()
    except Exception as exc:
        study.set_user_attr(key, {"worker": session.worker, "error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    study.set_user_attr(key, {"worker": session.worker, "run_id": run_id})
    return True, run_id


def _abandoned(claim: Any, grace_s: float) -> bool:
    """A refit claim whose worker has not re-stamped it for ``grace_s`` (claims without stamps never are)."""
    beat = claim.get("beat") if isinstance(claim, dict) else None  # a logged run id or error has none
    return isinstance(beat, (int, float)) and time.time() - float(beat) > grace_s


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, key: str, worker: str, every_s: float) -> Iterator[None]:
    """While the block runs, re-stamp ``{"worker", "beat"}`` at ``key`` every ``every_s`` from a daemon thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                study.set_user_attr(key, {"worker": worker, "beat": time.time()})
            except Exception as exc:  # a storage hiccup must not kill the refit; the next beat retries
                log.warning("study %s: could not re-stamp the final refit claim: %s", study.study_name, exc)

    thread = threading.Thread(target=beat, name="voiceid-final-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()  # no stamp may land after the run id (or error) written next


def wait_idle(study: optuna.Study, poll_s: float = 0.5, max_wait_s: float = 3600.0) -> None:
    """Wait until no trial of the study is RUNNING; a killed worker's trial turns FAIL by heartbeat."""
    deadline = time.monotonic() + max_wait_s
    while _running(study):
        if time.monotonic() > deadline:
            log.warning("study %s: trials still running after %.0f s; going on", study.study_name, max_wait_s)
            return
        _fail_stale(study)
        time.sleep(poll_s)


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def _guarded(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """Keep a failing trial's error on the trial so the MLflow child run shows it."""

    def run(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise

    return run


def trial_logger(
    study_run: tracking.StudyRun, tags: Mapping[str, str], *, once: bool = False
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """A callback logging each finished trial as a child run of ``study_run``.

    ``once``: first claim the trial in the study's attributes (team mode), so a trial is
    logged by exactly one worker; trials already under ``study_run`` and surplus trials are skipped.
    """
    me = worker_id()

    def log(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if "surplus" in trial.user_attrs or trial.number in study_run.logged_trials:
            return
        if once and not claim_attr(study, f"{ATTR}/trial/{trial.number}", lambda: me)[0]:
            return
        extra = {"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {}
        if once:
            extra["worker"] = me
        tracking.log_trial(
            study_run,
            number=trial.number,
            params=trial.user_attrs.get("params", trial.params),
            value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
            state=trial.state.name,
            tags={**tags, **extra},
            metrics={f"val_{k}": v for k, v in trial.user_attrs.get("metrics", {}).items()},
            intermediate=trial.intermediate_values,
            duration_s=trial.duration.total_seconds() if trial.duration else None,
        )

    return log


def log_unlogged(study: optuna.Study, logger: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]) -> None:
    """Log finished trials nobody has claimed: finished before a crash, by a worker that died before logging."""
    claimed = study.user_attrs
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and f"{ATTR}/trial/{trial.number}" not in claimed:
            logger(study, trial)


_BUDGET_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    timeout_s: float | None,
    defaults: Mapping[str, Any],
    callbacks: list[Callable[..., None]],
) -> None:
    """Run trials until ``n_trials`` have completed or been pruned, or ``timeout_s`` passes.

    Failures do not count toward the budget, but a session never runs more than the
    remaining budget of trials, so a family that always fails still stops. The budget is
    the study's, shared by every worker (see the module doc): this session stops asking for
    trials once running and counted ones fill it, waits for the other workers' running
    trials, and tops up if some of them failed.
    """
    if not study.trials and claim_attr(study, f"{ATTR}/defaults", worker_id)[0]:
        study.enqueue_trial(dict(defaults), skip_if_exists=True)
    attempts = n_trials - _counted(study)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ran = [0]

    def count(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran[0] += 1

    while attempts - ran[0] > 0:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        study.optimize(
            _gated(_guarded(objective), study, n_trials),
            n_trials=attempts - ran[0],
            timeout=left,
            catch=(Exception,),
            callbacks=[
                count,
                *callbacks,
                optuna.study.MaxTrialsCallback(n_trials, states=_BUDGET_STATES),
                _stop_when_assigned(n_trials),
            ],
        )
        wait_idle(study)  # other workers' last trials
        if _counted(study) >= n_trials:
            break


def _counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_BUDGET_STATES))


class _Surplus(RuntimeError):
    """The budget was filled by other workers' trials while this one waited."""


def _gated(objective: Callable[[optuna.Trial], float], study: optuna.Study, n_trials: int) -> Callable[[optuna.Trial], float]:
    """Run ``objective`` only while counted trials plus lower-numbered running ones leave budget.

    Trial numbers are handed out in order under the study row's lock, so of trials that
    pass this gate at most ``n_trials`` count; a trial that finds the budget taken waits for
    the running ones (one may fail and free its place) and ends as a surplus FAIL otherwise.
    """

    def run(trial: optuna.Trial) -> float:
        while True:
            trials = study.get_trials(deepcopy=False, states=(*_BUDGET_STATES, optuna.trial.TrialState.RUNNING))
            counted = sum(t.state in _BUDGET_STATES for t in trials)
            ahead = counted + sum(t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number for t in trials)
            if ahead < n_trials:
                return objective(trial)
            if counted >= n_trials:
                trial.set_user_attr("surplus", "the study's budget was filled by other workers; nothing run")
                raise _Surplus(f"trial {trial.number}: the budget of {n_trials} trials was filled by other workers")
            _fail_stale(study)
            time.sleep(0.5)

    return run


def _stop_when_assigned(n_trials: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Stop this worker once counted + running trials (any worker's) fill the budget."""

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        states = (*_BUDGET_STATES, optuna.trial.TrialState.RUNNING)
        if len(study.get_trials(deepcopy=False, states=states)) >= n_trials:
            study.stop()

    return stop


def best_params(study: optuna.Study, space: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Full hyper-parameters of the best trial (derived ones included), or StudyError."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
        raise StudyError(f"study {study.study_name}: no trial completed ({failed} failed); see the MLflow trial runs")
    try:
        return space(optuna.trial.FixedTrial(study.best_trial.params))
    except ValueError as exc:
        raise StudyError(
            f"study {study.study_name}: its best trial does not fit the current search space ({exc}); "
            "delete the study or point grid.storage elsewhere"
        ) from exc


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state (surplus trials of team mode, which ran nothing, are left out)."""
    states = optuna.trial.TrialState
    return {
        f"n_trials_{s.name.lower()}": sum("surplus" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(s,)))
        for s in (states.COMPLETE, states.PRUNED, states.FAIL)
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
