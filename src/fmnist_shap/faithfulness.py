"""Explanation quality as numbers: deletion/insertion AUC against chance, and a randomization
sanity check.

Deletion and insertion (RISE, Petsiuk et al. 2018): pixels are ranked by decreasing attribution
for the explained class. Deletion replaces the top-ranked pixels of the image with the substrate,
a growing fraction at a time; insertion starts from the substrate and puts the image's pixels
back in the same order. After each step the model's softmax probability of the class is
recorded; the area under that curve over the fraction of pixels changed (0 to 1, trapezoid rule)
lies in [0, 1]. A faithful ranking makes the probability fall fast on deletion (low AUC) and
rise fast on insertion (high AUC).

Chance is measured the same way with a random pixel order, seeded per image. Ties in an
attribution map are broken by that same random order, so a map that ranks nothing (a constant)
scores exactly the random baseline rather than the raster order's score.

Randomization (Adebayo et al. 2018): the Spearman rank correlation between |attributions| of the
trained model and of the same architecture with freshly initialised weights, per image. An
explainer that reflects the model decorrelates (near 0); one that mostly reflects the image
(edges, the masker) stays high.
"""

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from scipy.special import softmax
from scipy.stats import spearmanr

CURVES = ("deletion", "insertion", "deletion_random", "insertion_random")


@dataclass(frozen=True)
class Curves:
    """Probability of the explained class after each step, averaged over images: (steps + 1,);
    and every image's own curves, (images, curve, steps + 1), for per-image scores."""

    fraction_S: np.ndarray  # fraction of pixels deleted / inserted, 0 … 1
    deletion_S: np.ndarray
    insertion_S: np.ndarray
    deletion_random_S: np.ndarray
    insertion_random_S: np.ndarray
    per_image_NCS: np.ndarray  # curves in the order of CURVES

    def scores(self) -> pd.DataFrame:
        """Each image's four AUCs (the metrics are their means), one row per image."""
        areas_NC = np.trapezoid(self.per_image_NCS, self.fraction_S, axis=-1)
        return pd.DataFrame({f"{curve}_auc": areas_NC[:, c] for c, curve in enumerate(CURVES)})

    def metrics(self) -> dict[str, float]:
        return {
            "deletion_auc": auc(self.fraction_S, self.deletion_S),
            "insertion_auc": auc(self.fraction_S, self.insertion_S),
            "deletion_auc_random": auc(self.fraction_S, self.deletion_random_S),
            "insertion_auc_random": auc(self.fraction_S, self.insertion_random_S),
        }

    def table(self) -> pd.DataFrame:
        """DVC plot data: one row per step."""
        return pd.DataFrame(
            {
                "fraction": self.fraction_S,
                "deletion": self.deletion_S,
                "insertion": self.insertion_S,
                "deletion_random": self.deletion_random_S,
                "insertion_random": self.insertion_random_S,
            }
        )


def substrate_image(image_HW: np.ndarray, substrate: str) -> np.ndarray:
    """What removed pixels become: black (0, Fashion-MNIST's background), or the image blurred
    with the same 28×28 box filter as shap's blur(28,28) masker."""
    image = image_HW.astype(np.float32)
    if substrate == "black":
        return np.zeros_like(image)
    assert substrate == "blur", f"substrate {substrate!r}: ExplainParams lets through no other"
    height, width = image.shape
    return cv2.blur(image, (width, height))


def auc(fraction_S: np.ndarray, probability_S: np.ndarray) -> float:
    """Trapezoid area under a probability curve over fractions 0 … 1: in [0, 1]."""
    return float(np.trapezoid(probability_S, fraction_S))


def random_order(num_pixels: int, seed: int, test_index: int) -> np.ndarray:
    """A test image's random pixel order, keyed by its test index: the same for every
    explainer and masker, and whichever other images are scored with it."""
    return np.random.default_rng([seed, int(test_index)]).permutation(num_pixels)


def attribution_order(attribution_HW: np.ndarray, tie_break_P: np.ndarray) -> np.ndarray:
    """Flat pixel indices by decreasing attribution; ties in the order `tie_break_P` lists them."""
    position_P = np.empty_like(tie_break_P)
    position_P[tie_break_P] = np.arange(len(tie_break_P))
    return np.lexsort((position_P, -attribution_HW.ravel().astype(np.float64)))


def step_counts(num_pixels: int, steps: int) -> np.ndarray:
    """How many pixels are changed at each of the steps + 1 points, 0 … num_pixels."""
    return np.round(np.linspace(0, num_pixels, steps + 1)).astype(np.int64)


def perturbation_batch(
    image_HW: np.ndarray, substrate_HW: np.ndarray, order_P: np.ndarray, counts_S: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The deletion and the insertion images for one order: two (S, H, W) float32 stacks."""
    image_P = image_HW.astype(np.float32).ravel()
    substrate_P = substrate_HW.astype(np.float32).ravel()
    # rank_P[p] = at which step count pixel p is changed; a pixel is changed once count > rank.
    rank_P = np.empty(len(order_P), np.int64)
    rank_P[order_P] = np.arange(len(order_P))
    changed_SP = counts_S[:, None] > rank_P[None, :]
    deletion_SP = np.where(changed_SP, substrate_P, image_P)
    insertion_SP = np.where(changed_SP, image_P, substrate_P)
    shape = (len(counts_S), *image_HW.shape)
    return deletion_SP.reshape(shape), insertion_SP.reshape(shape)


def faithfulness_curves(
    predict: Callable[[np.ndarray], np.ndarray],
    images_NHW: np.ndarray,
    attributions_NHW: np.ndarray,
    classes_N: np.ndarray,
    substrate: str,
    steps: int,
    seed: int,
    test_index_N: np.ndarray,
) -> Curves:
    """Deletion and insertion curves of `attributions_NHW` (one map per image, for class
    `classes_N[n]`) and of a random order, averaged over images. All perturbed images go
    through `predict` in one call, which batches them for the jitted model."""
    n, height, width = images_NHW.shape
    num_pixels = height * width
    counts_S = step_counts(num_pixels, steps)
    batches = []
    for i in range(n):
        substrate_HW = substrate_image(images_NHW[i], substrate)
        chance_P = random_order(num_pixels, seed, test_index_N[i])
        for order_P in (attribution_order(attributions_NHW[i], chance_P), chance_P):
            batches.extend(perturbation_batch(images_NHW[i], substrate_HW, order_P, counts_S))
    logits = predict(np.concatenate(batches))
    probabilities = softmax(logits, axis=-1).reshape(n, 4, len(counts_S), -1)
    # (image, curve, step): curves are deletion, insertion, random deletion, random insertion.
    explained_NCS = np.take_along_axis(
        probabilities, classes_N[:, None, None, None].astype(np.int64), axis=-1
    )[..., 0]
    mean_CS = explained_NCS.mean(axis=0)
    return Curves(counts_S / num_pixels, *mean_CS, per_image_NCS=explained_NCS)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps (average ranks for ties). A constant map carries no ranking,
    so its correlation with anything is reported as 0."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomization_spearman(attributions_NHW: np.ndarray, randomized_NHW: np.ndarray) -> float:
    """Mean over images of Spearman's rho between |trained| and |randomized-weights| maps."""
    return float(
        np.mean(
            [
                rank_correlation(np.abs(a), np.abs(b))
                for a, b in zip(attributions_NHW, randomized_NHW, strict=True)
            ]
        )
    )
