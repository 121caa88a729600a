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
    every other layer. shap's explainers back-propagate once per model output, and an output's
    values do not depend on the other outputs, so explaining a head costs K passes, not one per
    class of the data set."""
    inputs = keras.Input(twin.input_shape[1:], name="pixels")
    hidden = inputs
    for layer in twin.layers[:-1]:
        hidden = layer(hidden)
    kernel, bias = twin.layers[-1].get_weights()
    dense = keras.layers.Dense(len(classes), name="dense")
    outputs = dense(hidden)
    dense.set_weights([kernel[:, list(classes)], bias[list(classes)]])
    return keras.Model(inputs, outputs)


def per_head(
    twin: keras.Model,
    classes_NK: np.ndarray,
    explain: Callable[[keras.Model, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """`explain(head, rows)` → (values (n, H, W, K), base values (K,)) run once per distinct
    row of `classes_NK` on the images that share it; results back in image order."""
    values: list[np.ndarray] = [np.empty(0)] * len(classes_NK)
    base_values: list[np.ndarray] = [np.empty(0)] * len(classes_NK)
    groups: dict[tuple[int, ...], list[int]] = {}
    for n, row in enumerate(classes_NK.tolist()):
        groups.setdefault(tuple(row), []).append(n)
    for classes, rows in groups.items():
        group_values, base_K = explain(class_head(twin, classes), np.asarray(rows))
        for value, n in zip(group_values, rows, strict=True):
            values[n], base_values[n] = value, base_K
    return np.stack(values).astype(np.float32), np.stack(base_values).astype(np.float32)


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

    return per_head(twin, classes_NK, explain)


def gradient_shap(
    twin: keras.Model,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
    samples: int,
    seed: int,
    test_index_N: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """shap's GradientExplainer (expected gradients with TensorFlow): values (N, H, W, K) and
    base values (N, K), the background's mean logits; additive in expectation only.

    Each image draws its `samples` (background image, α) points with a seed keyed by (seed,
    its test index, the method), as Expected Gradients does.
    """
    pixels_NHW = images_NHW.astype(np.float32)

    def explain(head: keras.Model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        explainer = shap.GradientExplainer(head, background_BHW)
        values = []
        for n in rows:
            rseed = draw_seed(seed, test_index_N[n], "gradient") >> 1  # shap wants < 2**31
            image = pixels_NHW[n : n + 1]
            values.append(np.asarray(explainer.shap_values(image, nsamples=samples, rseed=rseed)))
        base_K = twin_logits(head, background_BHW).mean(axis=0)
        return np.concatenate(values).reshape(len(rows), *images_NHW.shape[1:], -1), base_K

    return per_head(twin, classes_NK, explain)


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
            ),
            classes_NK,
            samples,
        )
