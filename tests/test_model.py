from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fmnist_shap.artifacts import load_npz, save_npz
from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.model import (
    CHUNK_ROWS,
    chunked_logits,
    init_model,
    load_model,
    make_predict_fn,
    save_model,
)
from tests.conftest import IMAGE_HW, NUM_CLASSES, pixels


def test_logits_shape_and_finite() -> None:
    logits = make_predict_fn(init_model(0, NUM_CLASSES, IMAGE_HW), batch_size=32)(pixels(50))
    assert logits.shape == (50, 10) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


def test_predict_accepts_any_batch_and_a_channel_axis() -> None:
    predict = make_predict_fn(init_model(0, NUM_CLASSES, IMAGE_HW), batch_size=16)
    images = pixels(37)
    full = predict(images)
    assert np.allclose(predict(images[:1]), full[:1], atol=1e-5)
    assert np.allclose(predict(images[..., None].astype(np.float64)), full, atol=1e-5)


def test_seed_fixes_initial_weights() -> None:
    a, b, c = (
        init_model(3, NUM_CLASSES, IMAGE_HW),
        init_model(3, NUM_CLASSES, IMAGE_HW),
        init_model(4, NUM_CLASSES, IMAGE_HW),
    )
    assert jnp.array_equal(a.conv2.kernel.get_value(), b.conv2.kernel.get_value())
    assert not jnp.array_equal(a.conv2.kernel.get_value(), c.conv2.kernel.get_value())


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = init_model(1, NUM_CLASSES, IMAGE_HW)
    save_model(tmp_path / "model.npz", model)
    loaded = load_model(tmp_path / "model.npz")
    images = pixels(20, seed=1)
    assert np.array_equal(make_predict_fn(model, 8)(images), make_predict_fn(loaded, 8)(images))
    original = nnx.state(model, nnx.Param)
    restored = nnx.state(loaded, nnx.Param)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, original, restored))
    # Same weights, same bytes: the file is stable for DVC's hashes.
    save_model(tmp_path / "again.npz", loaded)
    assert (tmp_path / "model.npz").read_bytes() == (tmp_path / "again.npz").read_bytes()


def test_model_file_is_not_a_pickle(tmp_path: Path) -> None:
    save_model(tmp_path / "model.npz", init_model(0, NUM_CLASSES, IMAGE_HW))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        assert "conv1/kernel" in archive.files and "dense/bias" in archive.files


def test_load_rejects_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model missing"):
        load_model(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a model file"):
        load_model(tmp_path / "junk.npz")


@pytest.mark.parametrize("n", [CHUNK_ROWS, 3 * CHUNK_ROWS, 3 * CHUNK_ROWS + 5])
def test_chunked_logits_equal_one_model_call(trained_model, small_val: Split, n: int) -> None:
    # The chunks are a speed device only: every row gets the logits of one plain model call
    # (bit-identical on the machines we measured; the tolerance allows for other CPUs).
    graphdef, state = nnx.split(trained_model)
    images = jnp.asarray(small_val.images_NHW[:n], jnp.float32)
    plain = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, images)
    chunked = jax.jit(lambda s, x: chunked_logits(nnx.merge(graphdef, s), x))(state, images)
    assert chunked.shape == (n, 10)
    np.testing.assert_allclose(chunked, plain, rtol=1e-6, atol=1e-5)
    assert np.array_equal(chunked.argmax(-1), plain.argmax(-1))


def test_chunked_gradients_equal_one_model_call(small_val: Split) -> None:
    # Training differentiates through the chunks: the weight gradients of the mean loss are
    # those of one call over the whole batch, up to float summation order.
    graphdef, state = nnx.split(init_model(0, NUM_CLASSES, IMAGE_HW))
    images = jnp.asarray(small_val.images_NHW[:64])
    labels = jnp.asarray(small_val.labels_N[:64], jnp.int32)

    def loss(apply, s):
        logits = apply(nnx.merge(graphdef, s), images)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

    plain = jax.jit(jax.grad(lambda s: loss(lambda m, x: m(x), s)))(state)
    chunked = jax.jit(jax.grad(lambda s: loss(chunked_logits, s)))(state)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(chunked), strict=True):
        assert np.abs(np.asarray(a)).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_load_refuses_wrong_weight_names_or_shapes(tmp_path: Path) -> None:
    save_model(tmp_path / "model.npz", init_model(0, NUM_CLASSES, IMAGE_HW))
    good = load_npz(tmp_path / "model.npz")

    renamed = {("conv9/kernel" if k == "conv1/kernel" else k): v for k, v in good.items()}
    save_npz(tmp_path / "renamed.npz", renamed)
    with pytest.raises(UserError, match=r"renamed.npz: weights .*conv9/kernel.* do not match"):
        load_model(tmp_path / "renamed.npz")

    reshaped = good | {"dense/bias": np.zeros(7, np.float32)}
    save_npz(tmp_path / "reshaped.npz", reshaped)
    with pytest.raises(UserError, match=r"reshaped.npz: dense/bias has shape \(7,\); retrain"):
        load_model(tmp_path / "reshaped.npz")

    no_shape = {k: v for k, v in good.items() if k != "__shape__"}
    save_npz(tmp_path / "no_shape.npz", no_shape)
    with pytest.raises(UserError, match=r"no_shape.npz: not a model file"):
        load_model(tmp_path / "no_shape.npz")
