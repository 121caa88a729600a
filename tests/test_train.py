import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.model import init_model
from fmnist_shap.train import (
    TrainParams,
    epoch_batches,
    fit,
    make_jitted_train_step,
    make_optimizer,
    run_epoch,
)
from tests.conftest import IMAGE_HW, NUM_CLASSES, repo_params


def _one_epoch(model, split: Split, batches: np.ndarray, params: TrainParams):
    tx = make_optimizer(params, len(batches))
    graphdef, state = nnx.split(model)
    before = jax.tree.map(jnp.copy, state)  # the step donates its input buffers
    train_batch = make_jitted_train_step(graphdef, tx)
    images, labels = jnp.asarray(split.images_NHW), jnp.asarray(split.labels_N, jnp.int32)
    (after, opt_state), losses = run_epoch(
        train_batch, (state, tx.init(state)), images, labels, batches
    )
    return before, (after, opt_state, losses)


def test_one_step_changes_every_parameter(small_train: Split) -> None:
    params = repo_params(
        "train", TrainParams, lr=1e-3, lr_schedule="constant", epochs=1, batch_size=64
    )
    batches = np.arange(64, dtype=np.int32).reshape(1, 64)
    before, (after, opt_state, losses) = _one_epoch(
        init_model(0, NUM_CLASSES, IMAGE_HW), small_train, batches, params
    )
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
    assert all(jax.tree.leaves(changed))
    assert losses.shape == (1,) and bool(jnp.isfinite(losses).all())
    # Adam's step counter went 0 → 1.
    assert int(opt_state[0].count) == 1


def test_loss_decreases_over_steps_on_one_batch(small_train: Split) -> None:
    params = repo_params(
        "train", TrainParams, lr=1e-3, lr_schedule="constant", epochs=1, batch_size=64
    )
    batches = np.tile(np.arange(64, dtype=np.int32), (15, 1))  # the same batch 15 times
    _, (_, _, losses) = _one_epoch(
        init_model(0, NUM_CLASSES, IMAGE_HW), small_train, batches, params
    )
    losses = np.asarray(losses)
    assert losses[-1] < 0.5 * losses[0]
    assert np.all(np.diff(losses[:5]) < 0)


def test_epoch_batches_cover_without_repeats() -> None:
    batches = epoch_batches(np.random.default_rng(0), 1000, 128)
    assert batches.shape == (7, 128)
    assert len(np.unique(batches)) == 7 * 128 and batches.max() < 1000


def test_fit_learns_and_is_deterministic(small_train: Split, small_val: Split) -> None:
    params = repo_params(
        "train", TrainParams, lr=2e-3, lr_schedule="cosine", epochs=2, batch_size=64, seed=0
    )
    logs = []
    model_a = init_model(0, NUM_CLASSES, IMAGE_HW)
    history = fit(model_a, small_train, small_val, params, on_epoch=logs.append)
    assert [h.epoch for h in history] == [1, 2] and logs == history
    assert history[-1].val_accuracy > 0.5  # 10 classes: chance is 0.1
    assert history[-1].train_loss < history[0].train_loss
    model_b = init_model(0, NUM_CLASSES, IMAGE_HW)
    fit(model_b, small_train, small_val, params)
    same = jax.tree.map(
        jnp.array_equal, nnx.state(model_a, nnx.Param), nnx.state(model_b, nnx.Param)
    )
    assert all(jax.tree.leaves(same))


def test_batch_larger_than_data_is_refused(small_train: Split, small_val: Split) -> None:
    params = repo_params("train", TrainParams, batch_size=len(small_train) + 1)
    with pytest.raises(UserError, match="train.batch_size=1025 is larger than the 1024"):
        fit(init_model(0, NUM_CLASSES, IMAGE_HW), small_train, small_val, params)


def test_first_two_losses_are_the_golden_values(small_train: Split) -> None:
    """Regression anchor: the first two steps' losses from seed 0 on the first 128 real images,
    with the locked releases. A change here means training itself changed (model, loss, optimiser,
    batching) — rerun `dvc repro` and update these numbers only if that change was meant."""
    params = repo_params(
        "train", TrainParams, lr=1e-3, lr_schedule="constant", epochs=1, batch_size=64
    )
    batches = np.arange(128, dtype=np.int32).reshape(2, 64)
    _, (_, _, losses) = _one_epoch(
        init_model(0, NUM_CLASSES, IMAGE_HW), small_train, batches, params
    )
    np.testing.assert_allclose(np.asarray(losses), [2.3196754, 2.2438774], rtol=1e-5)
