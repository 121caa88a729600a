"""The interface every attribution method implements, and what it returns.

What is explained: the model's logits (pre-softmax scores), for given classes of each image.
Logits make SHAP's efficiency identity exact and easy to check:
sum(values[n, :, :, j]) + base_values[n, j] == logits(image_n)[class j].
"""

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Attributions:
    """Attributions of each image's explained classes, in logits, and what they cost."""

    values_NHWK: np.ndarray
    base_values_NK: np.ndarray
    classes_NK: np.ndarray  # class index of each explained output, best first
    evals_per_image: float
    seconds_per_image: float

    def columns(self, columns: slice, classes_NK: np.ndarray) -> "Attributions":
        """The same attributions restricted to some of their classes."""
        return Attributions(
            self.values_NHWK[..., columns],
            self.base_values_NK[:, columns],
            classes_NK,
            self.evals_per_image,
            self.seconds_per_image,
        )


@dataclass(frozen=True)
class Context:
    """What a method may use: one model (trained or re-initialised), its numpy predictor, the
    explain settings, the training images (background of Expected Gradients), and the Keras
    twin with its background (the TensorFlow methods only; built by whoever runs them)."""

    model: Any  # fmnist_shap.model.CNN
    predict: Callable[[np.ndarray], np.ndarray]
    params: Any  # fmnist_shap.variants.ExplainParams (not imported: it reads the registry)
    background_BHW: np.ndarray | None = None
    twin: Any = None  # keras.Model
    twin_background_BHW: np.ndarray | None = None


def draw_seed(seed: int, test_index: int, method: str) -> int:
    """The 32-bit seed of one image's draws: keyed by (explain.seed, test index, method), so
    the draw does not depend on which other images are explained with it, or where."""
    key = np.random.SeedSequence([seed, int(test_index), zlib.crc32(method.encode())])
    return int(key.generate_state(1)[0])


class Method:
    """An attribution method. Subclasses set `explainer` (its id in params.yaml) and implement
    `attribute`; one instance per variant (a shap method is built with its masker)."""

    explainer: ClassVar[str]
    scale_label: ClassVar[str] = "SHAP value (logit)"  # what its values are, for plot scales

    def __init__(self, masker: str | None = None):
        self.masker = masker

    def attribute(
        self,
        context: Context,
        images_NHW: np.ndarray,
        classes_NK: np.ndarray,
        test_index_N: np.ndarray,
    ) -> Attributions:
        """Attributions of `classes_NK` of each image; draws keyed by `test_index_N`."""
        raise NotImplementedError

    def attribute_pair(
        self,
        trained: Context,
        randomized: Context,
        images_NHW: np.ndarray,
        classes_NK: np.ndarray,
        test_index_N: np.ndarray,
    ) -> tuple[Attributions, Attributions]:
        """The trained model's attributions, and the re-initialised model's of the first
        class (the randomization check). A method may share work between the two."""
        first = self.attribute(trained, images_NHW, classes_NK, test_index_N)
        second = self.attribute(randomized, images_NHW, classes_NK[:, :1], test_index_N)
        return first, second


def timed(
    compute: Callable[[], tuple[np.ndarray, np.ndarray]],
    classes_NK: np.ndarray,
    evals_per_image: float,
) -> Attributions:
    """`compute()`'s (values, base values) as float32 Attributions, with its seconds per image."""
    start = time.perf_counter()
    values, base_values = compute()
    return Attributions(
        values_NHWK=values.astype(np.float32),
        base_values_NK=base_values.astype(np.float32),
        classes_NK=classes_NK,
        evals_per_image=float(evals_per_image),
        seconds_per_image=(time.perf_counter() - start) / len(classes_NK),
    )
