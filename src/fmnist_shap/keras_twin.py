"""The CNN's Keras 3 twin, and shap's DeepExplainer and GradientExplainer on it.

shap's two deep-learning explainers take only TensorFlow and PyTorch models. The twin is the
same network layer for layer (`Rescaling(1/255)` for the Flax model's `/ 255`), with the Flax
kernels and biases copied unchanged: both frameworks store a convolution kernel as
(height, width, in, out) and a dense one as (in, out), and flatten channels-last. Nothing is
retrained; `check_parity` refuses a twin whose logits drift from Flax's.

Only the code that needs TensorFlow imports this module (its import costs ~5 s).
"""

import os
import warnings
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import shap
import tensorflow as tf

from fmnist_shap.errors import UserError
from fmnist_shap.model import CNN

# Largest |logit difference| to Flax a twin may have; float32 reorderings give ~1e-5.
PARITY_TOLERANCE = 1e-4
# Largest |Σ DeepSHAP values + base value − twin logit|: DeepLIFT's rescale rule is exact for
# this relu network, so more is a broken explainer, not noise.
DEEP_ADDITIVITY_TOLERANCE = 1e-4

# Identical results on every run: no nondeterministic kernels, and shap's Keras-3 input-name
# notice (harmless: it calls the model on plain tensors) kept out of the stage's log.
tf.config.experimental.enable_op_determinism()
tf.get_logger().setLevel("ERROR")  # shap makes a tf.function per head: retracing notices
warnings.filterwarnings("ignore", message=r"(?s)The structure of `inputs` doesn't match")
warnings.filterwarnings("ignore", message=".*graph support.*removed", category=UserWarning)


def build_twin(model: CNN) -> keras.Model:
    """A Keras `Sequential` computing `model`'s logits from (N, H, W) pixels in [0, 255]."""
    height, width = model.image_hw
    twin = keras.Sequential(
        [
            keras.Input((height, width), name="pixels"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Reshape((height, width, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(model.num_classes, name="dense"),
        ],
        name="fmnist_cnn",
    )
    for name in ("conv1", "conv2", "dense"):
        layer, source = twin.get_layer(name), getattr(model, name)
        weights = [np.asarray(source.kernel.get_value()), np.asarray(source.bias.get_value())]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [w.shape for w in weights] != expected:
            raise UserError(
                f"model: {name} weights have shapes {[w.shape for w in weights]}, the CNN's "
                f"Keras twin needs {expected}; retrain the model (`dvc repro -f train`)"
            )
        layer.set_weights(weights)
    return twin


def twin_logits(twin: keras.Model, images_NHW: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """The twin's logits (N, classes) for pixels in [0, 255], float32."""
    pixels = images_NHW.astype(np.float32)
    chunks = [
        np.asarray(twin(pixels[i : i + batch_size], training=False))
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(chunks)


def check_parity(
    twin: keras.Model, predict: Callable[[np.ndarray], np.ndarray], images_NHW: np.ndarray
) -> float:
    """Largest |twin logit − Flax logit| over `images_NHW`; a one-line error above
    PARITY_TOLERANCE, before any result is built on the twin."""
    difference = float(np.abs(twin_logits(twin, images_NHW) - predict(images_NHW)).max())
    if not difference <= PARITY_TOLERANCE:
        raise UserError(
            f"Keras twin: logits differ from the Flax model's by {difference:.2e} "
            f"(> {PARITY_TOLERANCE:.0e}); the twin's layers no longer match `model.CNN`: "
            "update `keras_twin.build_twin` to the CNN"
        )
    return difference


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
) -> tuple[np.ndarray, np.ndarray]:
    """shap's GradientExplainer (expected gradients with TensorFlow): values (N, H, W, K) and
    base values (N, K), the background's mean logits; additive in expectation only.

    Image n (its position in `images_NHW`) draws its `samples` (background image, α) points
    with seed (seed, n), as Expected Gradients does: the same images give the same values.
    """
    pixels_NHW = images_NHW.astype(np.float32)

    def explain(head: keras.Model, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        explainer = shap.GradientExplainer(head, background_BHW)
        values = []
        for n in rows:
            rseed = int(np.random.SeedSequence([seed, int(n)]).generate_state(1)[0] >> 1)
            image = pixels_NHW[n : n + 1]
            values.append(np.asarray(explainer.shap_values(image, nsamples=samples, rseed=rseed)))
        base_K = twin_logits(head, background_BHW).mean(axis=0)
        return np.concatenate(values).reshape(len(rows), *images_NHW.shape[1:], -1), base_K

    return per_head(twin, classes_NK, explain)
