"""Each explain variant's floor beside what it took: the seconds its model evaluations would take
as large batches, measured in this run, against its worker-seconds in reports/explain/timing.json.

    python benchmarks/floors.py        # (or: make bench-floors) about a minute on 2 cores

A variant's evaluations are counted from params.yaml and the last run's metrics.json
(`evals_per_image`): forward rows (shap's masked images, path points, faithfulness curves) and
backward rows (one per path point and explained class), for the trained model and the
re-initialised one of the randomization check. The floor times them as 512-row calls of the
jitted CNN (forward) and of its input gradient (forward + one backward), measured here. The
Keras variants run in TensorFlow; their floor is counted in the same JAX units, a lower bound.
Run it on a quiet machine right after `dvc repro` (timing.json is from that run).
"""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import fmnist_shap  # noqa: F401  (the reproducible XLA settings, before jax runs)
from fmnist_shap.model import load_model
from fmnist_shap.params import load_params
from fmnist_shap.variants import ExplainParams, selected_variants

REPO = Path(__file__).resolve().parents[1]
BATCH = 512
TARGET = 2.0  # worker-seconds at most twice the floor


def seconds_per_row(model, backward: bool) -> float:
    """Best-of-5 seconds per row of one 512-row call: forward, or forward + input gradient."""
    graphdef, state = nnx.split(model)

    def logits(pixels):
        return nnx.merge(graphdef, state)(pixels)

    if backward:
        function = jax.jit(lambda x: jax.grad(lambda p: logits(p)[:, 0].sum())(x))
    else:
        function = jax.jit(logits)
    pixels = jnp.asarray(np.random.default_rng(0).integers(0, 256, (BATCH, 28, 28)), jnp.float32)
    jax.block_until_ready(function(pixels))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(function(pixels))
        best = min(best, time.perf_counter() - start)
    return best / BATCH


def rows(variant, params: ExplainParams, evals: float, images: int) -> tuple[float, float]:
    """(forward rows, backward rows) of one variant over both models and the curves."""
    k = params.top_k
    curves = 4 * (params.faithfulness_steps + 1) * images  # deletion, insertion, random × 2
    if variant.masker is not None:  # shap: every evaluation a forward row, for both models
        return 2 * evals * images + curves, 0.0
    points = evals  # path points, draws or background images per image
    backward = points * images * (k + 1)  # one per class, and the randomized top-1
    base = points * images * 2 if variant.explainer != "integrated_gradients" else 2 * images
    return base + 2 * points * images + curves, backward


def main() -> None:
    params = load_params(REPO / "params.yaml", "explain", ExplainParams)
    metrics = json.loads((REPO / "reports/explain/metrics.json").read_text())
    timing = json.loads((REPO / "reports/explain/timing.json").read_text())
    model = load_model(REPO / "models/model.npz")
    forward, backward = seconds_per_row(model, False), seconds_per_row(model, True)
    images = 2 * params.samples_per_set + params.review_per_class * model.num_classes
    print(
        f"per row, {BATCH}-row calls: forward {forward * 1e6:.0f} µs, forward + input gradient "
        f"{backward * 1e6:.0f} µs; {images} images, top {params.top_k} classes"
    )
    print(f"{'variant':22s} {'fwd rows':>9s} {'bwd rows':>9s} {'floor s':>8s} {'took s':>7s} ratio")
    total_floor = total_took = 0.0
    for variant in selected_variants(params):
        evals = metrics[variant.name]["evals_per_image"]
        fwd_rows, bwd_rows = rows(variant, params, evals, images)
        floor = fwd_rows * forward + bwd_rows * backward
        took = timing[variant.name]["seconds"]
        total_floor, total_took = total_floor + floor, total_took + took
        verdict = "meets" if took <= TARGET * floor else f"target ≤ {TARGET:.0f}x: missed"
        print(
            f"{variant.name:22s} {fwd_rows:9.0f} {bwd_rows:9.0f} {floor:8.1f} {took:7.1f} "
            f"{took / floor:5.1f}x  {verdict}"
        )
    print(
        f"{'all variants':22s} {'':9s} {'':9s} {total_floor:8.1f} {total_took:7.1f} "
        f"{total_took / total_floor:5.1f}x  (worker-seconds; 2 workers share them)"
    )


if __name__ == "__main__":
    main()
