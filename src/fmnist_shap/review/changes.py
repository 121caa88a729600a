"""What a change did, read from two revisions' committed outputs: predictions, faithfulness
scores and the review set's attributions. The PR report (`review.report`) renders it.

A side is a revision (`git show`) or the workspace. Whatever a side lacks (an older revision
written before a file existed) comes back as None, and the report says so instead of comparing
what is not there.
"""

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_shap.faithfulness import rank_correlation
from fmnist_shap.review.significance import (
    RESAMPLES,
    SEED,
    Change,
    Comparison,
    Predictions,
    compare,
    paired_scores_change,
)

CONFUSION = "reports/eval/plots/sklearn/confusion.json"
OLD_CONFUSION = "reports/eval/confusion.csv"  # before evaluate wrote with dvclive
CLASSES = "data/prepared/classes.json"
VARIANTS = "reports/explain/variants"
TOP_FRACTION = 0.05  # drift: the overlap of each map's top 5% pixels


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a git revision, or the workspace (`rev` None)."""

    repo: Path
    rev: str | None

    @property
    def name(self) -> str:
        return "workspace" if self.rev is None else self.rev

    def read(self, path: str) -> bytes | None:
        if self.rev is None:
            file = self.repo / path
            return file.read_bytes() if file.is_file() else None
        done = subprocess.run(
            ["git", "show", f"{self.rev}:{path}"], cwd=self.repo, capture_output=True, check=False
        )
        return done.stdout if done.returncode == 0 else None

    def predictions(self) -> Predictions | None:
        """Per-image predictions in test-set order (evaluate's confusion entries)."""
        classes, entries = self.read(CLASSES), self.read(CONFUSION)
        if classes is None:
            return None
        if entries is not None:
            table = pd.read_json(io.BytesIO(entries))
        elif (old := self.read(OLD_CONFUSION)) is not None:
            table = pd.read_csv(io.BytesIO(old))
        else:
            return None
        return Predictions.from_entries(table, tuple(json.loads(classes)["class_names"]))

    def scores(self, variant: str) -> pd.DataFrame | None:
        data = self.read(f"{VARIANTS}/{variant}/scores.csv")
        return None if data is None else pd.read_csv(io.BytesIO(data))

    def values(self, variant: str) -> dict[str, np.ndarray] | None:
        data = self.read(f"{VARIANTS}/{variant}/values.npz")
        if data is None:
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}


def predictions_change(base: Side, head: Side) -> Comparison | None:
    """Accuracy, macro F1, flips and per-class recall, base → head; None if a side has no
    per-image predictions or they are of other test images (another test subset)."""
    base_predictions, head_predictions = base.predictions(), head.predictions()
    if base_predictions is None or head_predictions is None:
        return None
    if not np.array_equal(base_predictions.actual_N, head_predictions.actual_N):
        return None
    return compare(base_predictions, head_predictions, RESAMPLES, SEED)


def faithfulness_change(base: Side, head: Side, variant: str) -> Change | None:
    """Insertion − deletion AUC, base → head, on the images both explained (paired)."""
    base_scores, head_scores = base.scores(variant), head.scores(variant)
    if base_scores is None or head_scores is None:
        return None
    both = base_scores.merge(head_scores, on=["set", "test_index"], suffixes=("_b", "_h"))
    if both.empty:
        return None
    return paired_scores_change(
        (both["insertion_auc_b"] - both["deletion_auc_b"]).to_numpy(),
        (both["insertion_auc_h"] - both["deletion_auc_h"]).to_numpy(),
        RESAMPLES,
        SEED,
    )


def top_overlap(a_HW: np.ndarray, b_HW: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """The share of a's top `fraction` pixels (highest attribution) that are b's too."""
    count = max(1, round(fraction * a_HW.size))
    top_a = np.argsort(-a_HW.ravel(), kind="stable")[:count]
    top_b = np.argsort(-b_HW.ravel(), kind="stable")[:count]
    return len(np.intersect1d(top_a, top_b)) / count


@dataclass(frozen=True)
class Drift:
    """How much a variant's true-class maps of the review set moved, base → head."""

    spearman_N: np.ndarray
    overlap_N: np.ndarray
    test_index_N: np.ndarray

    def text(self) -> str:
        worst = int(np.argmin(self.spearman_N))
        return (
            f"ρ {self.spearman_N.mean():.2f} (worst {self.spearman_N[worst]:.2f}, test image "
            f"{self.test_index_N[worst]}), top-5% overlap {self.overlap_N.mean():.2f} "
            f"(worst {self.overlap_N.min():.2f})"
        )


def review_maps(values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The review set's test indices and first-column (true-class) maps, or None before the
    review set existed."""
    if "set" not in values:
        return None
    rows = values["set"] == "review"
    return values["test_index"][rows], values["values"][rows][..., 0]


def drift(base: Side, head: Side, variant: str) -> Drift | None:
    """Agreement of base and head true-class maps on the review set: Spearman ρ and top-5%
    overlap per image. None where a side has no review set or another one (other params)."""
    base_values, head_values = base.values(variant), head.values(variant)
    if base_values is None or head_values is None:
        return None
    base_maps, head_maps = review_maps(base_values), review_maps(head_values)
    if base_maps is None or head_maps is None or not np.array_equal(base_maps[0], head_maps[0]):
        return None
    pairs = list(zip(base_maps[1], head_maps[1], strict=True))
    spearman = [1.0 if np.array_equal(a, b) else rank_correlation(a, b) for a, b in pairs]
    overlap = [top_overlap(a, b) for a, b in pairs]
    return Drift(np.array(spearman), np.array(overlap), base_maps[0])
