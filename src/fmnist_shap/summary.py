"""All explain variants side by side: a ranked markdown table, bar-plot data, and the deletion and
insertion curves of every variant in one file each, for `dvc plots`."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_shap.errors import UserError
from fmnist_shap.explain.registry import SPECS
from fmnist_shap.review.significance import RESAMPLES, SEED, mean_interval
from fmnist_shap.variants import MASKERS, ExplainParams, Variant, selected_variants

METRICS = (
    "deletion_auc",
    "insertion_auc",
    "deletion_auc_random",
    "insertion_auc_random",
    "randomization_spearman",
    "additivity_max_error",
)
SCORE_COLUMNS = ["set", "test_index", "deletion_auc", "insertion_auc"]


@dataclass(frozen=True)
class VariantResult:
    """One explain variant's metrics and its averaged curves."""

    name: str  # its key in reports/explain/metrics.json, e.g. partition-blur
    explainer: str
    masking: str  # the masker for shap explainers, the baseline for gradient ones
    metrics: dict[str, float]
    curves: dict[str, np.ndarray]  # fraction, deletion, insertion, deletion_random, …
    scores: pd.DataFrame  # one row per explained image: set, test_index, the four AUCs

    @property
    def score_N(self) -> np.ndarray:
        """Each image's insertion − deletion AUC."""
        return (self.scores["insertion_auc"] - self.scores["deletion_auc"]).to_numpy()

    @property
    def score(self) -> float:
        """Insertion AUC − deletion AUC: one number where higher is more faithful."""
        return self.metrics["insertion_auc"] - self.metrics["deletion_auc"]


def masking(variant: Variant) -> str:
    """What a variant compares the image with: its masker, or its gradient baseline."""
    if variant.masker is None:
        return SPECS[variant.explainer].baseline or "its own"
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
        variant_dir = folder / "variants" / variant.name
        try:
            metrics = all_metrics[variant.name]
            table = pd.read_csv(variant_dir / "curves.csv")
            curves = {key: table[key].to_numpy(np.float64) for key in table.columns}
            scores = pd.read_csv(variant_dir / "scores.csv")[SCORE_COLUMNS]
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
            VariantResult(
                variant.name, variant.explainer, masking(variant), metrics, curves, scores
            )
        )
    images = {tuple(r.scores["test_index"]) for r in results}
    if len(images) > 1:
        raise UserError(f"{folder}: variants scored different images; run `dvc repro -f explain`")
    return results


def ranked(results: list[VariantResult]) -> list[VariantResult]:
    """Most faithful first (insertion − deletion, higher better); ties by name."""
    return sorted(results, key=lambda r: (-r.score, r.name))


@dataclass(frozen=True)
class Ranked:
    """A variant's place: its faithfulness with 95% intervals over images, and whether it is
    tied with the variant ranked just above (their paired difference's interval holds 0)."""

    result: VariantResult
    rank: int
    tied_with_above: bool
    score: tuple[float, float, float]  # insertion − deletion: mean, low, high
    deletion: tuple[float, float, float]
    insertion: tuple[float, float, float]


def ranked_with_intervals(results: list[VariantResult]) -> list[Ranked]:
    """Most faithful first; a variant whose paired difference to the one above is not beyond
    noise shares its rank. Every variant scored the same images, so differences are paired."""
    rows: list[Ranked] = []
    for i, result in enumerate(ranked(results)):
        tied = False
        if i > 0:
            above = rows[-1].result
            _, low, high = mean_interval(above.score_N - result.score_N, RESAMPLES, SEED)
            tied = low <= 0 <= high
        rank = rows[-1].rank if tied else i + 1
        rows.append(
            Ranked(
                result,
                rank,
                tied,
                mean_interval(result.score_N, RESAMPLES, SEED),
                mean_interval(result.scores["deletion_auc"].to_numpy(), RESAMPLES, SEED),
                mean_interval(result.scores["insertion_auc"].to_numpy(), RESAMPLES, SEED),
            )
        )
    return rows


def with_interval(mean_low_high: tuple[float, float, float]) -> str:
    mean, low, high = mean_low_high
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def summary_markdown(results: list[VariantResult], params: ExplainParams) -> str:
    """The ranked table, with how to read it."""
    table = pd.DataFrame(
        [
            {
                "rank": f"{row.rank}{' (tied)' if row.tied_with_above else ''}",
                "variant": row.result.name,
                "masker / baseline": row.result.masking,
                "deletion AUC ↓ [95% CI]": with_interval(row.deletion),
                "random order's deletion AUC": f"{row.result.metrics['deletion_auc_random']:.3f}",
                "insertion AUC ↑ [95% CI]": with_interval(row.insertion),
                "random order's insertion AUC": (
                    f"{row.result.metrics['insertion_auc_random']:.3f}"
                ),
                "insertion − deletion [95% CI]": with_interval(row.score),
                "randomization ρ": f"{row.result.metrics['randomization_spearman']:.3f}",
                "additivity error": f"{row.result.metrics['additivity_max_error']:.1e}",
            }
            for row in ranked_with_intervals(results)
        ]
    )
    images = len(results[0].scores)
    intro = (
        f"The first explained class of {images} test images ({2 * params.samples_per_set} of the "
        f"tutorial's sets: the top-1 class; {images - 2 * params.samples_per_set} of the review "
        f"set: the true class); removed pixels become the {params.substrate} substrate; "
        f"{params.faithfulness_steps} steps. Deletion AUC: lower is better; insertion AUC: "
        "higher is better; the random order's AUCs are the same curves for a seeded random "
        "pixel order. Intervals: 95% bootstrap over images. *(tied)*: the paired difference to "
        "the variant above has an interval that holds 0, so the order of the two is noise. "
        "Randomization ρ: Spearman correlation of |attributions| between the trained and a "
        "re-initialised model; near 0 is what a faithful explainer gives."
    )
    align = ("right", "left", "left") + ("right",) * (len(table.columns) - 3)
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


def curves_table(results: list[VariantResult]) -> pd.DataFrame:
    """Long table of the averaged curves: one row per (variant, fraction) with its deletion and
    insertion values, and the random order as variant "random" — dvc.yaml's two curve plots
    read it with a template that draws a line per variant, so a new variant needs no plot edit."""
    fraction = results[0].curves["fraction"]
    for result in results:
        if not np.array_equal(result.curves["fraction"], fraction):
            raise UserError(
                f"{result.name}: curves.csv has other steps than the rest; "
                "run `dvc repro -f explain`"
            )
    curves = {r.name: (r.curves["deletion"], r.curves["insertion"]) for r in results}
    curves["random"] = tuple(
        np.mean([r.curves[f"{curve}_random"] for r in results], axis=0)
        for curve in ("deletion", "insertion")
    )
    return pd.concat(
        pd.DataFrame(
            {"variant": name, "fraction": fraction, "deletion": deletion, "insertion": insertion}
        )
        for name, (deletion, insertion) in curves.items()
    )
