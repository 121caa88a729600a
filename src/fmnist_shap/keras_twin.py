"""The CNN's Keras 3 twin: shap's DeepExplainer and GradientExplainer (`explain/methods/keras.py`) and
the SavedModel/TFLite export (`export.py`) run on it.

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
import tensorflow as tf

from fmnist_shap.errors import UserError
from fmnist_shap.model import CNN

# Largest |logit difference| to Flax a twin may have; float32 reorderings give ~1e-5.
PARITY_TOLERANCE = 1e-4

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
