"""All explain variants side by side: a ranked markdown table, bar-plot data, and the deletion and
insertion curves of every variant in one file each, for `dvc plots`."""

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_shap.errors import UserError
from fmnist_shap.variants import ALL_VARIANTS, MASKERS, ExplainParams, Variant, selected_variants

METRICS = (
    "deletion_auc",
    "insertion_auc",
    "deletion_auc_random",
    "insertion_auc_random",
    "randomization_spearman",
    "additivity_max_error",
)
BASELINES = {"integrated_gradients": "black image", "expected_gradients": "training images"}


@dataclass(frozen=True)
class VariantResult:
    """One explain variant's metrics and its averaged curves."""

    name: str  # its key in reports/explain/metrics.json, e.g. partition-blur
    explainer: str
    masking: str  # the masker for shap explainers, the baseline for gradient ones
    metrics: dict[str, float]
    curves: dict[str, np.ndarray]  # fraction, deletion, insertion, deletion_random, …

    @property
    def score(self) -> float:
        """Insertion AUC − deletion AUC: one number where higher is more faithful."""
        return self.metrics["insertion_auc"] - self.metrics["deletion_auc"]


def masking(variant: Variant) -> str:
    """What a variant compares the image with: its masker, or its gradient baseline."""
    if variant.masker is None:
        return BASELINES[variant.explainer]
    return f"{variant.masker} ({MASKERS[variant.masker]})"


def load_results(explain_dir: str | Path, params: ExplainParams) -> list[VariantResult]:
    """Every selected variant's metrics and curves, checked before anything is written."""
    folder = Path(explain_dir)
    try:
        all_metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}/metrics.json: unreadable ({error}); run `dvc repro`") from None
    results = []
    for variant in selected_variants(params):
        curves_file = folder / "variants" / variant.name / "curves.csv"
        try:
            metrics = all_metrics[variant.name]
            rows = list(csv.DictReader(io.StringIO(curves_file.read_text("utf-8"))))
            curves = {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}
        except (OSError, ValueError, IndexError, KeyError) as error:
            raise UserError(
                f"{variant.name}: results missing or unreadable ({error}); run `dvc repro`"
            ) from None
        missing = [key for key in METRICS if key not in metrics]
        if missing:
            raise UserError(
                f"{folder}/metrics.json: {variant.name} lacks {missing[0]}; run `dvc repro -f`"
            )
        results.append(
            VariantResult(variant.name, variant.explainer, masking(variant), metrics, curves)
        )
    return results


def ranked(results: list[VariantResult]) -> list[VariantResult]:
    """Most faithful first (insertion − deletion, higher better); ties by name."""
    return sorted(results, key=lambda r: (-r.score, r.name))


def summary_markdown(results: list[VariantResult], params: ExplainParams) -> str:
    """The ranked table, with how to read it."""
    lines = [
        "# Explanation faithfulness",
        "",
        f"Top-1 class of {2 * params.samples_per_set} test images; removed pixels become the "
        f"{params.substrate} substrate; {params.faithfulness_steps} steps. Deletion AUC: lower is "
        "better; insertion AUC: higher is better; *random* is the same curve for a seeded random "
        "pixel order. Randomization ρ: Spearman correlation of |attributions| between the "
        "trained and a re-initialised model; near 0 is what a faithful explainer gives.",
        "",
        "| rank | variant | explainer | masker / baseline | deletion AUC ↓ | random | "
        "insertion AUC ↑ | random | insertion − deletion | randomization ρ | additivity error |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, result in enumerate(ranked(results), start=1):
        m = result.metrics
        lines.append(
            f"| {rank} | {result.name} | {result.explainer} | {result.masking} | "
            f"{m['deletion_auc']:.3f} | {m['deletion_auc_random']:.3f} | "
            f"{m['insertion_auc']:.3f} | {m['insertion_auc_random']:.3f} | {result.score:.3f} | "
            f"{m['randomization_spearman']:.3f} | {m['additivity_max_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def bars_csv(results: list[VariantResult]) -> str:
    """One row per variant, plus chance, for DVC's bar plots of the two AUCs."""
    rows = ["variant,deletion_auc,insertion_auc"]
    for result in ranked(results):
        rows.append(
            f"{result.name},{result.metrics['deletion_auc']:.4f},"
            f"{result.metrics['insertion_auc']:.4f}"
        )
    chance_deletion = np.mean([r.metrics["deletion_auc_random"] for r in results])
    chance_insertion = np.mean([r.metrics["insertion_auc_random"] for r in results])
    rows.append(f"random,{chance_deletion:.4f},{chance_insertion:.4f}")
    return "\n".join(rows) + "\n"


def curves_csv(results: list[VariantResult], curve: str) -> str:
    """Wide table of one curve kind: fraction, a column for every possible variant (empty where
    params.yaml does not build it, so dvc.yaml's plot definition holds for any selection), and
    chance."""
    fraction = results[0].curves["fraction"]
    for result in results:
        if not np.array_equal(result.curves["fraction"], fraction):
            raise UserError(
                f"{result.name}: curves.csv has other steps than the rest; "
                "run `dvc repro -f explain`"
            )
    chance = np.mean([r.curves[f"{curve}_random"] for r in results], axis=0)
    built = {r.name: r.curves[curve] for r in results}
    every = [variant.name for variant in ALL_VARIANTS]
    columns = {"fraction": fraction} | {name: built.get(name) for name in every}
    columns["random"] = chance
    rows = [",".join(columns)]
    for i in range(len(fraction)):
        rows.append(",".join("" if v is None else _number(v[i]) for v in columns.values()))
    return "\n".join(rows) + "\n"


def _number(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) else "nan"
