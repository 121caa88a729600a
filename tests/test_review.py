"""The PR report's verdict and its statistics on synthetic predictions and scores (no pipeline
run): every verdict line, McNemar against scipy, the bootstrap interval's coverage under no
change, its memory, the "(changed)" marker, the flips fallback, review.py's fallbacks and
Drift's text, and global's per-chunk explanation without a cluster."""

import dataclasses
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from fmnist_shap.data import CLASS_NAMES
from fmnist_shap.review.changes import CLASSES, OLD_CONFUSION, VARIANTS, Side, drift
from fmnist_shap.review.report import _flips_section, _pair_row, verdict
from fmnist_shap.review.significance import (
    RESAMPLES,
    SEED,
    Change,
    Comparison,
    Predictions,
    compare,
    mcnemar_exact,
)


def predictions(actual: np.ndarray, right_rate: float, rng: np.random.Generator) -> Predictions:
    """Each image right with probability `right_rate`, else another class."""
    right = rng.random(len(actual)) < right_rate
    wrong = (actual + rng.integers(1, 10, len(actual))) % 10
    return Predictions(actual, np.where(right, actual, wrong), CLASS_NAMES)


def comparison(base_rate: float, head_rate: float, n: int = 2000, seed: int = 0) -> Comparison:
    rng = np.random.default_rng(seed)
    actual = rng.integers(0, 10, n)
    return compare(
        predictions(actual, base_rate, rng), predictions(actual, head_rate, rng), 1000, SEED
    )


def verdict_line(lines: list[str], start: str) -> str:
    (line,) = [line for line in lines if line.startswith(start)]
    return line


def test_a_change_beyond_noise_is_reported_as_such() -> None:
    lines = verdict(comparison(0.80, 0.90), {}, {}, ["train.lr 0.002 → 0.004"])
    accuracy = verdict_line(lines, "- **Accuracy**")
    assert "— beyond noise; McNemar exact p = " in accuracy
    assert float(accuracy.split("p = ")[1]) < 1e-6
    assert (
        verdict_line(lines, "- **Params changed**")
        == "- **Params changed**: train.lr 0.002 → 0.004"
    )


def test_a_change_within_noise_is_reported_as_within_noise() -> None:
    lines = verdict(comparison(0.90, 0.90, seed=3), {}, {}, [])
    accuracy = verdict_line(lines, "- **Accuracy**")
    assert "— within noise" in accuracy
    assert verdict_line(lines, "- **Params changed**") == "- **Params changed**: none"


def test_flips_line_counts_both_directions() -> None:
    result = comparison(0.85, 0.85, n=500, seed=1)
    line = verdict_line(verdict(result, {}, {}, []), "- **Flips**")
    assert line == (
        f"- **Flips**: {len(result.right_to_wrong)} right → wrong, "
        f"{len(result.wrong_to_right)} wrong → right (of 500 test images)"
    )
    assert len(result.right_to_wrong) > 0 and len(result.wrong_to_right) > 0


def test_faithfulness_line_names_only_the_changes_beyond_noise() -> None:
    changes = {
        "permutation-blur": Change(0.80, 0.70, -0.15, -0.05),  # beyond noise
        "partition-blur": Change(0.30, 0.32, -0.03, 0.07),  # within
        "deep": None,  # not compared
    }
    line = verdict_line(verdict(None, changes, {}, []), "- **Faithfulness changes beyond noise**")
    assert "permutation-blur -0.100 [-0.150, -0.050]" in line
    assert "partition-blur" not in line and line.endswith("(of 2 variants)")
    none = verdict_line(verdict(None, {"deep": None}, {}, []), "- **Faithfulness**")
    assert "not compared" in none


def test_predictions_not_compared_and_provenance_lines() -> None:
    stages = "- **Stages**: pulled from the remote: train."
    lines = verdict(None, {}, {}, [], [stages, "- **Remote**: 3 outputs pulled from x."])
    assert "- **Predictions**: not compared" in "\n".join(lines)
    assert lines[3:5] == [stages, "- **Remote**: 3 outputs pulled from x."]


def test_mcnemar_is_scipys_binomial_test_on_the_discordant_pairs() -> None:
    result = comparison(0.85, 0.83, n=3000, seed=2)
    broke, fixed = len(result.right_to_wrong), len(result.wrong_to_right)
    expected = binomtest(broke, broke + fixed, 0.5, alternative="two-sided").pvalue
    assert result.mcnemar_p == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 0) == pytest.approx(binomtest(7, 7, 0.5).pvalue)


def test_bootstrap_interval_excludes_zero_about_5_percent_under_no_change() -> None:
    """Simulated no-change pairs (both sides right with probability 0.9, independently): the
    95% paired interval of the accuracy change excludes 0 in about 5% of repetitions. 300
    repetitions: a binomial standard deviation of 1.3 points, so 1.5%–9% is a 2.7-sigma band."""
    repetitions = 300
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(repetitions):
        actual = rng.integers(0, 10, 400)
        base, head = predictions(actual, 0.9, rng), predictions(actual, 0.9, rng)
        rejected += compare(base, head, 500, int(rng.integers(1 << 31))).accuracy.beyond_noise
    assert 0.015 <= rejected / repetitions <= 0.09, rejected


def test_bootstrap_memory_stays_bounded_for_10k_images() -> None:
    """The resample weights are drawn a chunk at a time: all 2000 for 10k images at once would
    be 160 MB."""
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 10, 10_000)
    base, head = predictions(actual, 0.9, rng), predictions(actual, 0.9, rng)
    tracemalloc.start()
    compare(base, head, RESAMPLES, SEED)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB"


def test_changed_marker_only_when_the_images_differ(tmp_path: Path) -> None:
    same = _pair_row(tmp_path / "pr", tmp_path, "deep-review", b"png-a", b"png-a")
    other = _pair_row(tmp_path / "pr", tmp_path, "deep-review", b"png-a", b"png-b")
    assert same.startswith("| deep-review | ") and "(changed)" not in same
    assert other.startswith("| deep-review (changed) | ")
    assert (tmp_path / "pr/head/deep-review.png").read_bytes() == b"png-b"
    missing = _pair_row(tmp_path / "pr", tmp_path, "gradient-review", None, b"png-c")
    assert "(none)" in missing and "(changed)" in missing


def test_flips_section_says_so_when_no_image_flipped(tmp_path: Path) -> None:
    result = Comparison(
        accuracy=Change(0.9, 0.9, -0.01, 0.01),
        macro_f1=Change(0.9, 0.9, -0.01, 0.01),
        right_to_wrong=np.array([], np.int64),
        wrong_to_right=np.array([3], np.int64),
        mcnemar_p=1.0,
        recall=pd.DataFrame(),
        images=10,
    )
    assert _flips_section(tmp_path, result, tmp_path / "pr", tmp_path) == [
        "No test image went from right to wrong."
    ]
    assert not (tmp_path / "pr").exists()


def write(repo: Path, path: str, data: bytes) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_bytes(data)


def test_a_base_with_only_the_old_confusion_csv_is_still_compared(tmp_path: Path) -> None:
    """Revisions from before evaluate wrote dvclive's confusion.json kept confusion.csv."""
    actual = np.array([0, 1, 2, 3])
    write(tmp_path, CLASSES, json.dumps({"class_names": list(CLASS_NAMES)}).encode())
    old = pd.DataFrame(
        {
            "actual": [CLASS_NAMES[a] for a in actual],
            "predicted": [CLASS_NAMES[a] for a in [0, 1, 2, 2]],
        }
    )
    write(tmp_path, OLD_CONFUSION, old.to_csv(index=False).encode())
    read = Side(tmp_path, None).predictions()
    assert read is not None
    assert read.actual_N.tolist() == [0, 1, 2, 3] and read.predicted_N.tolist() == [0, 1, 2, 2]
    (tmp_path / CLASSES).unlink()
    assert Side(tmp_path, None).predictions() is None  # no class names: not compared


def review_values(index: list[int], maps: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        values=maps[..., None],
        test_index=np.array(index),
        set=np.array(["review"] * len(index)),
    )
    return buffer.getvalue()


def test_drift_needs_the_same_review_set_and_reads_as_a_reviewer_says_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 28, 28)).astype(np.float32)
    base, head, other = (tmp_path / name for name in ("base", "head", "other"))
    path = f"{VARIANTS}/v/values.npz"
    write(base, path, review_values([5, 9, 12], maps))
    moved = maps.copy()
    moved[1] = -moved[1]  # image 9's map reversed: its ρ is -1
    write(head, path, review_values([5, 9, 12], moved))
    write(other, path, review_values([5, 9, 13], maps))  # another review set
    result = drift(Side(base, None), Side(head, None), "v")
    assert result is not None
    assert result.spearman_N.tolist() == pytest.approx([1.0, -1.0, 1.0])
    assert result.text() == ("ρ 0.33 (worst -1.00, test image 9), top-5% overlap 0.67 (worst 0.00)")
    assert drift(Side(base, None), Side(other, None), "v") is None
    assert drift(Side(base, None), Side(tmp_path / "none", None), "v") is None


def test_globals_chunk_explains_without_a_cluster(trained_model, small_val, tmp_path: Path) -> None:
    """The function a Dask worker runs, called directly: the true-class map of each image, the
    registry method's first column, seeded by test index."""
    from fmnist_shap.explain.base import Context
    from fmnist_shap.explain.registry import build
    from fmnist_shap.global_explain import explain_chunk
    from fmnist_shap.model import make_predict_fn, save_model
    from fmnist_shap.variants import ExplainParams
    from tests.conftest import repo_params

    save_model(tmp_path / "model.npz", trained_model)
    params = repo_params("explain", ExplainParams, seed=0, batch_size=512)
    params = dataclasses.replace(params, budget=params.budget | {"integrated_gradients": 8})
    images, labels = small_val.images_NHW[:3], small_val.labels_N[:3]
    index = np.array([40, 41, 42])
    maps = explain_chunk(
        (tmp_path / "model.npz").read_bytes(),
        None,
        "integrated_gradients",
        index,
        images,
        labels,
        params,
    )
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
    context = Context(trained_model, make_predict_fn(trained_model, 512), params)
    expected = build("integrated_gradients").attribute(context, images, labels[:, None], index)
    assert np.array_equal(maps, expected.values_NHWK[..., 0])
    completeness = maps.sum(axis=(1, 2)) + expected.base_values_NK[:, 0]
    logits = context.predict(images)[np.arange(3), labels]
    assert np.abs(completeness - logits).max() < 0.5  # 8 intervals: coarse, but the right map
