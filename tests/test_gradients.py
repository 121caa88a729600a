"""Integrated and Expected Gradients in JAX: completeness, baselines, seeds, the shared outputs."""

import io

import matplotlib.image
import numpy as np
import pytest

from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.explain.base import Context
from fmnist_shap.explain.methods.gradients import (
    ACCELERATOR_IMAGES_PER_CALL,
    expected_gradients,
    images_per_call,
    integrated_gradients,
    make_path_attributions,
)
from fmnist_shap.explain.metrics import additivity_error
from fmnist_shap.explain.plots import image_plot_png
from fmnist_shap.explain.registry import build
from fmnist_shap.explain.selection import SelectedImages, top_classes
from fmnist_shap.variants import ExplainParams
from tests.conftest import repo_params


@pytest.fixture(scope="module")
def images(small_val: Split) -> np.ndarray:
    return small_val.images_NHW[:3]


def completeness_error(values_NHWK, base_NK, logits_NC, classes_NK) -> np.ndarray:
    explained = np.take_along_axis(logits_NC, classes_NK, axis=-1)
    return np.abs(values_NHWK.sum(axis=(1, 2)) + base_NK - explained)


def test_integrated_gradients_completeness(trained_model, predict, images: np.ndarray) -> None:
    logits = predict(images)
    classes = np.argsort(-logits, axis=-1)[:, :3]
    values, base = integrated_gradients(trained_model, images, classes, steps=256)
    assert values.shape == (3, 28, 28, 3) and base.shape == (3, 3)
    # The base value is the black image's logit of each class.
    black = predict(np.zeros((1, 28, 28), np.float32))[0]
    assert np.allclose(base, black[classes], atol=1e-5)
    # Completeness: attributions sum to f(x) − f(black), up to the quadrature error.
    difference = np.abs(np.take_along_axis(logits, classes, axis=-1) - base)
    error = completeness_error(values, base, logits, classes)
    assert np.all(error <= 0.02 * difference + 0.05), (error, difference)
    # More path intervals, smaller error: the sum converges to the difference.
    coarse_values, _ = integrated_gradients(trained_model, images, classes, steps=8)
    assert error.mean() < completeness_error(coarse_values, base, logits, classes).mean()
    # Black pixels are where the input equals the baseline: no attribution.
    assert np.all(values[images == 0] == 0)


def test_expected_gradients_seeded_and_complete_in_expectation(
    trained_model, predict, images: np.ndarray, small_train: Split
) -> None:
    logits = predict(images)
    classes = np.argsort(-logits, axis=-1)[:, :2]
    background = small_train.images_NHW
    index = np.arange(len(images))

    def eg(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return expected_gradients(trained_model, images, classes, background, samples, seed, index)

    a, b, c = eg(64, 0), eg(64, 0), eg(64, 1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # One image's explanation does not depend on the others explained with it.
    alone = expected_gradients(trained_model, images[:1], classes[:1], background, 64, 0, index[:1])
    assert np.array_equal(alone[0][0], a[0][0])
    few = completeness_error(*eg(4, 0), logits, classes)
    many = completeness_error(*eg(1024, 0), logits, classes)
    assert many.mean() < few.mean()
    assert many.mean() < 0.1 * np.abs(logits).max()


def test_explain_gradients_gives_the_shared_explanation_format(
    trained_model, predict, images: np.ndarray, small_train: Split, small_val: Split
) -> None:
    budget = {
        "partition": 3,
        "permutation": 1,
        "integrated_gradients": 64,
        "expected_gradients": 32,
        "gradient": 1,
    }
    params = repo_params("explain", ExplainParams, top_k=3, budget=budget, seed=0)
    logits = predict(images)
    context = Context(trained_model, predict, params, small_train.images_NHW)
    index = np.arange(len(images))
    for name in ("integrated_gradients", "expected_gradients"):
        top = top_classes(logits, 3)
        result = build(name).attribute(context, images, top, index)
        assert np.array_equal(result.classes_NK, np.argsort(-logits, axis=-1)[:, :3])
        assert result.values_NHWK.dtype == np.float32 and np.isfinite(result.values_NHWK).all()
        assert additivity_error(result, logits) < 0.5 * np.abs(logits).max()
        chosen = build(name).attribute(context, images, np.array([[4], [2], [0]]), index)
        assert chosen.classes_NK.tolist() == [[4], [2], [0]]
    samples = SelectedImages(
        np.arange(3), np.array(["correct", "correct", "wrong"]), small_val.labels_N[:3], logits
    )
    png = image_plot_png(
        result, samples, images, tuple(map(str, range(10))), np.arange(2), "gradients"
    )
    assert png[:4] == b"\x89PNG"
    # Title and colour scale sit next to the grid: few blank bands (shap's layout left ~30%).
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    assert (pixels >= 1.0).all(axis=(1, 2)).mean() < 0.2


def test_gradient_explainer_errors(trained_model, predict, images: np.ndarray) -> None:
    context = Context(trained_model, predict, repo_params("explain", ExplainParams))
    with pytest.raises(UserError, match="expected_gradients needs background images"):
        build("expected_gradients").attribute(context, images, np.zeros((3, 1), int), np.arange(3))
    budget = {
        "partition": 3,
        "permutation": 1,
        "integrated_gradients": 0,
        "expected_gradients": 8,
        "gradient": 1,
    }
    with pytest.raises(
        UserError, match="explain.budget.integrated_gradients is 0; the minimum is 1"
    ):
        repo_params("explain", ExplainParams, budget=budget)
    with pytest.raises(UserError, match="unknown explainer 'deep'"):
        repo_params("explain", ExplainParams, gradient_explainers=("deep",))


def test_path_gradients_of_the_requested_classes_match_finite_differences(
    trained_model, images: np.ndarray
) -> None:
    """One path point at α = 1 from a zero baseline gives x · ∇f_c(x): compare ∇f_c with
    central differences of the model's own logits, for the classes asked for, in their order."""
    image = images[0].astype(np.float32)
    classes = np.array([7, 2])
    attribute = make_path_attributions(trained_model)
    attributions, _ = attribute(
        image, np.zeros((1, *image.shape), np.float32), np.ones(1), np.ones(1), classes
    )
    pixels = [(r, c) for r, c in zip(*np.nonzero(image > 30), strict=True)][::37][:6]
    assert len(pixels) >= 4
    step = 0.5  # pixel units (the model divides by 255); ReLU nets are piecewise linear
    for row, col in pixels:
        plus, minus = image.copy(), image.copy()
        plus[row, col] += step
        minus[row, col] -= step
        logits = np.asarray(trained_model(np.stack([plus, minus])), np.float64)
        numeric = (logits[0, classes] - logits[1, classes]) / (2 * step)
        analytic = np.asarray(attributions[row, col]) / image[row, col]
        np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-5)


def test_a_class_map_does_not_depend_on_the_other_classes_explained(
    trained_model, images: np.ndarray, small_train: Split
) -> None:
    """The explain stage explains 5 classes, `global` the true one: the shared class's map must
    be the same bits (the weighted sum over path points is reduced per class, not as one
    K-batched contraction, whose blocking changed the last bits with K)."""
    five = np.array([[3, 1, 4, 5, 9]] * len(images))
    index = np.arange(len(images))
    ig5, _ = integrated_gradients(trained_model, images, five, steps=16)
    ig1, _ = integrated_gradients(trained_model, images, five[:, :1], steps=16)
    assert np.array_equal(ig5[..., 0], ig1[..., 0])
    background = small_train.images_NHW
    eg5, _ = expected_gradients(trained_model, images, five, background, 16, 0, index)
    eg1, _ = expected_gradients(trained_model, images, five[:, :1], background, 16, 0, index)
    assert np.array_equal(eg5[..., 0], eg1[..., 0])


def test_images_per_call_is_the_platforms() -> None:
    assert images_per_call("cpu") == 1  # the bits of dvc.lock
    assert images_per_call("gpu") == images_per_call("tpu") == ACCELERATOR_IMAGES_PER_CALL > 1
    assert images_per_call() == 1  # these tests run on the CPU


def test_several_images_per_call_give_the_same_maps(
    trained_model, predict, small_val: Split
) -> None:
    """The accelerators' path (a vmapped chunk of images a call, the last one padded) computes
    what one image a call computes; 5 images in chunks of 2 pad the last chunk."""
    images = small_val.images_NHW[:5]
    classes = top_classes(predict(images), 2)
    index = np.arange(10, 15)
    ig_one, ig_base = integrated_gradients(trained_model, images, classes, 32, per_call=1)
    ig_two, ig_base_two = integrated_gradients(trained_model, images, classes, 32, per_call=2)
    np.testing.assert_allclose(ig_two, ig_one, rtol=1e-4, atol=1e-5)
    assert np.array_equal(ig_base, ig_base_two)
    background = small_val.images_NHW[100:140]
    eg = [
        expected_gradients(trained_model, images, classes, background, 16, 0, index, per_call=n)
        for n in (1, 2)
    ]
    np.testing.assert_allclose(eg[1][0], eg[0][0], rtol=1e-4, atol=1e-5)
    assert np.array_equal(eg[1][1], eg[0][1])
    assert np.abs(ig_one).max() > 1e-3 and np.abs(eg[0][0]).max() > 1e-3
