"""End to end: the repository copied into a temporary git repo, real `dvc repro` on a small subset."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, subprocess_env

SMALL_PARAMS = {
    "prepare": {"val_size": 500, "train_subset": 2000, "test_subset": 1000},
    "train": {"epochs": 1, "batch_size": 100},
    # Three of the eight variants keep the test short; the default builds all of them.
    "explain": {
        "explainers": ["partition", "permutation"],
        "maskers": ["telea"],
        "gradient_explainers": ["integrated_gradients"],
        "samples_per_set": 1,
        "top_k": 3,
        "partition_max_evals": 100,
        "permutation_max_evals": 1569,
        "integrated_gradients_samples": 32,
        "faithfulness_steps": 16,
    },
}


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def copy_repository(dest: Path, raw_dir: Path) -> None:
    """The repository's tracked and unignored files as they are now, plus the raw data."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(raw_dir, dest / "data" / "raw")


def lock_hashes(repo: Path) -> dict[str, str]:
    """Every output's md5 in dvc.lock, by path."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
    }


@pytest.fixture(scope="module")
def small_repo(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    copy_repository(repo, raw_dir)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in SMALL_PARAMS.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


@pytest.fixture(scope="module")
def repo_env(small_repo: Path) -> dict[str, str]:
    return subprocess_env(small_repo / "src")  # the copy's library, not the installed one


@pytest.fixture(scope="module")
def reproduced(small_repo: Path, repo_env: dict[str, str]) -> str:
    run(["git", "init", "-q", "-b", "main"], small_repo, repo_env)
    run(["git", "add", "-A"], small_repo, repo_env)
    run(["git", "commit", "-q", "-m", "copy"], small_repo, repo_env)
    return run(["dvc", "repro"], small_repo, repo_env)


@pytest.mark.slow
def test_repro_builds_every_output(small_repo: Path, reproduced: str) -> None:
    for stage in (
        "prepare",
        "train",
        "evaluate",
        "explain@partition-telea",
        "explain@permutation-telea",
        "explain-gradients@integrated_gradients",
        "summarize",
    ):
        assert f"Running stage '{stage}'" in reproduced
    for rel in (
        "data/prepared/train.npz",
        "data/prepared/val.npz",
        "data/prepared/test.npz",
        "models/model.npz",
        "reports/train/metrics.json",
        "reports/train/plots/metrics/val_loss.tsv",
        "reports/eval/metrics.json",
        "reports/eval/confusion.csv",
        "reports/eval/classification_report.txt",
        "reports/explain/partition-telea/correct.png",
        "reports/explain/permutation-telea/wrong.png",
        "reports/explain/permutation-telea/values.npz",
        "reports/explain/permutation-telea/samples.csv",
        "reports/explain/integrated_gradients/curves.csv",
        "reports/faithfulness/summary.md",
        "reports/faithfulness/bars.csv",
        "reports/faithfulness/deletion.csv",
    ):
        assert (small_repo / rel).is_file(), rel
    metrics = json.loads((small_repo / "reports/eval/metrics.json").read_text())
    assert 0.5 < metrics["accuracy"] <= 1.0  # one epoch on 2k real images
    assert len((small_repo / "reports/eval/confusion.csv").read_text().splitlines()) == 1001
    assert "Running stage 'explain@partition-blur'" not in reproduced  # only the listed variants
    assert "expected_gradients" not in reproduced
    explain_metrics = json.loads(
        (small_repo / "reports/explain/partition-telea/metrics.json").read_text()
    )
    assert explain_metrics["additivity_max_error"] < 1e-4
    assert explain_metrics["evals_per_image"] == 100


@pytest.mark.slow
def test_status_clean_and_second_repro_does_nothing(
    small_repo: Path, repo_env: dict[str, str], reproduced: str
) -> None:
    assert "up to date" in run(["dvc", "status"], small_repo, repo_env)
    again = run(["dvc", "repro"], small_repo, repo_env)
    assert "Running stage" not in again


@pytest.mark.slow
def test_metrics_and_plots_commands_work(
    small_repo: Path, repo_env: dict[str, str], reproduced: str
) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], small_repo, repo_env))
    files = shown[""]["data"]
    assert "accuracy" in files["reports/eval/metrics.json"]["data"]
    assert "val_accuracy" in files["reports/train/metrics.json"]["data"]
    for variant in ("permutation-telea", "integrated_gradients"):
        explain_metrics = files[f"reports/explain/{variant}/metrics.json"]["data"]
        for key in (
            "additivity_max_error",
            "deletion_auc",
            "insertion_auc",
            "deletion_auc_random",
            "insertion_auc_random",
            "randomization_spearman",
        ):
            assert key in explain_metrics, (variant, key)
    out = run(["dvc", "plots", "show", "-o", "plots_html"], small_repo, repo_env)
    assert (small_repo / "plots_html" / "index.html").is_file(), out
    html = (small_repo / "plots_html" / "index.html").read_text()
    assert "Confusion matrix" in html and "Training curves" in html
    assert "Deletion AUC per variant" in html and "Insertion curves" in html
    assert "reports/explain/partition-telea/correct.png" in html


@pytest.mark.slow
def test_forced_rerun_gives_identical_hashes(
    small_repo: Path, repo_env: dict[str, str], reproduced: str
) -> None:
    before = lock_hashes(small_repo)
    values = (small_repo / "reports/explain/permutation-telea/values.npz").read_bytes()
    run(["dvc", "repro", "-f"], small_repo, repo_env)
    after = lock_hashes(small_repo)
    # Timing is the one output that differs by nature; it lives in its own files.
    timing = {path for path in before if path.endswith("timing.json")}
    assert {p: h for p, h in after.items() if p not in timing} == {
        p: h for p, h in before.items() if p not in timing
    }
    assert {
        "data/prepared/train.npz",
        "models/model.npz",
        "reports/explain/permutation-telea/values.npz",
    } <= set(before)
    assert (small_repo / "reports/explain/permutation-telea/values.npz").read_bytes() == values
