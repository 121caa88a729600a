"""The offline plots page in a real browser: headless Chromium with every host name unresolvable
renders every vega plot of `make plots` and `make plots-diff` (DVC's own page, which loads vega
from a CDN, renders none), with no script error; a screenshot is kept in the test's folder.

Needs Debian's `chromium` (`.ci/run` installs it and sets FMNIST_BROWSER_TESTS=required, so CI
cannot skip these); elsewhere they are skipped when no Chromium is found."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, subprocess_env

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
if BROWSER is None and os.environ.get("FMNIST_BROWSER_TESTS") != "required":
    pytest.skip("no Chromium (apt install chromium)", allow_module_level=True)

# Vega plots of dvc.yaml's `plots:` section; images (the SHAP plots) are <img> tags, not vega.
VEGA_PLOTS = len(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["plots"])


def chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file:// page with no network at all (every host unresolvable)."""
    assert BROWSER is not None, "FMNIST_BROWSER_TESTS=required but no chromium on PATH"
    command = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        *flags,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def rendered(page: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """(vega plots drawn, console errors) of the page after its scripts ran."""
    done = chromium(page, tmp_path / "profile", "--dump-dom")
    drawn = len(re.findall(r"<canvas\b", done.stdout))
    errors = [line for line in done.stderr.splitlines() if "Uncaught" in line]
    return drawn, errors


def plots_page(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "page"
    subprocess.run(
        [sys.executable, "-m", "fmnist_shap.plots_page", *args, "-o", str(out)],
        cwd=REPO,
        env=subprocess_env(REPO / "src"),
        check=True,
        capture_output=True,
    )
    return out / "index.html"


def test_every_vega_plot_renders_offline(tmp_path: Path) -> None:
    page = plots_page(tmp_path, "show")
    drawn, errors = rendered(page, tmp_path)
    assert drawn == VEGA_PLOTS and not errors, (drawn, errors)
    chromium(
        page,
        tmp_path / "profile",
        f"--screenshot={tmp_path / 'plots.png'}",
        "--window-size=1400,4000",
    )
    assert (tmp_path / "plots.png").stat().st_size > 10_000


def test_the_diff_page_renders_offline_too(tmp_path: Path) -> None:
    page = plots_page(tmp_path, "diff", "HEAD")
    drawn, errors = rendered(page, tmp_path)
    assert drawn == VEGA_PLOTS and not errors, (drawn, errors)


def test_dvcs_own_page_renders_nothing_offline(tmp_path: Path) -> None:
    """The control: the same browser and plots, DVC's CDN page: no vega plot appears (so the
    counts above are of plots the inlined libraries drew)."""
    out = tmp_path / "cdn"
    subprocess.run(
        ["dvc", "plots", "show", "-o", str(out)],
        cwd=REPO,
        env=subprocess_env(REPO / "src"),
        check=True,
        capture_output=True,
    )
    drawn, _ = rendered(out / "index.html", tmp_path)
    assert drawn == 0
