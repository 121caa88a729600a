"""Test-set metrics: flat scalars for `dvc metrics`, confusion entries for `dvc plots`."""

import os
import re
from collections.abc import Sequence

import numpy as np
from dvclive import Live
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_recall_fscore_support,
)

from fmnist_shap.artifacts import atomic_dir, write_text


def metric_key(class_name: str) -> str:
    """'T-shirt/top' → 't_shirt_top': a column name that reads well in `dvc exp show`."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def classification_metrics(
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


def write_evaluation(
    out_dir: str | os.PathLike,
    labels_N: np.ndarray,
    predicted_N: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, float]:
    """The stage's outputs, written with dvclive into a folder that replaces `out_dir` whole:
    metrics.json, plots/sklearn/confusion.json (one actual/predicted entry per test image, in
    test-set order: DVC's confusion template) and sklearn's classification_report.txt."""
    metrics = classification_metrics(labels_N, predicted_N, class_names)
    names = np.asarray(class_names)
    with atomic_dir(out_dir) as tmp:
        with Live(str(tmp), save_dvc_exp=False, dvcyaml=False, report=None) as live:
            for key, value in metrics.items():
                live.log_metric(key, value, plot=False)
            live.log_sklearn_plot(
                "confusion_matrix", names[labels_N], names[predicted_N], name="confusion.json"
            )
        write_text(tmp / "classification_report.txt", report_text(labels_N, predicted_N, names))
    return metrics


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
