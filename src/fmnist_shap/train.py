"""Training: Adam on softmax cross-entropy, one jitted step per batch, no host sync per step."""

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.model import CNN, batched_logits, init_model, make_forward
from fmnist_shap.params import require


@dataclass(frozen=True)
class TrainParams:
    """Optimiser and schedule for the CNN: params.yaml's `train` section, every key required
    (its values live there only)."""

    lr: float
    lr_schedule: str  # "cosine" (decays to 0 over all steps) or "constant"
    epochs: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        require(self.lr > 0, "train.lr", "must be > 0, e.g. 0.002")
        require(self.lr < 1, "train.lr", "must be < 1, e.g. 0.002")
        require(
            self.lr_schedule in ("cosine", "constant"),
            "train.lr_schedule",
            f"is {self.lr_schedule!r}; use 'cosine' or 'constant'",
        )
        require(self.epochs > 0, "train.epochs", "must be a positive integer, e.g. 4")
        require(self.batch_size > 0, "train.batch_size", "must be a positive integer, e.g. 128")
        require(self.seed >= 0, "train.seed", "must be >= 0")


EVAL_BATCH = 512  # rows per validation call


@dataclass(frozen=True)
class EpochLog:
    """What one epoch reports; `dvclive` writes these as plot data."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float


def make_optimizer(params: TrainParams, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with a constant or cosine-decayed learning rate."""
    if params.lr_schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(params.lr, params.epochs * steps_per_epoch))
    return optax.adam(params.lr)


def cross_entropy(logits_BC: jax.Array, labels_B: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B).mean()


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """The pure step: ((weights, opt_state), (pixels_BHW, labels_B)) → ((weights, opt_state), loss)."""

    def loss_fn(state: nnx.State, pixels_BHW: jax.Array, labels_B: jax.Array) -> jax.Array:
        return cross_entropy(nnx.merge(graphdef, state)(pixels_BHW), labels_B)

    def train_step(carry: tuple, batch: tuple) -> tuple[tuple, jax.Array]:
        state, opt_state = carry
        pixels_BHW, labels_B = batch
        loss, grads = jax.value_and_grad(loss_fn)(state, pixels_BHW, labels_B)
        updates, opt_state = tx.update(grads, opt_state, state)
        return (optax.apply_updates(state, updates), opt_state), loss

    return train_step


def make_jitted_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """Jitted (carry, images_NHW, labels_N, indices_B) → (carry, loss): one step on one batch.

    The whole training set stays on the device; only the batch's indices change per call, and
    the carry's buffers are donated, so a step allocates nothing new. (A `lax.scan` over the
    epoch would avoid the per-step dispatch, but XLA:CPU runs convolutions inside a loop body
    tens of times slower; dispatch is asynchronous, so the Python loop does not wait per step.)
    """
    train_step = make_train_step(graphdef, tx)

    @partial(jax.jit, donate_argnums=0)
    def train_batch(carry: tuple, images_NHW, labels_N, indices_B) -> tuple[tuple, jax.Array]:
        return train_step(carry, (images_NHW[indices_B], labels_N[indices_B]))

    return train_batch


def run_epoch(
    train_batch: Callable,
    carry: tuple,
    images_NHW: jax.Array,
    labels_N: jax.Array,
    batches_SB: np.ndarray,
) -> tuple[tuple, jax.Array]:
    """Every batch of one epoch, with no host sync: returns the carry and the per-step losses."""
    losses = []
    for indices_B in jnp.asarray(batches_SB):
        carry, loss = train_batch(carry, images_NHW, labels_N, indices_B)
        losses.append(loss)
    return carry, jnp.stack(losses)


def epoch_batches(rng: np.random.Generator, n: int, batch_size: int) -> np.ndarray:
    """A fresh permutation cut into full batches (S, B); the remainder waits for a later epoch."""
    steps = n // batch_size
    return rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def fit(
    model: CNN,
    train: Split,
    val: Split,
    params: TrainParams,
    on_epoch: Callable[[EpochLog], None] | None = None,
    progress: bool = True,
) -> list[EpochLog]:
    """Train `model` in place; return one log entry per epoch."""
    if params.batch_size > len(train):
        raise UserError(
            f"params.yaml: train.batch_size={params.batch_size} is larger than the "
            f"{len(train)} training images; lower it"
        )
    steps_per_epoch = len(train) // params.batch_size
    tx = make_optimizer(params, steps_per_epoch)
    graphdef, state = nnx.split(model)
    opt_state = tx.init(state)
    train_batch = make_jitted_train_step(graphdef, tx)
    forward = make_forward(graphdef)
    images, labels = jnp.asarray(train.images_NHW), jnp.asarray(train.labels_N, jnp.int32)
    rng = np.random.default_rng(params.seed)
    history = []
    bar = tqdm(
        range(1, params.epochs + 1),
        desc="train",
        unit="epoch",
        file=sys.stderr,
        disable=not progress,
    )
    for epoch in bar:
        batches = epoch_batches(rng, len(train), params.batch_size)
        (state, opt_state), losses = run_epoch(
            train_batch, (state, opt_state), images, labels, batches
        )
        val_logits = batched_logits(forward, state, val.images_NHW, EVAL_BATCH)
        log = EpochLog(
            epoch=epoch,
            train_loss=float(losses.mean()),
            val_loss=float(
                cross_entropy(jnp.asarray(val_logits), jnp.asarray(val.labels_N, jnp.int32))
            ),
            val_accuracy=float((val_logits.argmax(-1) == val.labels_N).mean()),
        )
        bar.set_postfix(loss=f"{log.train_loss:.4f}", val_acc=f"{log.val_accuracy:.4f}")
        history.append(log)
        if on_epoch is not None:
            on_epoch(log)
    nnx.update(model, state)
    return history


def training_fingerprint() -> str:
    """md5 of the weights after four training steps on fixed synthetic images (~2 s).

    A machine that computes another fingerprint than the one in the committed
    `reports/train/environment.json` would retrain the model to other bits (`make verify`).
    """
    images = np.random.default_rng(0).integers(0, 256, (512, 28, 28), dtype=np.uint8)
    labels = np.arange(512, dtype=np.int64) % 10
    model = init_model(0, 10, (28, 28))
    params = TrainParams(lr=2e-3, lr_schedule="cosine", epochs=1, batch_size=128, seed=0)
    fit(model, Split(images, labels), Split(images[:64], labels[:64]), params, progress=False)
    weights = nnx.to_flat_state(nnx.state(model, nnx.Param))
    data = b"".join(np.asarray(var.get_value()).tobytes() for _, var in weights)
    return hashlib.md5(data).hexdigest()
