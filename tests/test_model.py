import json
import os
import platform
import shutil
import subprocess
import sys
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
    MIN_ROWS,
    init_model,
    load_model,
    make_predict_fn,
    save_model,
)
from tests.conftest import IMAGE_HW, NUM_CLASSES, REPO, pixels, subprocess_env


def test_predict_gives_the_models_own_logits() -> None:
    """The numpy predictor (padding, chunks of `batch_size`, jit) returns what the model itself
    computes on the same pixels, as float32."""
    model = init_model(0, NUM_CLASSES, IMAGE_HW)
    images = pixels(50)
    logits = make_predict_fn(model, batch_size=32)(images)
    direct = np.asarray(model(jnp.asarray(images, jnp.float32)))
    assert logits.shape == (50, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() > 0.1  # not all zero


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


def test_a_rows_logits_do_not_depend_on_the_call_size(trained_model, small_val: Split) -> None:
    # An image's logits (and so its SHAP values) must not depend on how many other images
    # share the model call: calls of 1–32 rows would use another XLA:CPU kernel (MIN_ROWS).
    # Calls are padded to multiples of 64 rows (150 rows: one call of 192).
    images = small_val.images_NHW[:200]
    together = make_predict_fn(trained_model, batch_size=512)(images)
    for n, batch_size in (
        (1, 512),
        (7, 512),
        (MIN_ROWS + 3, 512),
        (150, 512),
        (200, 16),
        (200, 128),
    ):
        alone = make_predict_fn(trained_model, batch_size=batch_size)(images[:n])
        assert np.array_equal(alone, together[:n]), (n, batch_size)


def fingerprint_on(cores: list[int]) -> str:
    """`training_fingerprint()` in a fresh process pinned to `cores`."""
    script = "from fmnist_shap.train import training_fingerprint; print(training_fingerprint())"
    cmd = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-c", script]
    env = subprocess_env(REPO / "src")
    env.pop("XLA_FLAGS", None)  # as in a user's shell: the package sets its own
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_training_bits_are_those_of_dvc_lock_on_any_core_count() -> None:
    """The machine that made dvc.lock recorded its fingerprint; this one must compute the same
    on one core and on all of them (the removed 8-row chunking made the bits depend on the
    thread count; platform-dependent math made them depend on the CPU)."""
    if platform.machine() not in ("x86_64", "AMD64") or not shutil.which("taskset"):
        pytest.skip("the reference bits are x86-64's; taskset pins the cores")
    recorded = json.loads((REPO / "reports/train/environment.json").read_text())
    cores = sorted(os.sched_getaffinity(0))
    digests = {fingerprint_on([cores[0]]), fingerprint_on(cores)}
    assert digests == {recorded["training_fingerprint"]}, (
        f"this CPU trains other bits than the one that made dvc.lock ({recorded['cpu']}): {digests}; "
        "`dvc pull` the outputs instead of retraining (docs/environment.md: the shared remote)"
    )


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
