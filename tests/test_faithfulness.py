"""Deletion/insertion AUC, its random baseline, and the randomization rank correlation."""

import numpy as np
import pytest

from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.faithfulness import (
    attribution_order,
    auc,
    faithfulness_curves,
    perturbation_batch,
    random_order,
    randomization_spearman,
    rank_correlation,
    step_counts,
    substrate_image,
)
from fmnist_shap.review.report import faithfulness_table
from fmnist_shap.review.significance import Change
from fmnist_shap.variants import SUBSTRATES, ExplainParams
from tests.conftest import repo_params


@pytest.fixture(scope="module")
def images(small_val: Split) -> np.ndarray:
    return small_val.images_NHW[:6]


def linear_model(seed: int = 0):
    """A linear model whose only non-zero logit is class 0's: p(class 0) rises with w·x.

    Its exact attribution of class 0 is gradient × (input − black) = w ⊙ x, and deleting pixels
    in that order lowers the logit by the largest possible amount at every step."""
    weights_P = np.random.default_rng(seed).normal(0, 0.01, 28 * 28).astype(np.float32)

    def predict(pixels: np.ndarray) -> np.ndarray:
        logit_N = np.asarray(pixels, np.float32).reshape(len(pixels), -1) @ weights_P
        logits = np.zeros((len(pixels), 10), np.float32)
        logits[:, 0] = logit_N
        return logits

    return predict, weights_P.reshape(28, 28)


def test_exact_attribution_beats_random_on_both_curves(images: np.ndarray) -> None:
    linear, weights_HW = linear_model()
    attributions = weights_HW[None] * images.astype(np.float32)
    classes = np.zeros(len(images), np.int64)
    metrics = faithfulness_curves(
        linear, images, attributions, classes, "black", 49, 0, np.arange(len(images))
    ).metrics()
    assert metrics["deletion_auc"] < metrics["deletion_auc_random"] - 0.05
    assert metrics["insertion_auc"] > metrics["insertion_auc_random"] + 0.05
    # The reverse ranking is worse than chance on both.
    reverse = faithfulness_curves(
        linear, images, -attributions, classes, "black", 49, 0, np.arange(len(images))
    )
    assert reverse.metrics()["deletion_auc"] > metrics["deletion_auc_random"]
    assert reverse.metrics()["insertion_auc"] < metrics["insertion_auc_random"]


@pytest.mark.parametrize("substrate", SUBSTRATES)
def test_constant_attribution_is_the_random_baseline(
    predict, images: np.ndarray, substrate: str
) -> None:
    classes = predict(images).argmax(-1)
    constant = np.full(images.shape, 0.5, np.float32)
    curves = faithfulness_curves(
        predict, images, constant, classes, substrate, 16, 3, np.arange(len(images))
    )
    assert np.allclose(curves.deletion_S, curves.deletion_random_S, atol=1e-6)
    assert np.allclose(curves.insertion_S, curves.insertion_random_S, atol=1e-6)
    # The curves start at the image's own probability (deletion) and the substrate's (insertion).
    probabilities = np.exp(predict(images)) / np.exp(predict(images)).sum(-1, keepdims=True)
    assert np.isclose(curves.deletion_S[0], probabilities.max(-1).mean(), atol=1e-5)
    assert np.isclose(curves.insertion_S[-1], probabilities.max(-1).mean(), atol=1e-5)


def test_auc_is_the_trapezoid_area_over_the_fractions() -> None:
    fraction = step_counts(784, 49) / 784
    assert auc(fraction, np.ones_like(fraction)) == pytest.approx(1.0)
    assert auc(fraction, np.zeros_like(fraction)) == 0.0
    assert auc(fraction, fraction) == pytest.approx(0.5)
    # Golden values of two piecewise-linear curves on uneven steps (by hand: trapezoids).
    uneven = np.array([0.0, 0.25, 1.0])
    assert auc(uneven, np.array([1.0, 0.5, 0.0])) == pytest.approx(0.25 * 0.75 + 0.75 * 0.25)
    assert auc(uneven, np.array([0.0, 1.0, 1.0])) == pytest.approx(0.125 + 0.75)


def test_perturbations_change_exactly_the_ranked_pixels(images: np.ndarray) -> None:
    image = images[0]
    substrate = substrate_image(image, "blur")
    order = random_order(784, 0, 0)
    counts = step_counts(784, 49)
    deletion, insertion = perturbation_batch(image, substrate, order, counts)
    assert deletion.shape == insertion.shape == (50, 28, 28)
    assert np.array_equal(deletion[0], image) and np.array_equal(deletion[-1], substrate)
    assert np.array_equal(insertion[0], substrate) and np.array_equal(insertion[-1], image)
    changed = np.flatnonzero((deletion[7] != image).ravel())
    assert set(changed) <= set(order[: counts[7]])  # a pixel equal to its substrate can't change
    kept = order[counts[7] :]
    assert np.array_equal(insertion[7].ravel()[kept], substrate.ravel()[kept])


def test_attribution_order_breaks_ties_by_the_given_order() -> None:
    attribution = np.array([[0.0, 2.0], [2.0, 1.0]])
    assert attribution_order(attribution, np.array([0, 1, 2, 3])).tolist() == [1, 2, 3, 0]
    assert attribution_order(attribution, np.array([3, 2, 1, 0])).tolist() == [2, 1, 3, 0]
    assert attribution_order(np.zeros((2, 2)), np.array([2, 0, 3, 1])).tolist() == [2, 0, 3, 1]


def test_substrates_and_unknown_substrate(images: np.ndarray) -> None:
    assert np.count_nonzero(substrate_image(images[0], "black")) == 0
    blurred = substrate_image(images[0], "blur")
    assert blurred.std() < images[0].std() and blurred.max() > 0
    with pytest.raises(UserError, match="explain.substrate is 'noise'; use one of black, blur"):
        repo_params("explain", ExplainParams, substrate="noise")


def test_rank_correlation() -> None:
    a = np.random.default_rng(0).normal(size=(28, 28))
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, 3 * a + 1) == pytest.approx(1.0)  # ranks only
    assert rank_correlation(a, np.zeros_like(a)) == 0.0
    maps = np.stack([a, a**2])
    assert randomization_spearman(maps, maps) == pytest.approx(1.0)
    assert randomization_spearman(maps, -maps) == pytest.approx(1.0)  # absolute values
    independent = np.random.default_rng(1).normal(size=maps.shape)
    assert abs(randomization_spearman(maps, independent)) < 0.1


def test_pr_report_faithfulness_table() -> None:
    base = b"variant,deletion_auc,insertion_auc\na,0.3000,0.6000\ngone,0.2,0.7\nrandom,0.5,0.5\n"
    head = b"variant,deletion_auc,insertion_auc\na,0.2000,0.7000\nnew,0.1,0.9\nrandom,0.5,0.5\n"

    def cells(table: str) -> dict[str, list[str]]:
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
        return {row[0]: row[1:] for row in rows[2:]}

    paired = {"a": Change(0.3, 0.5, 0.05, 0.35), "random": Change(0.0, 0.0, -0.1, 0.1)}
    rows = cells(faithfulness_table(base, head, paired))
    assert list(rows) == ["a", "new", "random", "gone"]  # head's order, then what head dropped
    assert rows["a"] == [
        "0.300 → 0.200",
        "0.600 → 0.700",
        "+0.200",
        "[+0.050, +0.350] beyond noise",
    ]
    assert rows["new"] == ["0.100 (head only)", "0.900 (head only)", "", ""]
    assert rows["gone"] == ["0.200 (base only)", "0.700 (base only)", "", ""]
    assert rows["random"][-2:] == ["+0.000", "[-0.100, +0.100]"]
    assert list(cells(faithfulness_table(None, head))) == ["a", "new", "random"]
