"""Review-grade comparisons on a real git repository with two commits: flips, McNemar, paired
bootstrap intervals, explanation drift, and the tie marking of the faithfulness ranking."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, recall_score

from fmnist_shap.artifacts import save_npz
from fmnist_shap.data import CLASS_NAMES
from fmnist_shap.review.changes import (
    Side,
    drift,
    faithfulness_change,
    predictions_change,
    top_overlap,
)
from fmnist_shap.review.report import param_change, verdict
from fmnist_shap.review.significance import compare, mcnemar_exact
from fmnist_shap.summary import VariantResult, ranked_with_intervals
from tests.conftest import subprocess_env

N = 1000


def _write_side(repo: Path, predicted: np.ndarray, labels: np.ndarray, maps: np.ndarray) -> None:
    entries = [
        {"actual": CLASS_NAMES[a], "predicted": CLASS_NAMES[p]}
        for a, p in zip(labels, predicted, strict=True)
    ]
    confusion = repo / "reports/eval/plots/sklearn/confusion.json"
    confusion.parent.mkdir(parents=True, exist_ok=True)
    confusion.write_text(json.dumps(entries))
    classes = repo / "data/prepared/classes.json"
    classes.parent.mkdir(parents=True, exist_ok=True)
    classes.write_text(json.dumps({"class_names": list(CLASS_NAMES)}))
    variant = repo / "reports/explain/variants/v"
    save_npz(
        variant / "values.npz",
        {
            "values": maps[..., None],
            "test_index": np.arange(len(maps)),
            "set": np.array(["review"] * len(maps)),
        },
    )
    rng = np.random.default_rng(int(predicted.sum()))
    scores = pd.DataFrame(
        {
            "set": "review",
            "test_index": np.arange(len(maps)),
            "deletion_auc": rng.uniform(0.1, 0.3, len(maps)),
            "insertion_auc": rng.uniform(0.6, 0.9, len(maps)),
        }
    )
    scores.to_csv(variant / "scores.csv", index=False)


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`main`: base predictions and maps; the workspace: head, with known flips."""
    repo = tmp_path_factory.mktemp("review")
    env = subprocess_env(repo)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N)
    base = np.where(rng.random(N) < 0.85, labels, rng.integers(0, 10, N))
    head = base.copy()
    flip = rng.choice(N, 120, replace=False)
    head[flip] = np.where(base[flip] == labels[flip], (labels[flip] + 1) % 10, labels[flip])
    base_maps = rng.normal(size=(10, 28, 28)).astype(np.float32)
    head_maps = base_maps + 0.5 * rng.normal(size=base_maps.shape).astype(np.float32)
    _write_side(repo, base, labels, base_maps)
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "base"], cwd=repo, env=env, check=True)
    _write_side(repo, head, labels, head_maps)
    return repo, {"labels": labels, "base": base, "head": head}


def test_flips_and_mcnemar_equal_a_direct_computation(two_commits: tuple[Path, dict]) -> None:
    repo, truth = two_commits
    comparison = predictions_change(Side(repo, "main"), Side(repo, None))
    assert comparison is not None
    labels, base, head = truth["labels"], truth["base"], truth["head"]
    broke = np.flatnonzero((base == labels) & (head != labels))
    fixed = np.flatnonzero((base != labels) & (head == labels))
    assert np.array_equal(comparison.right_to_wrong, broke)
    assert np.array_equal(comparison.wrong_to_right, fixed)
    assert len(broke) > 10 and len(fixed) > 10
    expected_p = binomtest(len(broke), len(broke) + len(fixed), 0.5).pvalue
    assert comparison.mcnemar_p == pytest.approx(expected_p, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0


def test_observed_metrics_are_sklearns_and_the_interval_holds_them(
    two_commits: tuple[Path, dict],
) -> None:
    repo, truth = two_commits
    comparison = predictions_change(Side(repo, "main"), Side(repo, None))
    assert comparison is not None
    labels, base, head = truth["labels"], truth["base"], truth["head"]
    assert comparison.accuracy.base == pytest.approx((base == labels).mean())
    assert comparison.accuracy.head == pytest.approx((head == labels).mean())
    assert comparison.macro_f1.head == pytest.approx(
        f1_score(labels, head, average="macro", zero_division=0)
    )
    recall = recall_score(labels, head, average=None, zero_division=0)
    assert np.allclose(comparison.recall["head"], recall)
    for change in (comparison.accuracy, comparison.macro_f1):
        assert change.low <= change.change <= change.high
        assert change.high - change.low < 0.1


def test_bootstrap_is_reproducible_with_its_seed(two_commits: tuple[Path, dict]) -> None:
    repo, _ = two_commits
    base, head = Side(repo, "main").predictions(), Side(repo, None).predictions()
    assert base is not None and head is not None
    first, again = compare(base, head, 500, 7), compare(base, head, 500, 7)
    other = compare(base, head, 500, 8)
    assert first.accuracy == again.accuracy and first.recall.equals(again.recall)
    assert (first.accuracy.low, first.accuracy.high) != (other.accuracy.low, other.accuracy.high)


def test_drift_is_exactly_one_for_the_same_commit_and_below_for_another(
    two_commits: tuple[Path, dict],
) -> None:
    repo, _ = two_commits
    same = drift(Side(repo, "main"), Side(repo, "main"), "v")
    assert same is not None
    assert np.all(same.spearman_N == 1.0) and np.all(same.overlap_N == 1.0)
    moved = drift(Side(repo, "main"), Side(repo, None), "v")
    assert moved is not None
    assert 0.3 < moved.spearman_N.mean() < 0.99 and moved.overlap_N.mean() < 1.0
    assert top_overlap(np.arange(100.0), np.arange(100.0)[::-1]) == 0.0
    # No review set on a side (an older revision, a missing variant): not compared.
    assert drift(Side(repo, "main"), Side(repo, None), "absent") is None
    assert faithfulness_change(Side(repo, "main"), Side(repo, None), "absent") is None
    change = faithfulness_change(Side(repo, "main"), Side(repo, None), "v")
    assert change is not None and change.low <= change.change <= change.high


def test_predictions_of_other_test_images_are_not_compared(
    two_commits: tuple[Path, dict], tmp_path: Path
) -> None:
    repo, truth = two_commits
    other = tmp_path / "other"
    _write_side(other, truth["head"][:500], truth["labels"][:500], np.zeros((10, 28, 28)))
    assert predictions_change(Side(repo, "main"), Side(other, None)) is None


def _variant(name: str, score_N: np.ndarray) -> VariantResult:
    scores = pd.DataFrame(
        {
            "set": "review",
            "test_index": np.arange(len(score_N)),
            "deletion_auc": 0.5 - score_N / 2,
            "insertion_auc": 0.5 + score_N / 2,
        }
    )
    metrics = {"insertion_auc": float(0.5 + score_N.mean() / 2)}
    metrics["deletion_auc"] = float(0.5 - score_N.mean() / 2)
    return VariantResult(name, name, "-", metrics, {}, scores)


def test_identical_scores_tie_and_a_clearly_better_variant_does_not() -> None:
    score_N = np.random.default_rng(1).uniform(0.2, 0.6, 20)
    rows = ranked_with_intervals(
        [_variant("b", score_N), _variant("a", score_N.copy()), _variant("best", score_N + 0.3)]
    )
    assert [r.result.name for r in rows] == ["best", "a", "b"]
    assert [r.rank for r in rows] == [1, 2, 2]
    assert [r.tied_with_above for r in rows] == [False, False, True]
    mean, low, high = rows[0].score
    assert low < mean < high and mean == pytest.approx(score_N.mean() + 0.3)


def test_a_side_without_predictions_or_review_set_gives_a_labelled_partial_verdict() -> None:
    lines = verdict(None, {"v": None}, {"v": None}, [])
    text = "\n".join(lines)
    assert "- **Params changed**: none" in text
    assert "**Predictions**: not compared" in text
    assert (
        "**Faithfulness**: not compared" in text and "**Explanation drift**: not compared" in text
    )
    assert len(lines) <= 15


def test_param_changes_read_as_a_reviewer_says_them() -> None:
    assert param_change("train.seed", 0, 1) == "train.seed 0 → 1"
    assert param_change("explain.review_per_class", None, 1) == "explain.review_per_class = 1 (new)"
    assert param_change("explain.partition_max_evals", 500, None) == (
        "explain.partition_max_evals removed (was 500)"
    )
