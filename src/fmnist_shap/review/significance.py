"""Is a change real? Paired bootstrap intervals and McNemar's exact test, over test images.

Base and head predicted the same test images, so every comparison is paired: each bootstrap
resample draws test images with replacement and scores base and head on the same draw. The
resamples are multinomial weights on the images, drawn from one seeded generator, so an
interval is reproducible with its seed. Intervals are the 2.5th and 97.5th percentiles of the
resampled changes (95%).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
from scipy.stats import binomtest

RESAMPLES, SEED = 2000, 0  # every interval of the project: resamples and generator seed
CHUNK = 100  # resamples per weight matrix: (CHUNK, images) float64, 8 MB for 10k images


@dataclass(frozen=True)
class Change:
    """A metric on base and head, the change, and the change's 95% bootstrap interval."""

    base: float
    head: float
    low: float
    high: float

    @property
    def change(self) -> float:
        return self.head - self.base

    @property
    def beyond_noise(self) -> bool:
        """Does the interval of the change exclude 0?"""
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 4) -> str:
        """'0.9120 → 0.9180 (+0.0060, 95% CI +0.0010 … +0.0110)'."""
        f = f".{digits}f"
        return (
            f"{self.base:{f}} → {self.head:{f}} ({self.change:+{f}}, "
            f"95% CI {self.low:+{f}} … {self.high:+{f}})"
        )


def bootstrap_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """`resamples` multinomial draws of n images, as (chunk, n) count matrices, one chunk at a
    time: only one is held in memory (8 MB for 10k images), whatever `resamples` is."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def cells(actual_N: np.ndarray, predicted_N: np.ndarray, classes: int) -> np.ndarray:
    """Each image's confusion cell, one-hot: (images, classes²)."""
    onehot_NP = np.zeros((len(actual_N), classes * classes))
    onehot_NP[np.arange(len(actual_N)), actual_N * classes + predicted_N] = 1.0
    return onehot_NP


def confusion_counts(weights_RN: np.ndarray, onehot_NP: np.ndarray, classes: int) -> np.ndarray:
    """Weighted confusion matrices (R, actual, predicted) of R resamples."""
    return (weights_RN @ onehot_NP).reshape(len(weights_RN), classes, classes)


def accuracy(counts_RCC: np.ndarray) -> np.ndarray:
    return np.trace(counts_RCC, axis1=1, axis2=2) / counts_RCC.sum(axis=(1, 2))


def recall(counts_RCC: np.ndarray) -> np.ndarray:
    """Per-class recall (R, C); a class absent from a resample counts as recall 0."""
    diagonal = np.diagonal(counts_RCC, axis1=1, axis2=2)
    support = counts_RCC.sum(axis=2)
    return np.divide(diagonal, support, out=np.zeros_like(diagonal), where=support > 0)


def macro_f1(counts_RCC: np.ndarray) -> np.ndarray:
    """Macro F1 as scikit-learn computes it (zero_division=0), per resample."""
    tp = np.diagonal(counts_RCC, axis1=1, axis2=2)
    denominator = counts_RCC.sum(axis=2) + counts_RCC.sum(axis=1)  # 2tp + fn + fp
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


@dataclass(frozen=True)
class Predictions:
    """One revision's predicted class per test image, in test-set order, and the true ones."""

    actual_N: np.ndarray
    predicted_N: np.ndarray
    class_names: tuple[str, ...]

    @classmethod
    def from_entries(cls, entries: pd.DataFrame, class_names: tuple[str, ...]) -> "Predictions":
        """From the `actual`/`predicted` class-name columns of evaluate's confusion entries."""
        index = {name: i for i, name in enumerate(class_names)}
        return cls(
            entries["actual"].map(index).to_numpy(np.int64),
            entries["predicted"].map(index).to_numpy(np.int64),
            class_names,
        )


@dataclass(frozen=True)
class Comparison:
    """What the reviewer asks of a change in predictions."""

    accuracy: Change
    macro_f1: Change
    right_to_wrong: np.ndarray  # test indices the change broke
    wrong_to_right: np.ndarray  # test indices it fixed
    mcnemar_p: float  # exact two-sided test on the discordant pairs
    recall: pd.DataFrame  # per class: base, head, change, low, high, beyond_noise
    images: int  # test images compared


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """McNemar's exact test: under no change, each discordant image is equally likely to have
    gone either way (a binomial with p = 1/2)."""
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    return float(binomtest(right_to_wrong, discordant, 0.5).pvalue)


def compare(base: Predictions, head: Predictions, resamples: int, seed: int) -> Comparison:
    """Base against head on the same test images; refuses predictions of different images."""
    if not np.array_equal(base.actual_N, head.actual_N):
        raise ValueError("base and head predicted different test images")
    classes = len(head.class_names)
    statistics: dict[str, list[np.ndarray]] = {"accuracy": [], "macro_f1": [], "recall": []}
    functions: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "recall": recall,
    }
    n = len(base.actual_N)
    base_cells = cells(base.actual_N, base.predicted_N, classes)
    head_cells = cells(head.actual_N, head.predicted_N, classes)
    observed = np.ones((1, n))  # the first row: the observed (unweighted) metrics
    for weights_RN in chain([observed], bootstrap_weights(n, resamples, seed)):
        base_counts = confusion_counts(weights_RN, base_cells, classes)
        head_counts = confusion_counts(weights_RN, head_cells, classes)
        for name, function in functions.items():
            statistics[name].append(np.stack([function(base_counts), function(head_counts)]))
    joined = {name: np.concatenate(parts, axis=1) for name, parts in statistics.items()}
    base_right = base.predicted_N == base.actual_N
    head_right = head.predicted_N == head.actual_N
    broke, fixed = (
        np.flatnonzero(base_right & ~head_right),
        np.flatnonzero(~base_right & head_right),
    )
    return Comparison(
        accuracy=_change(joined["accuracy"]),
        macro_f1=_change(joined["macro_f1"]),
        right_to_wrong=broke,
        wrong_to_right=fixed,
        mcnemar_p=mcnemar_exact(len(broke), len(fixed)),
        recall=_recall_table(joined["recall"], head.class_names),
        images=n,
    )


def _change(values_2R: np.ndarray) -> Change:
    """From (base/head, observed + resamples) to a Change."""
    low, high = interval(values_2R[1, 1:] - values_2R[0, 1:])
    return Change(float(values_2R[0, 0]), float(values_2R[1, 0]), low, high)


def _recall_table(recall_2RC: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for c, name in enumerate(class_names):
        change = _change(recall_2RC[:, :, c])
        rows.append(
            {
                "class": name,
                "base": change.base,
                "head": change.head,
                "change": change.change,
                "low": change.low,
                "high": change.high,
                "beyond_noise": change.beyond_noise,
            }
        )
    return pd.DataFrame(rows)


def paired_scores_change(
    base_N: np.ndarray, head_N: np.ndarray, resamples: int, seed: int
) -> Change:
    """Mean per-image score, base → head, on the same images (paired bootstrap)."""
    return _change(_weighted_means(np.stack([base_N, head_N]), resamples, seed))


def _weighted_means(scores_SN: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(S, 1 + resamples): the observed mean of each row, then its bootstrap means."""
    n = scores_SN.shape[1]
    parts = [scores_SN.mean(axis=1, keepdims=True)]
    for weights_RN in bootstrap_weights(n, resamples, seed):
        parts.append((weights_RN @ scores_SN.T).T / n)
    return np.concatenate(parts, axis=1)


def mean_interval(scores_N: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """The mean of per-image scores and its 95% bootstrap interval."""
    means = _weighted_means(scores_N[None], resamples, seed)[0]
    return (float(means[0]), *interval(means[1:]))
