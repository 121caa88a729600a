"""All explain variants side by side: a ranked markdown table, bar-plot data, and the deletion and
insertion curves of every variant in one file each, for `dvc plots`."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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
            table = pd.read_csv(curves_file)
            curves = {key: table[key].to_numpy(np.float64) for key in table.columns}
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
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
    table = pd.DataFrame(
        [
            {
                "rank": rank,
                "variant": r.name,
                "explainer": r.explainer,
                "masker / baseline": r.masking,
                "deletion AUC ↓": f"{r.metrics['deletion_auc']:.3f}",
                "random order's deletion AUC": f"{r.metrics['deletion_auc_random']:.3f}",
                "insertion AUC ↑": f"{r.metrics['insertion_auc']:.3f}",
                "random order's insertion AUC": f"{r.metrics['insertion_auc_random']:.3f}",
                "insertion − deletion": f"{r.score:.3f}",
                "randomization ρ": f"{r.metrics['randomization_spearman']:.3f}",
                "additivity error": f"{r.metrics['additivity_max_error']:.1e}",
            }
            for rank, r in enumerate(ranked(results), start=1)
        ]
    )
    intro = (
        f"Top-1 class of {2 * params.samples_per_set} test images; removed pixels become the "
        f"{params.substrate} substrate; {params.faithfulness_steps} steps. Deletion AUC: lower is "
        "better; insertion AUC: higher is better; the random order's AUCs are the same curves "
        "for a seeded random pixel order. Randomization ρ: Spearman correlation of |attributions| between the "
        "trained and a re-initialised model; near 0 is what a faithful explainer gives."
    )
    align = ("right", "left", "left", "left") + ("right",) * (len(table.columns) - 4)
    markdown = table.to_markdown(index=False, colalign=align, disable_numparse=True)
    return f"# Explanation faithfulness\n\n{intro}\n\n{markdown}\n"


def bars_table(results: list[VariantResult]) -> pd.DataFrame:
    """One row per variant, most faithful first, plus chance: DVC's bar plots of the two AUCs."""
    rows = [
        (r.name, r.metrics["deletion_auc"], r.metrics["insertion_auc"]) for r in ranked(results)
    ]
    chance = [
        np.mean([r.metrics[f"{curve}_auc_random"] for r in results])
        for curve in ("deletion", "insertion")
    ]
    rows.append(("random", *chance))
    return pd.DataFrame(rows, columns=["variant", "deletion_auc", "insertion_auc"])


def curves_table(results: list[VariantResult], curve: str) -> pd.DataFrame:
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
    built = {r.name: r.curves[curve] for r in results}
    table = pd.DataFrame({"fraction": fraction})
    for variant in ALL_VARIANTS:
        table[variant.name] = built.get(variant.name, np.nan)
    table["random"] = np.mean([r.curves[f"{curve}_random"] for r in results], axis=0)
    return table
