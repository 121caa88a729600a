"""The tutorial's CNN in Flax NNX, its input path, a fixed-batch predictor, and save/load."""

import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fmnist_shap.artifacts import load_npz, save_npz
from fmnist_shap.errors import UserError


class CNN(nnx.Module):
    """Conv(32, 3×3, SAME) → relu → Conv(16, 3×3, SAME) → relu → flatten → Dense(classes)."""

    def __init__(self, num_classes: int, rngs: nnx.Rngs, image_hw: tuple[int, int]):
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(32, 16, (3, 3), padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(image_hw[0] * image_hw[1] * 16, num_classes, rngs=rngs)
        self.num_classes = num_classes
        self.image_hw = tuple(image_hw)

    def __call__(self, pixels_NHW: jax.Array) -> jax.Array:
        """Logits (N, classes) from raw pixel values in [0, 255] (uint8 or float)."""
        x_NHWC = (pixels_NHW.astype(jnp.float32) / 255.0)[..., None]
        x_NHWC = nnx.relu(self.conv1(x_NHWC))
        x_NHWC = nnx.relu(self.conv2(x_NHWC))
        return self.dense(x_NHWC.reshape(x_NHWC.shape[0], -1))


def init_model(seed: int, num_classes: int, image_hw: tuple[int, int]) -> CNN:
    """A freshly initialised CNN; the seed fixes every weight."""
    return CNN(num_classes, nnx.Rngs(params=seed), image_hw)


def make_forward(graphdef: nnx.GraphDef) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """A jitted pure function (weights, pixels) → logits; weights stay an argument, so one
    compiled function serves every epoch's weights."""

    @jax.jit
    def forward(state: nnx.State, pixels_BHW: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(pixels_BHW)

    return forward


# Fewest rows per model call. On XLA:CPU (jax 0.12) a row's logits are bit-identical in every call
# of 64 rows or more, but calls of 1–32 rows compute them with another kernel whose last bits
# differ; padding every call to at least 64 rows makes an image's logits, and so its SHAP
# values, independent of how many other images share the call (tests/test_model.py).
MIN_ROWS = 64


def padded_size(n: int, batch_size: int) -> int:
    """The smallest multiple of `MIN_ROWS` ≥ n (at least MIN_ROWS), capped at `batch_size`
    rounded up to a multiple of MIN_ROWS: at most 63 padded rows, a handful of shapes."""
    step = MIN_ROWS
    return min(max(-(-n // step), 1), max(-(-batch_size // step), 1)) * step


def batched_logits(
    forward: Callable[[nnx.State, jax.Array], jax.Array],
    state: nnx.State,
    pixels: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """Logits for any number of images, in chunks of at most `batch_size`.

    Each chunk is zero-padded to a multiple of 64 rows (64, 128, 192, …, batch_size), so the
    jitted forward compiles a handful of shapes once instead of once per size shap happens to
    send, and a call with 70 rows pays for 128, not for `batch_size` (powers of two, as before,
    padded such a call to 128 and one of 260 to 512).
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 4:  # shap's maskers work on (N, H, W, 1)
        pixels = pixels[..., 0]
    chunks = []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size]
        padded = np.zeros((padded_size(len(chunk), batch_size), *pixels.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        chunks.append(np.asarray(forward(state, padded))[: len(chunk)])
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def make_predict_fn(model: CNN, batch_size: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """numpy pixels (N, H, W) or (N, H, W, 1) in [0, 255] → numpy logits (N, classes).

    Calls of at most `batch_size` rows are padded to the next multiple of 64 (64, 128, …,
    `batch_size`), longer ones cut into `batch_size` chunks (`batched_logits`): the jitted
    forward compiles a handful of shapes, whatever N the caller (shap, evaluation) passes.
    """
    graphdef, state = nnx.split(model)
    forward = make_forward(graphdef)

    def predict(pixels: np.ndarray) -> np.ndarray:
        logits = batched_logits(forward, state, pixels, batch_size)
        return logits.reshape(len(logits), model.num_classes)

    return predict


def save_model(path: str | os.PathLike, model: CNN) -> None:
    """One .npz of named float32 weights (no pickle), plus the shape hyperparameters."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    arrays = {"/".join(str(k) for k in key): np.asarray(var.get_value()) for key, var in flat}
    arrays["__shape__"] = np.asarray([model.num_classes, *model.image_hw], np.int64)
    save_npz(path, arrays)


def load_model(path: str | os.PathLike) -> CNN:
    """Rebuild the CNN from `save_model`'s file, checking every weight's name and shape."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: model missing; run `dvc repro train`")
    try:
        arrays = load_npz(file)
        num_classes, height, width = (int(v) for v in arrays.pop("__shape__"))
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{file}: not a model file ({error}); run `dvc repro -f train`") from None
    model = init_model(0, num_classes, (height, width))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    expected = {"/".join(str(k) for k in key): var for key, var in flat}
    if set(expected) != set(arrays):
        raise UserError(f"{file}: weights {sorted(arrays)} do not match the CNN; retrain it")
    for name, var in expected.items():
        if var.get_value().shape != arrays[name].shape:
            raise UserError(f"{file}: {name} has shape {arrays[name].shape}; retrain the model")
        var.set_value(jnp.asarray(arrays[name]))
    nnx.update(model, nnx.from_flat_state(flat))
    return model
