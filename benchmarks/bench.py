"""Side-by-side benchmark: our training and SHAP against tutorial-style code, in one run.

    python benchmarks/bench.py            # (or: make bench) about 5 minutes on 2 cores

Prints the machine's float32 matmul peak measured in this run, the training step's FLOPs from
XLA's cost analysis, images/s and fraction of peak for both training loops, SHAP seconds per
image (cold start and steady state) for both predict functions, and the ratios.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fmnist_shap.data import CLASS_NAMES
from fmnist_shap.model import CNN, init_model
from fmnist_shap.params import load_params
from fmnist_shap.raw import load_raw
from fmnist_shap.train import (
    TrainParams,
    epoch_batches,
    make_jitted_train_step,
    make_optimizer,
    make_train_step,
    run_epoch,
)
from fmnist_shap.variants import ExplainParams

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES, IMAGE_HW = len(CLASS_NAMES), (28, 28)  # Fashion-MNIST's
# The 8-row chunking the model used until it made the bits depend on the core count: profiled
# against one whole-batch op, to show whether it would still pay on this machine.
OLD_CHUNK_ROWS = 8
PLATFORM_MATH_ON = "--xla_cpu_enable_platform_dependent_math=true"  # XLA's default


def matmul_peak_gflops(n: int = 2048, reps: int = 20) -> float:
    """Best of several timed runs of a jitted n×n float32 matmul."""
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def step_flops(model: CNN, params: TrainParams, images: jax.Array, labels: jax.Array) -> float:
    """FLOPs of one training step, from XLA's cost analysis of the compiled step."""
    graphdef, state = nnx.split(model)
    tx = make_optimizer(params, 100)
    step = jax.jit(make_train_step(graphdef, tx))
    batch = (images[: params.batch_size], labels[: params.batch_size])
    compiled = step.lower((state, tx.init(state)), batch).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def ours_images_per_s(
    params: TrainParams, images: jax.Array, labels: jax.Array, steps: int
) -> float:
    """Our loop: the jitted step over `steps` batches, no host sync (compiled first, then timed)."""
    model = init_model(0, NUM_CLASSES, IMAGE_HW)
    graphdef, state = nnx.split(model)
    tx = make_optimizer(params, steps)
    opt_state = tx.init(state)
    train_batch = make_jitted_train_step(graphdef, tx)
    batches = epoch_batches(np.random.default_rng(0), len(images), params.batch_size)[:steps]
    carry, losses = run_epoch(
        train_batch, (state, opt_state), images, labels, batches[:2]
    )  # compile
    losses.block_until_ready()
    start = time.perf_counter()
    carry, losses = run_epoch(train_batch, carry, images, labels, batches)
    losses.block_until_ready()
    return steps * params.batch_size / (time.perf_counter() - start)


def op_profile(batch: int, chunk: int, peak: float) -> None:
    """Where a training step's time goes: each convolution pass timed alone, with its FLOPs,
    once on the whole batch and once as `batch / chunk` ops of `chunk` rows in one jitted call
    (what `chunked_logits` makes XLA run)."""
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)

    def weight_grad(x, w, g):
        return jax.vjp(lambda w: conv(x, w), w)[1](g)[0]

    def input_grad(x, w, g):
        return jax.vjp(lambda x: conv(x, w), x)[1](g)[0]

    def ops(n: int) -> dict:
        key = jax.random.key(0)
        x1, x2 = jax.random.normal(key, (n, 28, 28, 1)), jax.random.normal(key, (n, 28, 28, 32))
        w1, w2 = jax.random.normal(key, (3, 3, 1, 32)), jax.random.normal(key, (3, 3, 32, 16))
        g1, g2 = jnp.ones((n, 28, 28, 32)), jnp.ones((n, 28, 28, 16))
        return {
            "conv1 forward": (conv, (x1, w1)),
            "conv1 weight grad": (weight_grad, (x1, w1, g1)),
            "conv2 forward": (conv, (x2, w2)),
            "conv2 input grad": (input_grad, (x2, w2, g2)),
            "conv2 weight grad": (weight_grad, (x2, w2, g2)),
            "dense forward+grads": (
                lambda h, w: jax.grad(lambda h, w: (h @ w).sum(), argnums=(0, 1))(h, w),
                (jnp.ones((n, 28 * 28 * 16)), jnp.ones((28 * 28 * 16, 10))),
            ),
        }

    def seconds_and_flops(fn: Callable, args: tuple) -> tuple[float, float]:
        compiled = jax.jit(fn).lower(*args).compile()
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        jax.block_until_ready(compiled(*args))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            best = min(best, time.perf_counter() - start)
        return best, float(analysis["flops"])

    def in_chunks(fn: Callable) -> Callable:
        """fn applied to each `chunk` rows of the batched arguments, in one jitted call."""

        def chunked(*args):
            return [
                fn(*(a[i : i + chunk] if a.shape[0] == batch else a for a in args))
                for i in range(0, batch, chunk)
            ]

        return chunked

    print(
        f"where a step's time goes (XLA:CPU, per batch of {batch}): "
        f"one {batch}-row op | {batch // chunk} {chunk}-row ops in one call (chunked_logits)"
    )
    totals = [0.0, 0.0]
    for name, (fn, args) in ops(batch).items():
        cells = []
        for k, variant in enumerate((fn, in_chunks(fn))):
            seconds, flops = seconds_and_flops(variant, args)
            totals[k] += seconds
            cells.append(f"{seconds * 1e3:6.2f} ms {flops / seconds / 1e9 / peak:6.1%} of peak")
        print(f"  {name:20s} {flops / 1e9:6.3f} GFLOP   " + "   |   ".join(cells))
    print(
        f"  sum of the passes: {totals[0] * 1e3:.1f} ms | {totals[1] * 1e3:.1f} ms "
        f"({totals[0] / totals[1]:.2f}x)"
    )


def tutorial_images_per_s(
    params: TrainParams, images: np.ndarray, labels: np.ndarray, steps: int
) -> float:
    """The tutorial's loop: unjitted value_and_grad per batch, optax update outside jit, same model."""
    model = init_model(0, NUM_CLASSES, IMAGE_HW)
    graphdef, state = nnx.split(model)
    tx = optax.adam(params.lr)
    opt_state = tx.init(state)
    x = jnp.asarray(images, jnp.float32) / 255.0 * 255.0  # the tutorial converts to float arrays

    def loss_fn(state, xb, yb):
        logits = nnx.merge(graphdef, state)(xb)
        return optax.softmax_cross_entropy(logits, jax.nn.one_hot(yb, NUM_CLASSES)).mean()

    def one(i: int):
        nonlocal state, opt_state
        sl = slice(i * params.batch_size, (i + 1) * params.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(state, x[sl], labels[sl])
        updates, opt_state = tx.update(grads, opt_state)
        state = optax.apply_updates(state, updates)
        return loss

    one(0).block_until_ready()  # warm the op caches
    start = time.perf_counter()
    for i in range(steps):
        loss = one(i)
    loss.block_until_ready()
    return steps * params.batch_size / (time.perf_counter() - start)


def shap_child(style: str, explainer: str, n: int, model_path: str, raw_dir: str) -> None:
    """One SHAP measurement, run in a fresh process by `shap_seconds` (`--shap-child`): prints
    the cold first image's seconds, the steady seconds per image and the first values as JSON."""
    from fmnist_shap.explain.methods.shap_image import explain_with_shap
    from fmnist_shap.explain.selection import top_classes
    from fmnist_shap.model import load_model, make_predict_fn

    model = load_model(model_path) if model_path != "-" else init_model(0, NUM_CLASSES, IMAGE_HW)
    _, test = load_raw(raw_dir)
    images = test.images_NHW[: n + 1]
    params = load_params(REPO / "params.yaml", "explain", ExplainParams)
    if style == "ours":
        predict = make_predict_fn(model, params.batch_size)
    else:  # tutorial style: the model called eagerly (unjitted) on shap's batches of 10
        params = dataclasses.replace(params, batch_size=10)

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(model(np.asarray(x, np.float32).reshape(len(x), *IMAGE_HW)))

    blend = style == "ours"  # tutorial style: shap's masker builds each row itself
    classes_NK = top_classes(predict(images.astype(np.float32)), params.top_k)
    index_N = np.arange(len(images))

    def run(rows: slice):
        return explain_with_shap(
            predict, images[rows], explainer, "blur", params, classes_NK[rows], index_N[rows], blend
        )

    start = time.perf_counter()
    run(slice(0, 1))
    cold = time.perf_counter() - start
    result = run(slice(1, None))
    steady = result.seconds_per_image
    print(json.dumps({"cold": cold, "steady": steady, "values": result.values_NHWK[:2].tolist()}))


def train_rate(xla_flags: str, steps: int, raw_dir: str) -> float:
    """Our loop's images/s in a fresh process with `xla_flags` in $XLA_FLAGS."""
    env = os.environ | {"XLA_FLAGS": xla_flags}
    command = [sys.executable, __file__, "--train-child", str(steps), "--raw", raw_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"training measurement failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def shap_seconds(style: str, explainer: str, n: int, model_path: str, raw_dir: str) -> dict:
    """Run one SHAP measurement in a fresh process, so cold start includes every compile."""
    command = [sys.executable, __file__, "--shap-child", style, explainer, str(n), model_path]
    done = subprocess.run([*command, "--raw", raw_dir], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"SHAP measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per loop")
    parser.add_argument("--shap-images", type=int, default=64)
    parser.add_argument("--raw", default=str(REPO / "data" / "raw"))
    parser.add_argument("--model", default=str(REPO / "models" / "model.npz"))
    parser.add_argument("--peak-only", action="store_true", help="print the matmul peak only")
    parser.add_argument("--train-child", type=int, metavar="STEPS", help=argparse.SUPPRESS)
    parser.add_argument(
        "--shap-child",
        nargs=4,
        metavar=("STYLE", "EXPLAINER", "N", "MODEL"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.shap_child:
        style, explainer, n, model = args.shap_child
        shap_child(style, explainer, int(n), model, args.raw)
        return
    if args.train_child:
        params = load_params(REPO / "params.yaml", "train", TrainParams)
        train, _ = load_raw(args.raw)
        images, labels = jnp.asarray(train.images_NHW), jnp.asarray(train.labels_N, jnp.int32)
        print(ours_images_per_s(params, images, labels, args.train_child))
        return
    if args.peak_only:
        print(f"matmul peak {matmul_peak_gflops():.1f} GFLOP/s")
        return
    model_path = args.model if Path(args.model).is_file() else "-"

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    params = load_params(REPO / "params.yaml", "train", TrainParams)
    budget = load_params(REPO / "params.yaml", "explain", ExplainParams).budget
    train, _ = load_raw(args.raw)
    images, labels = jnp.asarray(train.images_NHW), jnp.asarray(train.labels_N, jnp.int32)
    flops = step_flops(init_model(0, NUM_CLASSES, IMAGE_HW), params, images, labels)
    per_image = flops / params.batch_size
    print(
        f"training step (batch {params.batch_size}): {flops / 1e9:.2f} GFLOP "
        f"(XLA cost analysis), {per_image / 1e6:.1f} MFLOP per image"
    )

    # The peak is measured before and after the training loops and the best kept: a shared
    # machine's neighbours can slow any one measurement, and a low peak would flatter the rest.
    peaks = [matmul_peak_gflops()]
    ours = ours_images_per_s(params, images, labels, args.steps)
    tutorial = tutorial_images_per_s(params, train.images_NHW, train.labels_N, args.steps)
    peaks.append(matmul_peak_gflops())
    peak = max(peaks)
    print(
        f"matmul peak (2048² float32, best of this run): {peak:.1f} GFLOP/s "
        f"(before / after the training loops: {peaks[0]:.1f} / {peaks[1]:.1f})"
    )
    for name, rate in (
        ("ours (jitted step, no sync)", ours),
        ("tutorial-style (unjitted)", tutorial),
    ):
        print(
            f"train {name:30s} {rate:8.0f} images/s  {rate * per_image / 1e9:6.1f} GFLOP/s  "
            f"{rate * per_image / 1e9 / peak:6.1%} of peak  "
            f"{len(train.labels_N) * (1 - 5000 / 60000) / rate:5.1f} s/epoch"
        )
    print(f"train speed-up ours / tutorial-style: {ours / tutorial:.2f}x")
    # The XLA settings of src/fmnist_shap/environment.py against XLA's default, each in a fresh
    # process (XLA reads its flags once), timed back to back.
    settings = {"reproducible settings": "", "XLA's default math": PLATFORM_MATH_ON}
    rates = {name: train_rate(flag, args.steps, args.raw) for name, flag in settings.items()}
    cells = ", ".join(f"{name} {rate:.0f} images/s" for name, rate in rates.items())
    ratio = rates["reproducible settings"] / rates["XLA's default math"]
    print(f"train, fresh processes: {cells} ({ratio:.2f}x)")
    op_profile(params.batch_size, OLD_CHUNK_ROWS, peak)

    for explainer in ("partition", "permutation"):
        ours_shap = shap_seconds("ours", explainer, args.shap_images, model_path, args.raw)
        tut_shap = shap_seconds("tutorial", explainer, args.shap_images, model_path, args.raw)
        ours_values, tut_values = np.asarray(ours_shap["values"]), np.asarray(tut_shap["values"])
        delta = np.abs(ours_values - tut_values).max() / np.abs(tut_values).max()
        totals = np.abs(ours_values.sum(axis=(1, 2)) - tut_values.sum(axis=(1, 2))).max()
        evals = budget[explainer]
        print(
            f"shap {explainer} blur ({evals} evals, {args.shap_images} images): "
            f"ours {ours_shap['steady']:.3f} s/image steady, {ours_shap['cold']:.1f} s cold first image; "
            f"tutorial-style {tut_shap['steady']:.3f} s/image steady, {tut_shap['cold']:.1f} s cold; "
            f"speed-up {tut_shap['steady'] / ours_shap['steady']:.2f}x; "
            f"values: max relative difference {delta:.1e}, totals differ by {totals:.1e}"
        )


if __name__ == "__main__":
    main()
