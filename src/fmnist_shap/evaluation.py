"""Test-set metrics: flat scalars for `dvc metrics`, confusion rows for `dvc plots`."""

import re
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_recall_fscore_support,
)


def metric_key(class_name: str) -> str:
    """'T-shirt/top' → 't_shirt_top': a column name that reads well in `dvc exp show`."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def test_metrics(
    labels_N: np.ndarray, predicted_N: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro F1 and per-class precision/recall/F1 as one flat dict of floats."""
    classes = list(range(len(class_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels_N, predicted_N, labels=classes, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(labels_N, predicted_N)),
        "macro_f1": float(
            f1_score(labels_N, predicted_N, labels=classes, average="macro", zero_division=0)
        ),
    }
    for i, name in enumerate(class_names):
        key = metric_key(name)
        metrics[f"precision_{key}"] = float(precision[i])
        metrics[f"recall_{key}"] = float(recall[i])
        metrics[f"f1_{key}"] = float(f1[i])
    return {k: round(v, 6) for k, v in metrics.items()}


def confusion_csv(labels_N: np.ndarray, predicted_N: np.ndarray, class_names: Sequence[str]) -> str:
    """One `actual,predicted` row per test image: the input of DVC's `confusion` template."""
    rows = ["actual,predicted"]
    rows += [
        f"{class_names[a]},{class_names[p]}" for a, p in zip(labels_N, predicted_N, strict=True)
    ]
    return "\n".join(rows) + "\n"


def report_text(labels_N: np.ndarray, predicted_N: np.ndarray, class_names: Sequence[str]) -> str:
    """scikit-learn's per-class classification report, as text."""
    return classification_report(
        labels_N,
        predicted_N,
        labels=list(range(len(class_names))),
        target_names=list(class_names),
        digits=4,
        zero_division=0,
    )
