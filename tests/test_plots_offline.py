"""`dvc plots show` renders offline: the project's page template inlines vega instead of using a CDN."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "vendor" / "dvc_plots_page.html"
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _builder():
    spec = importlib.util.spec_from_file_location("build_plots_page", REPO / "scripts" / "build_plots_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repo_plots_config() -> dict[str, str]:
    from dvc.repo import Repo

    return dict(Repo(str(REPO)).config["plots"])


def test_project_config_points_dvc_at_the_committed_template() -> None:
    plots = _repo_plots_config()
    # dvc resolves a relative html_template against .dvc/ (dvc/commands/plots.py)
    assert (REPO / ".dvc" / plots["html_template"]).resolve() == TEMPLATE.resolve()
    assert not (REPO / plots["out_dir"]).resolve().is_relative_to(REPO / "dvc_plots")  # not among the vega templates
    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN <script> tags have nowhere to go
    assert not REMOTE_SCRIPT.search(page) and "sourceMappingURL" not in page
    for lib in ("vega", "vega-lite", "vega-embed"):
        assert f"<script>/* {lib} */" in page
    assert "BSD-3-Clause" in page and "Redistribution and use" in page  # the licence travels with the code


def test_dvc_plots_show_writes_a_page_without_remote_scripts(tmp_path: Path) -> None:
    project = _plots_project(tmp_path)
    html = _render(project)
    assert not REMOTE_SCRIPT.search(html), "the page loads a script from the network"
    assert "cdn.jsdelivr.net" not in html
    assert html.count("vegaEmbed('#") == 2  # both plots, rendered by the inlined vega-embed
    assert '"utterances"' in html  # the plot data is inlined in the page too


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium and chromium-driver are not installed (`make browser`)")
def test_rendered_page_draws_its_charts_with_the_network_cut_off(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    project = _plots_project(tmp_path)
    _render(project)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND",  # every host lookup fails: a CDN script could not load
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((project / _repo_plots_config()["out_dir"] / "index.html").as_uri())
        drawn = "return document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length"
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(drawn) >= 2)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert driver.save_screenshot(str(tmp_path / "dvc_plots.png"))
    finally:
        driver.quit()
    assert not errors, errors


def test_builder_inlines_pinned_builds_and_refuses_unsafe_ones(tmp_path: Path) -> None:
    builder = _builder()
    modules = tmp_path / "node_modules"
    for name, version in builder.PINNED.items():
        (modules / name / "build").mkdir(parents=True)
        (modules / name / "package.json").write_text(json.dumps({"version": version, "license": "BSD-3-Clause"}))
        (modules / name / builder.BUILDS[name]).write_text(f"var {name.replace('-', '_')}=1;\n//# sourceMappingURL=x.map\n")
    (modules / "vega-lite" / "LICENSE").write_text("Copyright (c) 2015, UW IDL.\nRedistribution and use -- ok")
    page = builder.build_page(modules)
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "sourceMappingURL" not in page
    assert "var vega_embed=1;" in page and "- -" in page  # "--" may not appear inside an HTML comment

    (modules / "vega" / builder.BUILDS["vega"]).write_text("x='</script>';")
    with pytest.raises(ValueError, match="</script"):
        builder.build_page(modules)
    (modules / "vega" / builder.BUILDS["vega"]).write_text("x='{plot_divs}';")
    with pytest.raises(ValueError, match="placeholder"):
        builder.build_page(modules)
    (modules / "vega" / "package.json").write_text(json.dumps({"version": "5.0.0"}))
    with pytest.raises(ValueError, match="need version"):
        builder.build_page(modules)


def _plots_project(tmp_path: Path) -> Path:
    """A DVC project with the repo's .dvc/config and template, and two plots (line, bar)."""
    project = tmp_path / "project"
    project.mkdir()
    _dvc(project, "init", "--no-scm", "-q")
    for key in ("html_template", "out_dir"):  # the repo's own settings, same layout
        _dvc(project, "config", f"plots.{key}", _repo_plots_config()[key])
    (project / "vendor").mkdir()
    shutil.copy(TEMPLATE, project / "vendor" / TEMPLATE.name)
    (project / "plots").mkdir()  # as in the repo, where every stage writes its plot data under plots/
    (project / "plots" / "curve.csv").write_text("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(10)))
    (project / "plots" / "counts.csv").write_text("speaker,utterances\na,10\nb,4\nc,1\n")
    (project / "dvc.yaml").write_text(
        "plots:\n  - plots/curve.csv:\n      x: x\n      y: y\n"
        "  - plots/counts.csv:\n      template: bar_horizontal\n      x: utterances\n      y: speaker\n"
    )
    return project


def _dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(project / ".dvc" / "site-cache")}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stderr}"
    return done.stdout


def _render(project: Path) -> str:
    """`dvc plots show` with no -o: the page lands in the configured plots.out_dir."""
    _dvc(project, "plots", "show")
    return (project / _repo_plots_config()["out_dir"] / "index.html").read_text(encoding="utf-8")
