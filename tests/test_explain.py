"""SHAP explanations on a small model trained on real images: additivity, masker input, top-k."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import shap

from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.explain.base import Attributions, Context
from fmnist_shap.explain.maskers import BlendingBlurMasker, RememberingImageMasker, forget_image
from fmnist_shap.explain.methods.shap_image import Partition, Permutation, explain_with_shap
from fmnist_shap.explain.metrics import additivity_error
from fmnist_shap.explain.plots import image_plot_png
from fmnist_shap.explain.registry import METHODS, build
from fmnist_shap.explain.selection import (
    SelectedImages,
    select_leading_samples,
    select_samples,
    top_classes,
    with_review_set,
)
from fmnist_shap.model import init_model, make_predict_fn
from fmnist_shap.variants import MASKERS, ExplainParams
from tests.conftest import IMAGE_HW, NUM_CLASSES, repo_params

FAST = repo_params(
    "explain",
    ExplainParams,
    samples_per_set=1,
    top_k=3,
    budget={
        "partition": 100,
        "permutation": 1569,
        "integrated_gradients": 8,
        "expected_gradients": 8,
        "gradient": 8,
    },
    batch_size=256,
    seed=0,
)


@pytest.fixture(scope="module")
def images(small_val: Split) -> np.ndarray:
    return small_val.images_NHW[:2]


def shap_attributions(
    predict,
    images: np.ndarray,
    explainer: str,
    masker: str,
    params: ExplainParams,
    classes_NK: np.ndarray | None = None,
    blend_in_model: bool = True,
) -> Attributions:
    """`explain_with_shap` of the model's top-k classes (or `classes_NK`); the images stand for
    test images 0, 1, …"""
    if classes_NK is None:
        classes_NK = top_classes(predict(images.astype(np.float32)), params.top_k)
    test_index_N = np.arange(len(images))
    return explain_with_shap(
        predict, images, explainer, masker, params, classes_NK, test_index_N, blend_in_model
    )


@pytest.mark.parametrize("masker", list(MASKERS))
def test_partition_additivity(predict, images: np.ndarray, masker: str) -> None:
    result = shap_attributions(predict, images, "partition", masker, FAST)
    assert result.values_NHWK.shape == (2, 28, 28, 3)
    assert additivity_error(result, predict(images)) < 1e-4
    assert np.abs(result.values_NHWK).sum() > 0


@pytest.mark.parametrize("masker", ["blur", "telea"])
def test_permutation_additivity_and_evaluations(predict, images: np.ndarray, masker: str) -> None:
    result = shap_attributions(predict, images, "permutation", masker, FAST)
    assert additivity_error(result, predict(images)) < 1e-4
    # One forward-and-back pass per image, and no extra main-effect evaluations.
    assert result.evals_per_image == 1569


@pytest.mark.parametrize("explainer", ["partition", "permutation"])
def test_top_k_outputs_are_the_models_own(predict, images: np.ndarray, explainer: str) -> None:
    result = shap_attributions(predict, images, explainer, "blur", FAST)
    logits = predict(images)
    assert np.array_equal(result.classes_NK, np.argsort(-logits, axis=-1)[:, :3])
    # The explained outputs really are those classes: values + base equal those logits.
    explained = np.take_along_axis(logits, result.classes_NK, axis=-1)
    assert np.allclose(
        result.values_NHWK.sum(axis=(1, 2)) + result.base_values_NK, explained, atol=1e-4
    )


def test_inpaint_masker_keeps_pixel_values(images: np.ndarray) -> None:
    """With 0-255 input, inpainting keeps unmasked pixels; [0, 1] floats would turn to black."""
    image = images[0][..., None].astype(np.float32)
    mask = np.ones(28 * 28, dtype=bool)
    mask[: 28 * 14] = False  # top half masked (inpainted), bottom half kept
    for name in ("inpaint_telea", "inpaint_ns"):
        masker = shap.maskers.Image(name, (28, 28, 1))
        (masked,) = masker(mask, image)
        masked = masked.reshape(28, 28)
        assert np.array_equal(masked[14:], image[14:, :, 0])  # kept pixels unchanged
        assert masked.max() > 50  # not black
        (scaled,) = masker(mask, image / 255.0)  # the tutorial's input, for contrast
        assert scaled.reshape(28, 28).max() <= 1.0 and np.count_nonzero(scaled) == 0


def test_permutation_is_identical_on_rerun(predict, images: np.ndarray) -> None:
    a = shap_attributions(predict, images, "permutation", "blur", FAST)
    b = shap_attributions(predict, images, "permutation", "blur", FAST)
    assert np.array_equal(a.values_NHWK, b.values_NHWK)
    c = shap_attributions(predict, images, "permutation", "blur", dataclasses.replace(FAST, seed=1))
    assert not np.array_equal(a.values_NHWK, c.values_NHWK)


def test_blur_masker_forgets_the_previous_image(images: np.ndarray) -> None:
    """shap caches the blur under id() of its input, and ids are reused: an array that now
    holds another image must be masked with that image's blur, in both our masker paths."""
    first, second = (image.astype(np.float32).ravel() for image in images[:2])
    mask = np.zeros(28 * 28, dtype=bool)
    expected = shap.maskers.Image("blur(28,28)", (28, 28, 1))(mask, second.copy())[0].ravel()

    reused = first.copy()  # one array object: the same id() for both images
    masker = shap.maskers.Image("blur(28,28)", (28, 28, 1))
    masker(mask, reused)
    reused[:] = second
    forget_image(masker)
    assert np.array_equal(masker(mask, reused)[0].ravel(), expected)

    reused[:] = first
    blending = BlendingBlurMasker("blur(28,28)", (28, 28, 1))
    blending.fill(reused)
    reused[:] = second
    assert np.array_equal(blending.fill(reused), expected)
    assert not np.array_equal(expected, blending.fill(first.copy()))


@pytest.mark.parametrize(("method", "masker"), [(Permutation, "telea"), (Partition, "ns")])
def test_pair_equals_two_separate_explanations(
    trained_model, predict, images: np.ndarray, method, masker: str
) -> None:
    """Both models explained together (Permutation: one pass over both models' logits;
    Partition: image by image through one remembering masker) give what two separate runs
    give, bit for bit."""
    randomized_model = init_model(1, NUM_CLASSES, IMAGE_HW)
    randomized = make_predict_fn(randomized_model, batch_size=256)
    alone = shap_attributions(predict, images, method.explainer, masker, FAST)
    trained, random_top1 = method(masker).attribute_pair(
        Context(trained_model, predict, FAST),
        Context(randomized_model, randomized, FAST),
        images,
        alone.classes_NK,
        np.arange(len(images)),
    )
    alone_random = shap_attributions(
        randomized, images, method.explainer, masker, FAST, classes_NK=alone.classes_NK[:, :1]
    )
    assert np.array_equal(trained.values_NHWK, alone.values_NHWK)
    assert np.array_equal(trained.base_values_NK, alone.base_values_NK)
    assert np.array_equal(trained.classes_NK, alone.classes_NK)
    assert np.array_equal(random_top1.values_NHWK, alone_random.values_NHWK)
    assert np.array_equal(random_top1.base_values_NK, alone_random.base_values_NK)
    assert trained.evals_per_image == alone.evals_per_image
    assert random_top1.evals_per_image == alone_random.evals_per_image
    if method is Permutation:
        assert trained.evals_per_image == 1569


def test_remembering_masker_inpaints_each_coalition_of_an_image_once(
    images: np.ndarray, monkeypatch
) -> None:
    calls = []
    inpaint = shap.maskers.Image.inpaint

    def counted(self, x, mask, method):
        calls.append(method)
        return inpaint(self, x, mask, method)

    monkeypatch.setattr(shap.maskers.Image, "inpaint", counted)
    shaps = shap.maskers.Image("inpaint_telea", (28, 28, 1))
    ours = RememberingImageMasker("inpaint_telea", (28, 28, 1))
    masks = np.random.default_rng(0).random((4, 28 * 28)) < 0.5
    first, second = (image[..., None].astype(np.float32) for image in images)
    for mask in [*masks, *masks]:  # every coalition twice
        assert np.array_equal(ours(mask, first)[0], shaps(mask, first)[0])
    assert len(calls) == 8 + 4  # shap's masker every time, ours once per coalition
    forget_image(ours)  # the next image: nothing of the first one is reused
    assert np.array_equal(ours(masks[0], second)[0], shaps(masks[0], second)[0])
    assert not np.array_equal(ours(masks[0], second)[0], ours(masks[1], second)[0])


def test_leading_samples_are_the_same_as_over_the_whole_set(predict, small_val: Split) -> None:
    everything = select_samples(predict(small_val.images_NHW), small_val.labels_N, 3)
    leading = select_leading_samples(predict, small_val.images_NHW, small_val.labels_N, 3, chunk=16)
    assert np.array_equal(leading.test_index_N, everything.test_index_N)
    assert np.array_equal(leading.logits_NC, everything.logits_NC)
    assert np.array_equal(leading.set_N, everything.set_N)


def test_sample_selection_and_too_many(predict, small_val: Split) -> None:
    logits = predict(small_val.images_NHW)
    samples = select_samples(logits, small_val.labels_N, 3)
    predicted = logits.argmax(-1)
    assert samples.set_N.tolist() == ["correct"] * 3 + ["wrong"] * 3
    assert np.array_equal(
        predicted[samples.test_index_N[:3]], small_val.labels_N[samples.test_index_N[:3]]
    )
    assert np.all(
        predicted[samples.test_index_N[3:]] != small_val.labels_N[samples.test_index_N[3:]]
    )
    assert samples.test_index_N[0] == np.flatnonzero(predicted == small_val.labels_N)[0]
    n_correct = int((predicted == small_val.labels_N).sum())
    n_wrong = len(predicted) - n_correct
    with pytest.raises(
        UserError, match=rf"samples_per_set={n_wrong + 1} but .* only {n_wrong} wrong"
    ):
        select_samples(logits, small_val.labels_N, n_wrong + 1)
    with pytest.raises(UserError, match=rf"only {n_correct} correct test predictions; lower it"):
        select_samples(logits, small_val.labels_N, n_correct + 1)


def test_top_classes_is_stable_on_ties() -> None:
    assert top_classes(np.array([[1.0, 3.0, 3.0, 0.0]]), 3).tolist() == [[1, 2, 0]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"maskers": ("blur", "gauss")}, "unknown masker 'gauss'"),
        ({"explainers": ("kernel",)}, "unknown explainer 'kernel'"),
        (
            {"budget": {**FAST.budget, "partition": 2}},
            "explain.budget.partition is 2; the minimum is 3",
        ),
        ({"budget": {"partition": 500}}, "explain.budget.permutation is missing; add it"),
        ({"budget": {**FAST.budget, "kernel": 9}}, "explain.budget has unknown explainer 'kernel'"),
        ({"top_k": 0}, "explain.top_k is 0; use 1 or more"),
    ],
)
def test_bad_explain_params(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        repo_params("explain", ExplainParams, **overrides)


def test_plot_png_is_byte_stable(
    predict, images: np.ndarray, small_val: Split, tmp_path: Path
) -> None:
    result = shap_attributions(predict, images, "partition", "blur", FAST)
    samples = SelectedImages(
        np.arange(2), np.array(["correct", "wrong"]), small_val.labels_N[:2], predict(images)
    )
    names = tuple(f"class {i}" for i in range(10))
    first = image_plot_png(result, samples, images, names, np.arange(2), "t")
    second = image_plot_png(result, samples, images, names, np.arange(2), "t")
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and first == second
    assert b"Software" not in first
    assert len(first) < 150_000


def test_fast_predict_gives_the_slow_paths_values(
    trained_model, predict, images: np.ndarray
) -> None:
    """Padded, jitted batches change the speed, not the explanation: compare with an eager model.

    Logits of the two paths differ in the last bits (different batch shapes round differently).
    Permutation values follow them within twice the largest logit gap. Partition's tree expansion orders nodes by output
    differences, so last-bit changes can reorder near-ties: its maps are compared through what
    is exact — classes, base values and totals.
    """
    model = trained_model

    def slow(pixels: np.ndarray) -> np.ndarray:  # tutorial style: unjitted, shap's batches as sent
        pixels = np.asarray(pixels, np.float32)
        return np.asarray(model(pixels.reshape(len(pixels), 28, 28)))

    slow_params = dataclasses.replace(FAST, batch_size=10)
    for explainer in ("partition", "permutation"):
        fast_result = shap_attributions(predict, images, explainer, "blur", FAST)
        slow_result = shap_attributions(
            slow, images, explainer, "blur", slow_params, blend_in_model=False
        )
        scale = np.abs(slow_result.values_NHWK).max()
        assert np.array_equal(fast_result.classes_NK, slow_result.classes_NK)
        assert np.allclose(fast_result.base_values_NK, slow_result.base_values_NK, atol=1e-4)
        assert np.allclose(
            fast_result.values_NHWK.sum(axis=(1, 2)),
            slow_result.values_NHWK.sum(axis=(1, 2)),
            atol=1e-4,
        )
        if explainer == "permutation":
            # Each value averages differences of two logits, so it can be off by twice the
            # paths' largest logit gap (another kernel for shap's 10-row eager calls than for
            # our padded >= 64-row ones); more is an explanation change.
            pixels = images.astype(np.float32)
            gap = np.abs(predict(pixels) - slow(pixels)).max()
            error = np.abs(fast_result.values_NHWK - slow_result.values_NHWK).max()
            assert error <= 4 * gap + 1e-6 * scale, (error, gap)


@pytest.mark.parametrize("explainer", ["partition", "permutation"])
def test_blending_in_the_model_gives_shaps_own_values(
    predict, images: np.ndarray, explainer: str
) -> None:
    # The blur masker's rows built in one step per model call are the pixels shap's masker
    # builds row by row, so every value is the same, bit for bit.
    blended = shap_attributions(predict, images, explainer, "blur", FAST)
    per_row = shap_attributions(predict, images, explainer, "blur", FAST, blend_in_model=False)
    assert np.array_equal(blended.values_NHWK, per_row.values_NHWK)
    assert np.array_equal(blended.base_values_NK, per_row.base_values_NK)
    assert blended.evals_per_image == per_row.evals_per_image
    assert np.abs(blended.values_NHWK).sum() > 0


@pytest.mark.parametrize("explainer", ["partition", "permutation"])
def test_given_classes_are_the_ones_explained(predict, images: np.ndarray, explainer: str) -> None:
    """The randomization check explains another model's view of the trained model's top-1."""
    classes = np.array([[7], [3]])
    result = shap_attributions(predict, images, explainer, "blur", FAST, classes)
    assert result.values_NHWK.shape == (2, 28, 28, 1)
    explained = np.take_along_axis(predict(images), classes, axis=-1)
    total = result.values_NHWK.sum(axis=(1, 2)) + result.base_values_NK
    assert np.allclose(total, explained, atol=1e-4)


def test_one_partition_map_is_the_golden_one(predict, images: np.ndarray) -> None:
    """Regression anchor: the top class's Partition · blur map of the first image, with the
    fixture model and the locked releases. Its sum is fixed by additivity; where the value sits
    (a position-weighted sum) and how many distinct values the tree walk made are not."""
    result = shap_attributions(predict, images, "partition", "blur", FAST)
    values_HW = result.values_NHWK[0, :, :, 0].astype(np.float64)
    assert result.classes_NK.tolist() == [[7, 5, 8], [9, 8, 6]]
    np.testing.assert_allclose(
        result.base_values_NK[0], [-2.948673, -1.698475, 0.088008], atol=2e-5
    )
    assert values_HW.sum() == pytest.approx(7.487256, rel=1e-5)
    position_P = np.arange(values_HW.size).reshape(values_HW.shape)
    assert (values_HW * position_P).sum() == pytest.approx(3164.8914, rel=1e-4)
    assert len(np.unique(values_HW)) == 12


def test_review_set_depends_on_the_labels_only_and_puts_the_true_class_first(
    trained_model, small_val: Split
) -> None:
    """Two different models select the identical review set, and explain its true class in
    the first column (then their own top other classes)."""
    labels = small_val.labels_N
    models = [trained_model, init_model(5, NUM_CLASSES, IMAGE_HW)]
    selections = []
    for model in models:
        predict = make_predict_fn(model, batch_size=256)
        first = select_samples(predict(small_val.images_NHW), labels, 1)
        selections.append(with_review_set(first, predict, small_val.images_NHW, labels, 2))
    a, b = selections
    review_a, review_b = a.rows("review"), b.rows("review")
    assert np.array_equal(a.test_index_N[review_a], b.test_index_N[review_b])
    assert len(review_a) == 20 and sorted(labels[a.test_index_N[review_a]]) == sorted(
        np.repeat(np.arange(10), 2)
    )
    for selection in selections:
        classes = selection.explained_classes(4)
        rows = selection.rows("review")
        assert np.array_equal(classes[rows, 0], selection.labels_N[rows])
        assert all(len(set(row)) == 4 for row in classes)  # the true class once
        # the other columns: the model's own ranking of the other classes
        tutorial = selection.rows("correct")
        assert np.array_equal(classes[tutorial], top_classes(selection.logits_NC[tutorial], 4))
    assert not np.array_equal(a.explained_classes(4), b.explained_classes(4))


# Every method without TensorFlow (tests/test_keras.py covers the Keras two), with a masker
# where it takes one.
SEEDED = [
    (s.explainer, "telea" if s.family == "shap" else None)
    for s in METHODS
    if not s.needs_tensorflow
]


@pytest.mark.parametrize(("explainer", "masker"), SEEDED)
def test_an_images_map_does_not_depend_on_the_others_explained_with_it(
    trained_model, predict, small_val: Split, small_train: Split, explainer: str, masker: str | None
) -> None:
    """Draws are keyed by (seed, test index, method): test image 7 explained alone and after
    two other images gives the same bits; under another test index, other draws."""
    context = Context(trained_model, predict, FAST, small_train.images_NHW[:200])
    method = build(explainer, masker)
    images = small_val.images_NHW[:3]
    classes_NK = top_classes(predict(images.astype(np.float32)), FAST.top_k)
    together = method.attribute(context, images, classes_NK, np.array([5, 6, 7]))
    alone = method.attribute(context, images[2:], classes_NK[2:], np.array([7]))
    assert np.array_equal(alone.values_NHWK[0], together.values_NHWK[2])
    assert np.array_equal(alone.base_values_NK[0], together.base_values_NK[2])
    renumbered = method.attribute(context, images[2:], classes_NK[2:], np.array([8]))
    random = explainer in ("permutation", "expected_gradients")  # Partition: ties only
    assert random != np.array_equal(renumbered.values_NHWK[0], alone.values_NHWK[0])
