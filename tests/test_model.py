from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fmnist_shap.errors import UserError
from fmnist_shap.model import init_model, load_model, make_predict_fn, save_model
from tests.conftest import pixels


def test_logits_shape_and_finite() -> None:
    logits = make_predict_fn(init_model(0), batch_size=32)(pixels(50))
    assert logits.shape == (50, 10) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


def test_predict_accepts_any_batch_and_a_channel_axis() -> None:
    predict = make_predict_fn(init_model(0), batch_size=16)
    images = pixels(37)
    full = predict(images)
    assert np.allclose(predict(images[:1]), full[:1], atol=1e-5)
    assert np.allclose(predict(images[..., None].astype(np.float64)), full, atol=1e-5)


def test_seed_fixes_initial_weights() -> None:
    a, b, c = init_model(3), init_model(3), init_model(4)
    assert jnp.array_equal(a.conv2.kernel.get_value(), b.conv2.kernel.get_value())
    assert not jnp.array_equal(a.conv2.kernel.get_value(), c.conv2.kernel.get_value())


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = init_model(1)
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
    save_model(tmp_path / "model.npz", init_model(0))
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        assert "conv1/kernel" in archive.files and "dense/bias" in archive.files


def test_load_rejects_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model missing"):
        load_model(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a model file"):
        load_model(tmp_path / "junk.npz")
