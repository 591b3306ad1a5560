"""Team-mode study mechanics on SQLite (voiceid/study.py): compare-and-set, the shared budget, one final per round.

tests/test_team_postgres.py runs the same code with real worker processes on PostgreSQL.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest

from voiceid import study as studies

NOP = optuna.pruners.NopPruner()


def _open(tmp_path: Path, name: str = "s") -> optuna.Study:
    return studies.open_study(name, f"sqlite:///{tmp_path}/optuna.db", seed=0, startup_trials=2, pruner=NOP)


def test_racing_claims_have_one_winner(tmp_path: Path) -> None:
    _open(tmp_path)
    made: list[int] = []
    results: list[tuple[bool, object]] = []

    def worker(k: int) -> None:
        study = _open(tmp_path)  # each worker its own storage connection

        def make() -> int:
            made.append(k)
            return k

        results.append(studies.claim_attr(study, "voiceid/x", make))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and sum(won for won, _ in results) == 1
    assert {value for _, value in results} == {made[0]}
    # a value that fails `keep` is replaced, once
    assert studies.claim_attr(_open(tmp_path), "voiceid/x", lambda: "new", keep=lambda v: v == "new") == (True, "new")
    assert studies.claim_attr(_open(tmp_path), "voiceid/x", lambda: "newer", keep=lambda v: v == "new") == (False, "new")


@pytest.mark.parametrize("other_ends", ["COMPLETE", "FAIL"])
def test_a_trial_waits_for_the_budget_and_runs_only_if_it_is_free(tmp_path: Path, other_ends: str) -> None:
    study = _open(tmp_path)
    studies.optimize(study, lambda t: t.suggest_float("x", 0, 1), n_trials=1, timeout_s=None, defaults={"x": 0.5}, callbacks=[])
    other = study.ask()  # another worker's trial, running
    other.suggest_float("x", 0, 1)
    ran: list[int] = []

    def finish_other() -> None:
        state = optuna.trial.TrialState[other_ends]
        study.tell(other, 0.1 if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    threading.Timer(1.0, finish_other).start()

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    studies.optimize(study, objective, n_trials=2, timeout_s=60, defaults={}, callbacks=[])
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2  # exactly the budget, whoever finished it
    if other_ends == "COMPLETE":  # the budget was filled while trial 2 waited: it ran nothing
        assert ran == [] and "surplus" in study.trials[2].user_attrs
        assert studies.trial_counts(study) == {"n_trials_complete": 2, "n_trials_pruned": 0, "n_trials_fail": 0}
    else:  # the other trial failed: trial 2 took its place
        assert ran == [2]


def test_one_final_per_round_and_reruns_open_a_new_round(tmp_path: Path) -> None:
    study = _open(tmp_path)
    first, second = studies.join(study), studies.join(_open(tmp_path))
    assert (first.round, second.round) == (0, 0) and first.slot == 0
    refits: list[str] = []

    def refit() -> str:
        refits.append("r")
        return f"run-{len(refits)}"

    assert studies.finalise_once(study, first, refit) == (True, "run-1")
    assert studies.finalise_once(_open(tmp_path), second, refit) == (False, "run-1")  # adopts, no second refit
    rerun = studies.join(_open(tmp_path))
    assert rerun.round == 1
    assert studies.finalise_once(_open(tmp_path), rerun, refit) == (True, "run-2")


def test_a_worker_arriving_while_the_final_refit_runs_joins_that_round_and_adopts_its_run(tmp_path: Path) -> None:
    """Two workers over several studies: the one that refits study A reaches study B first; the other must not refit B again."""
    import time

    study = _open(tmp_path)
    first = studies.join(study)
    study.set_user_attr(first.final_key, {"worker": first.worker, "beat": time.time()})  # refitting right now
    late = studies.join(_open(tmp_path))
    assert late.round == first.round
    study.set_user_attr(first.final_key, {"worker": first.worker, "run_id": "run-1"})
    assert studies.finalise_once(_open(tmp_path), late, lambda: "a second refit") == (False, "run-1")
    rerun = studies.join(_open(tmp_path))  # the round is over: a rerun opens the next one
    assert rerun.round == first.round + 1


def test_a_killed_workers_final_refit_is_taken_over_after_the_grace(tmp_path: Path) -> None:
    """A claim nobody re-stamps (its worker died mid-refit) does not hold the others for wait_s."""
    import time

    study = _open(tmp_path)
    dead, alive = studies.join(study), studies.join(_open(tmp_path))
    study.set_user_attr(dead.final_key, {"worker": dead.worker, "beat": time.time() - 1000.0})  # killed long ago
    start = time.monotonic()
    assert studies.finalise_once(_open(tmp_path), alive, lambda: "run-alive", wait_s=60, grace_s=5) == (True, "run-alive")
    assert time.monotonic() - start < 5
    assert _open(tmp_path).user_attrs[alive.final_key] == {"worker": alive.worker, "run_id": "run-alive"}


def test_a_live_refit_keeps_its_claim_by_re_stamping_it(tmp_path: Path) -> None:
    """A refit longer than the grace is not taken over while its worker beats; the waiter adopts its run id."""
    import time

    study = _open(tmp_path)
    slow, waiter = studies.join(study), studies.join(_open(tmp_path))
    refits: list[str] = []

    def long_refit() -> str:
        refits.append(slow.worker)
        time.sleep(2.0)  # four graces long
        return "run-slow"

    got: list[tuple[bool, str]] = []
    t = threading.Thread(target=lambda: got.append(studies.finalise_once(study, slow, long_refit, beat_s=0.1, grace_s=0.5)))
    t.start()
    time.sleep(0.3)  # the slow worker holds the claim
    adopted = studies.finalise_once(_open(tmp_path), waiter, lambda: refits.append("waiter") or "run-waiter", grace_s=0.5)
    t.join()
    assert got == [(True, "run-slow")] and adopted == (False, "run-slow") and refits == [slow.worker]
