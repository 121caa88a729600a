"""The daily loop on real git and real DVC: experiments, the PR report, a remote, a fresh clone."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import subprocess_env
from tests.test_pipeline import SMALL_PARAMS, copy_repository, lock_hashes, run


@pytest.fixture(scope="module")
def repo_and_env(
    raw_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A small-params copy of the project, reproduced and committed as `main`."""
    repo = tmp_path_factory.mktemp("exp") / "project"
    repo.mkdir()
    env = subprocess_env(repo / "src")
    copy_repository(repo, raw_dir)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in SMALL_PARAMS.items():
        params[section].update(values)
    params["explain"]["explainers"] = ["partition"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "copy"], repo, env)  # dvclive wants a commit to log against
    run(["dvc", "commit", "--force", "--quiet", "data/raw.dvc"], repo, env)  # raw data into cache
    run(["dvc", "repro", "--quiet"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "baseline"], repo, env)
    return repo, env


@pytest.fixture(scope="module")
def repo(repo_and_env: tuple[Path, dict[str, str]]) -> Path:
    return repo_and_env[0]


@pytest.fixture(scope="module")
def env(repo_and_env: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return repo_and_env[1]


def _back_to_head(repo: Path, env: dict[str, str]) -> None:
    """Drop what earlier experiments left in the workspace: git files, then DVC outputs."""
    run(["git", "checkout", "--", "."], repo, env)
    run(["dvc", "checkout", "--force", "--quiet"], repo, env)


def _accuracy(row: dict) -> float:
    return row["data"]["metrics"]["reports/eval/metrics.json"]["data"]["accuracy"]


@pytest.mark.slow
def test_two_experiments_show_and_diff(repo: Path, env: dict[str, str]) -> None:
    run(["dvc", "exp", "run", "--quiet", "-n", "lr-high", "-S", "train.lr=0.008"], repo, env)
    run(["dvc", "exp", "run", "--quiet", "-n", "lr-low", "-S", "train.lr=0.0002"], repo, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    experiments = {
        exp["name"]: exp["revs"][0] for commit in shown for exp in (commit.get("experiments") or [])
    }
    assert {"lr-high", "lr-low"} <= set(experiments)
    high, low = experiments["lr-high"], experiments["lr-low"]
    assert high["data"]["params"]["params.yaml"]["data"]["train"]["lr"] == 0.008
    assert _accuracy(high) != _accuracy(low)
    diff = run(["dvc", "exp", "diff", "lr-low", "lr-high", "--md"], repo, env)
    assert "train.lr" in diff and "0.0002" in diff and "0.008" in diff


@pytest.mark.slow
def test_push_then_pull_in_a_fresh_clone(repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    _back_to_head(repo, env)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-d", "-f", "test", str(remote)], repo, env)
    run(["dvc", "push", "--quiet"], repo, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "test", str(remote)], clone, env)
    run(["dvc", "pull", "--quiet"], clone, env)
    assert (clone / "models/model.npz").read_bytes() == (repo / "models/model.npz").read_bytes()
    assert (clone / "data/raw/train-images-idx3-ubyte").is_file()
    assert "up to date" in run(["dvc", "status"], clone, env)
    assert "Running stage" not in run(["dvc", "repro"], clone, env)
    assert lock_hashes(clone) == lock_hashes(repo)


@pytest.mark.slow
def test_pr_report_shows_base_and_head(repo: Path, env: dict[str, str]) -> None:
    _back_to_head(repo, env)
    base_accuracy = json.loads((repo / "reports/eval/metrics.json").read_text())["accuracy"]
    run(["dvc", "exp", "run", "--quiet", "-S", "train.lr=0.008", "-S", "train.seed=3"], repo, env)
    head_accuracy = json.loads((repo / "reports/eval/metrics.json").read_text())["accuracy"]
    assert head_accuracy != base_accuracy
    run(["python", "-m", "fmnist_shap.report", "--base", "main"], repo, env)
    report = (repo / "reports/pr-report.md").read_text()
    assert "## Explanation faithfulness" in report
    assert "| partition-telea | " in report and " → " in report  # base and head AUCs
    assert "train.lr" in report and "0.008" in report  # the param change
    assert (
        f"{base_accuracy:.4f}".rstrip("0") in report
        and f"{head_accuracy:.4f}".rstrip("0") in report
    )
    base_png = repo / "reports/pr/base/partition-telea-correct.png"
    head_png = repo / "reports/pr/head/partition-telea-correct.png"
    assert (
        "pr/base/partition-telea-correct.png" in report
        and "pr/head/partition-telea-correct.png" in report
    )
    assert base_png.read_bytes() != head_png.read_bytes()
    committed = subprocess.run(
        ["git", "show", "main:reports/explain/partition-telea/correct.png"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    assert base_png.read_bytes() == committed  # the base image really is the base's
    assert (repo / "reports/pr/base/confusion.png").read_bytes() != (
        repo / "reports/pr/head/confusion.png"
    ).read_bytes()
