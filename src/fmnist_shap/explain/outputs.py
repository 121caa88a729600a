"""What the explain stage writes per variant: values.npz, the tables, the plots, and the
stage's folders (each replaced only once complete)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from fmnist_shap.artifacts import atomic_dir, write_bytes, write_json
from fmnist_shap.explain.base import Attributions
from fmnist_shap.explain.selection import SelectedImages
from fmnist_shap.faithfulness import Curves
from fmnist_shap.variants import Variant


@dataclass(frozen=True)
class VariantOutputs:
    """Everything the explain stage writes for one variant."""

    variant: Variant
    files: dict[str, bytes]  # file name under variants/<variant>/ → content
    plots: dict[str, bytes]  # set name (correct, wrong) → PNG
    metrics: dict[str, float]
    seconds: float  # wall-clock time of the whole variant (explaining, scoring, plotting)


def values_arrays(
    explanations: Attributions,
    samples: SelectedImages,
    images_NHW: np.ndarray,
    class_names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """The explanation as plain arrays for values.npz (no pickle): see docs/explanations.md's field list."""
    return {
        "values": explanations.values_NHWK,  # (N, H, W, K) float32, SHAP values of logits
        "base_values": explanations.base_values_NK,  # (N, K) float32
        "data": images_NHW,  # (N, H, W) uint8, the explained pixels
        "output_classes": explanations.classes_NK.astype(np.int64),  # (N, K) class indices
        "output_names": np.array(
            [[class_names[c] for c in row] for row in explanations.classes_NK]
        ),
        "test_index": samples.test_index_N.astype(np.int64),
        "labels": samples.labels_N.astype(np.int64),
        "set": samples.set_N,  # (N,) correct, wrong (the tutorial's sets) or review
        "correct": samples.predicted_right_N,  # (N,) did the model predict the label
    }


def samples_table(samples: SelectedImages, class_names: tuple[str, ...]) -> pd.DataFrame:
    """One row per explained image: set, test index, actual, predicted, predicted probability."""
    names = np.array(class_names)
    predicted_N = samples.logits_NC.argmax(-1)
    probabilities_NC = softmax(samples.logits_NC, axis=-1)
    return pd.DataFrame(
        {
            "set": samples.set_N,
            "test_index": samples.test_index_N,
            "actual": names[samples.labels_N],
            "predicted": names[predicted_N],
            "probability": probabilities_NC[np.arange(len(predicted_N)), predicted_N],
        }
    )


def image_scores(samples: SelectedImages, curves: Curves) -> pd.DataFrame:
    """Each explained image's deletion/insertion AUCs (and the random order's), with its set and
    test index: the per-image scores behind the metrics' means and their intervals."""
    where = pd.DataFrame({"set": samples.set_N, "test_index": samples.test_index_N})
    return pd.concat([where, curves.scores()], axis=1)


def write_outputs(results: list[VariantOutputs], out_dir: str | Path) -> None:
    """The stage's files; each folder replaces the old one only once it is complete."""
    out = Path(out_dir)
    with atomic_dir(out / "variants") as variants_dir, atomic_dir(out / "plots") as plots_dir:
        for result in results:
            for file_name, content in result.files.items():
                write_bytes(variants_dir / result.variant.name / file_name, content)
            for set_name, png in result.plots.items():
                write_bytes(plots_dir / f"{result.variant.name}-{set_name}.png", png)
    write_json(out / "metrics.json", {r.variant.name: r.metrics for r in results})
    # Wall-clock time differs on every run, so it lives apart from the byte-stable metrics.
    write_json(
        out / "timing.json",
        {r.variant.name: {"seconds": round(r.seconds, 3)} for r in results},
    )
