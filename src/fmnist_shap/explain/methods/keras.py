"""shap's DeepExplainer (DeepSHAP) and GradientExplainer on the CNN's Keras twin
(`fmnist_shap.keras_twin`): shap's two deep-learning explainers take only TensorFlow and
PyTorch models.

Only code that runs one of these methods imports this module (TensorFlow costs ~5 s).
"""

from collections.abc import Callable

import numpy as np
import shap

from fmnist_shap.explain.base import Attributions, Context, Method, draw_seed, timed

# keras as keras_twin configures it (TensorFlow backend, quiet logs) before its first import
from fmnist_shap.keras_twin import keras, twin_logits

# Largest |Σ DeepSHAP values + base value − twin logit|: DeepLIFT's rescale rule is exact for
# this relu network, so more is a broken explainer, not noise.
DEEP_ADDITIVITY_TOLERANCE = 1e-4


def background_images(train_BHW: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` training images drawn without replacement with `seed`: the explainers'
    background (the reference distribution their values are measured against)."""
    rows = np.sort(np.random.default_rng(seed).choice(len(train_BHW), count, replace=False))
    return train_BHW[rows].astype(np.float32)


def class_head(twin: keras.Model, classes: tuple[int, ...]) -> keras.Model:
    """The twin with only `classes`' logits as outputs (the dense layer's columns), sharing
    every other layer."""
    inputs = keras.Input(twin.input_shape[1:], name="pixels")
    hidden = inputs
    for layer in twin.layers[:-1]:
        hidden = layer(hidden)
    kernel, bias = twin.layers[-1].get_weights()
    dense = keras.layers.Dense(len(classes), name="dense")
    outputs = dense(hidden)
    dense.set_weights([kernel[:, list(classes)], bias[list(classes)]])
    return keras.Model(inputs, outputs)


def per_class(
    twin: keras.Model,
    classes_NK: np.ndarray,
    explain: Callable[[keras.Model, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """`explain(head, rows)` → (values (n, H, W, 1), base value (1,)) run once per explained
    class, on a one-logit head of the twin, for the images that explain that class; results
    back in image and column order.

    shap's explainers back-propagate once per model output and image, and an output's values
    do not depend on the other outputs; a one-class head per class traces and optimises at
    most one TensorFlow graph per class (a head per distinct top-k tuple traced ~k per image)."""
    n, k = classes_NK.shape
    values_NHWK: np.ndarray | None = None
    base_NK = np.zeros((n, k), np.float32)
    for c in np.unique(classes_NK).tolist():
        rows, columns = np.nonzero(classes_NK == c)
        group_values, base = explain(class_head(twin, (c,)), rows)
        if values_NHWK is None:
            values_NHWK = np.zeros((n, *group_values.shape[1:3], k), np.float32)
        values_NHWK[rows, ..., columns] = group_values[..., 0]
        base_NK[rows, columns] = base[0]
    assert values_NHWK is not None, "no class to explain"
    return values_NHWK, base_NK


def deep_shap(
    twin: keras.Model,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """DeepSHAP (DeepLIFT's rescale rule averaged over the background): values (N, H, W, K) in
    logits per input pixel, and base values (N, K): the background's mean logits. Exact
    additivity: values sum to logit − base value (checked)."""
    pixels_NHW = images_NHW.astype(np.float32)

    def explain(head: keras.Model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        explainer = shap.DeepExplainer(head, background_BHW)
        values = np.asarray(explainer.shap_values(pixels_NHW[rows], check_additivity=False))
        base_K = np.asarray(explainer.expected_value, np.float32).reshape(-1)
        values = values.reshape(*values.shape[:3], len(base_K))
        error = np.abs(values.sum(axis=(1, 2)) + base_K - twin_logits(head, pixels_NHW[rows]))
        if not error.max() <= DEEP_ADDITIVITY_TOLERANCE:
            raise RuntimeError(
                f"DeepExplainer: values miss the twin's logits by {error.max():.2e} "
                f"(> {DEEP_ADDITIVITY_TOLERANCE:.0e}); shap's DeepLIFT rules miss a layer"
            )
        return values, base_K

    return per_class(twin, classes_NK, explain)


def gradient_shap(
    twin: keras.Model,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
    samples: int,
    seed: int,
    test_index_N: np.ndarray,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """shap's GradientExplainer (expected gradients with TensorFlow): values (N, H, W, K) and
    base values (N, K), the background's mean logits; additive in expectation only.

    Each image draws its `samples` (background image, α) points with a seed keyed by (seed,
    its test index, the method), as Expected Gradients does; the gradients at those points are
    taken in calls of at most `batch_size` rows (shap's default, 50, made 4 calls an image).
    """
    pixels_NHW = images_NHW.astype(np.float32)

    def explain(head: keras.Model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        explainer = shap.GradientExplainer(head, background_BHW, batch_size=batch_size)
        values = []
        for n in rows:
            rseed = draw_seed(seed, test_index_N[n], "gradient") >> 1  # shap wants < 2**31
            image = pixels_NHW[n : n + 1]
            values.append(np.asarray(explainer.shap_values(image, nsamples=samples, rseed=rseed)))
        base_K = twin_logits(head, background_BHW).mean(axis=0)
        return np.concatenate(values).reshape(len(rows), *images_NHW.shape[1:], -1), base_K

    return per_class(twin, classes_NK, explain)


class DeepShap(Method):
    """shap's DeepExplainer on the twin, against `explain.keras_background` training images."""

    explainer = "deep"

    def attribute(self, context: Context, images_NHW, classes_NK, test_index_N) -> Attributions:
        background = context.twin_background_BHW
        # one DeepLIFT pass against each background image
        return timed(
            lambda: deep_shap(context.twin, images_NHW, classes_NK, background),
            classes_NK,
            len(background),
        )


class GradientShap(Method):
    """shap's GradientExplainer on the twin, `explain.budget.gradient` draws per image."""

    explainer = "gradient"

    def attribute(self, context: Context, images_NHW, classes_NK, test_index_N) -> Attributions:
        params = context.params
        samples = params.budget[self.explainer]
        return timed(
            lambda: gradient_shap(
                context.twin,
                images_NHW,
                classes_NK,
                context.twin_background_BHW,
                samples,
                params.seed,
                test_index_N,
                params.batch_size,
            ),
            classes_NK,
            samples,
        )
