"""The MLflow UI over a small real run's store, driven in headless Debian Chromium.

Starts ``mlflow server`` on loopback (once per module) over the store of a small pipeline run
(the session's ``pipeline_run`` fixture: the real stages on a subset of data/default,
tests/pipeline_run.py). Checks that each experiment's runs page and the all-experiments view
list every family's runs (with the ``family``/``feature_set`` tag columns switched on); that an
experiment opened from the link ``voiceid report`` prints lands on its training-runs table with
the final runs and a Dataset column naming the prepared manifest, and that once "Model training"
was chosen plain experiment URLs open on the runs; and that the registry shows the champion
version with its ``champion`` alias and its description. Screenshots go under each test's temp
folder (the paths are printed; ``pytest -s`` shows them). Skips only where Chromium or its driver
is not installed (``make browser`` installs both); never downloads a browser or driver.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from local_processes import CHROMEDRIVER, CHROMIUM, stop_group, wait_healthy
from local_processes import chromium as local_chromium
from pipeline_run import PipelineRun

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian chromium and chromium-driver are not installed (`make browser` or "
    "`apt-get install chromium chromium-driver`); the MLflow UI check needs a real browser",
)

WINDOW = ("--window-size=1700,1000",)
WAIT_S = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(store_uri: str, workdir: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port (one worker, no job runner); always stopped."""
    port = _free_port()
    log_path = workdir / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log_path.open("wb") as log:
        # its own session, so the uvicorn worker it forks is stopped with it
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(proc, f"{url}/health", log_path, 90, "mlflow server")
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield url
    finally:
        stop_group(proc)


@contextmanager
def chromium(profile: Path) -> Iterator[object]:
    with local_chromium(profile, WINDOW) as driver:
        yield driver


def _experiment_id(url: str, name: str) -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as reply:
        return json.load(reply)["experiment"]["experiment_id"]


def _column_texts(driver, col_id: str) -> set[str]:  # noqa: ANN001 - selenium WebDriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    texts = set()
    for cell in driver.find_elements(By.CSS_SELECTOR, f"[role='gridcell'][col-id='{col_id}']"):
        try:
            texts.add(cell.text.strip())
        except StaleElementReferenceException:  # the grid re-renders while loading
            continue
    return texts


def _wait_for_names(driver, col_id: str, wanted: set[str], what: str) -> set[str]:  # noqa: ANN001
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def missing() -> set[str]:
        seen = " ".join(_column_texts(driver, col_id))
        return {w for w in wanted if w not in seen}

    try:
        WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(lambda _: not missing())
    except TimeoutException:
        pytest.fail(f"{what}: {sorted(missing())} not listed after {WAIT_S} s; page shows {sorted(_column_texts(driver, col_id))}")
    return _column_texts(driver, col_id)


def _show_columns(driver, names: list[str]) -> None:  # noqa: ANN001
    """Toggle columns in the runs table's "Columns" menu (adds tags/metrics, drops defaults)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    for close in driver.find_elements(By.XPATH, "//*[text()='MLflow Assistant']/ancestor::*[.//button[@aria-label='Close']][1]"
                                                "//button[@aria-label='Close']"):
        close.click()  # the assistant side panel would hide columns in the screenshot
    driver.find_element(By.XPATH, "//button[contains(., 'Columns')]").click()
    wait = WebDriverWait(driver, WAIT_S)
    search = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']"))
    for name in names:
        search.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE)
        search.send_keys(name)
        wait.until(lambda d, n=name: d.find_elements(By.XPATH, f"//*[normalize-space(text())='{n}']"))[-1].click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)


@pytest.fixture(scope="module")
def server(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One ``mlflow server`` over the pipeline run's store for this module's tests (each opens its own browser)."""
    with mlflow_server(pipeline_run.uri, tmp_path_factory.mktemp("mlflow-ui")) as url:
        yield url


RUN_NAME = "attributes.`Run Name`"
DATASET = "attributes.`Dataset`"


def test_mlflow_ui_lists_runs_of_each_family(pipeline_run: PipelineRun, server: str, tmp_path: Path) -> None:
    run = pipeline_run
    grid_experiments = [run.experiment(fs) for fs in run.feature_sets]
    ecapa_experiment = run.experiment("logmel")
    run_name = RUN_NAME

    with chromium(tmp_path / "chrome-profile") as driver:
        url = server
        ids = {name: _experiment_id(url, name) for name in (*grid_experiments, ecapa_experiment)}
        # Each experiment's own page (MLflow 3 opens experiments in the GenAI view unless told).
        pages = [(e, run.grid_families) for e in grid_experiments] + [(ecapa_experiment, ("ecapa",))]
        for experiment, families in pages:
            driver.get(f"{url}/#/experiments/{ids[experiment]}/runs?workflowType=machine_learning")
            names = _wait_for_names(driver, run_name, {f"{f}-final" for f in families}, f"experiment page {experiment}")
            # each family's study run (its trials nested under it) is listed beside its final run
            for family in families:
                assert any(f"/{family}/" in n for n in names), (experiment, family, names)

        # All experiments at once, final runs only, with the family and feature_set tags as columns.
        query = urllib.parse.urlencode({
            "experiments": json.dumps(sorted(ids.values())), "workflowType": "machine_learning",
            "searchFilter": "tags.stage = 'final'",
        })
        driver.get(f"{url}/#/compare-experiments/s?{query}")
        _wait_for_names(driver, run_name, {f"{f}-final" for f in run.families}, "all experiments")
        _show_columns(driver, ["Dataset", "Source", "Models", "Experiment Name", "family", "feature_set", "test_f1_weighted"])
        families = _wait_for_names(driver, "tags.`family`", set(run.families), "family tag column")
        assert families == set(run.families)  # exact cells: one family tag per final run
        assert {*run.feature_sets, "logmel"} <= _column_texts(driver, "tags.`feature_set`")

        shot = tmp_path / "mlflow_ui_final_runs.png"
        assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"\nMLflow UI screenshot: {shot}")


def _shot(driver, path: Path, what: str) -> None:  # noqa: ANN001
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 20_000, path
    print(f"\nMLflow UI screenshot ({what}): {path}")


def test_mlflow_ui_opens_experiments_on_training_runs_with_their_dataset(
    pipeline_run: PipelineRun, server: str, tmp_path: Path
) -> None:
    """The experiment link ``voiceid report`` prints opens on the training-runs table (no toggle clicked): the
    final runs are listed and their Dataset cell names the prepared manifest with its digest and context.

    MLflow 3.17 derives an experiment's view from the browser's GenAI / Model training choice (default
    GenAI), not from the ``mlflow.experimentKind`` tag voiceid sets; once "Model training" is chosen
    (here: on the experiments list, never on an experiment page) plain experiment URLs open on the runs.
    """
    from voiceid import tracking
    from voiceid.tracking.ui import ML_VIEW
    from voiceid.tracking.datasets import DIGEST_CHARS, MANIFEST_DATASET

    run = pipeline_run
    digest = tracking.data_hash(run.root / "data" / "prepared" / "manifest.parquet")[:DIGEST_CHARS]
    grid_experiment, other = run.experiment(run.feature_sets[0]), run.experiment("logmel")
    ids = {name: _experiment_id(server, name) for name in (grid_experiment, other)}

    with chromium(tmp_path / "chrome-profile") as driver:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(f"{server}/#/experiments/{ids[grid_experiment]}/runs?{ML_VIEW}")
        _wait_for_names(driver, RUN_NAME, {f"{f}-final" for f in run.grid_families}, f"training runs of {grid_experiment}")
        datasets = _wait_for_names(driver, DATASET, {f"{MANIFEST_DATASET} ({digest})"}, "Dataset column")
        # every run with a dataset (the final runs; study runs show "-") names the manifest, context Training
        assert datasets - {"-", ""} == {f"{MANIFEST_DATASET} ({digest})\nTraining"}, datasets
        _shot(driver, tmp_path / "mlflow_ui_training_runs.png", f"{grid_experiment} training runs with their dataset")

        driver.get(f"{server}/#/experiments/{ids[other]}")  # a browser that never chose: MLflow's default
        WebDriverWait(driver, WAIT_S).until(lambda d: "workflowType=" in d.current_url)
        print(f"\nplain experiment URL in a fresh browser lands on {driver.current_url.split('#', 1)[1]}")
        driver.get(f"{server}/#/experiments")
        WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='Model training']"))
        driver.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
        driver.get(f"{server}/#/experiments/{ids[other]}")
        _wait_for_names(driver, RUN_NAME, {"ecapa-final"}, f"plain URL of {other} after choosing Model training once")
        assert "/runs" in driver.current_url, driver.current_url
        _shot(driver, tmp_path / "mlflow_ui_plain_url_after_choice.png", f"{other} from its plain URL")


def test_mlflow_ui_registered_model_shows_champion(pipeline_run: PipelineRun, server: str, tmp_path: Path) -> None:
    """The registry page lists the champion version with its ``champion`` alias; the version page shows its description."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    champion = pipeline_run.selection["champion"]
    name, version = champion["registered_model"], champion["version"]
    alias = "[data-component-id*='aliastag'][title='champion']"
    with chromium(tmp_path / "chrome-profile") as driver:
        driver.get(f"{server}/#/models/{name}")
        try:
            WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, alias))
        except TimeoutException:
            pytest.fail(f"registered model {name}: no 'champion' alias shown after {WAIT_S} s")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert f"Version {version}" in body
        assert "open-set speaker identification" in body, "the registered model's own description is not shown"
        _shot(driver, tmp_path / "mlflow_ui_registered_model.png", f"registered model {name} with alias champion")

        driver.get(f"{server}/#/models/{name}/versions/{version}")
        wanted = f"voiceid champion: {champion['family']} on feature set"
        try:
            WebDriverWait(driver, WAIT_S).until(lambda d: wanted in d.find_element(By.TAG_NAME, "body").text)
        except TimeoutException:
            pytest.fail(f"version page of {name} v{version}: description {wanted!r} not shown after {WAIT_S} s")
        assert driver.find_elements(By.CSS_SELECTOR, alias)
        _shot(driver, tmp_path / "mlflow_ui_champion_version.png", f"{name} v{version}: description, tags, alias")


def test_voiceid_ui_serves_mlflow_and_links_to_the_training_runs(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    """``voiceid ui`` starts MLflow's UI over the store; the link it prints opens on the training runs (fresh browser)."""
    import time

    run = pipeline_run
    out_path, log_path = tmp_path / "voiceid-ui.out", tmp_path / "voiceid-ui.log"
    cmd = [sys.executable, "-c", "from voiceid.serve.cli import main; raise SystemExit(main())", "ui", "--no-browser",
           "--port", str(_free_port()), "--tracking-uri", run.uri]
    with out_path.open("wb") as out, log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=run.root, stdout=out, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while not any(line.startswith("MLflow UI over") for line in lines):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"voiceid ui printed no link: {lines} {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
            lines = out_path.read_text().splitlines()
        url = next(line for line in lines if line.startswith("MLflow UI over")).rsplit(": ", 1)[1].strip()
        first = run.experiment(run.feature_sets[0])
        assert any(line.split()[:1] == [first] for line in lines), lines  # every experiment's link is listed
        assert url.endswith("/runs?workflowType=machine_learning"), url
        with chromium(tmp_path / "chrome-profile") as driver:
            driver.get(url)
            _wait_for_names(driver, RUN_NAME, {f"{f}-final" for f in run.grid_families}, f"voiceid ui link {url}")
            _shot(driver, tmp_path / "voiceid_ui_training_runs.png", f"voiceid ui: {first}")
    finally:
        stop_group(proc)
    # the MLflow server it started is gone with it
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "voiceid ui left its mlflow server running"
