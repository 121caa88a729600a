"""The explain and global stages against their floors: the seconds their model evaluations take as
large batches, measured in the same run.

    python benchmarks/floors.py              # (or: make bench-floors) ~4 minutes on 2 cores
    python benchmarks/floors.py --last-run   # the timing files of the last `dvc repro` instead

Runs the explain stage and the global stage (this checkout's prepared data, model and
params.yaml) into a temporary folder, timing each, then measures the jitted CNN's seconds per
row in 512-row calls, forward and forward + input gradient, twice: in a process pinned to one
core, and on every core.

A variant's evaluations are counted from params.yaml and the run's metrics.json
(`evals_per_image`): forward rows (shap's masked images, path points, faithfulness curves) and
backward rows (one per path point and explained class), for the trained model and the
re-initialised one of the randomization check. Two comparisons, each with the speed that
applies:
- a variant's worker-seconds (timing.json) against its floor at one core's speed: the stage runs
  one worker process per core, so each variant has one core while it runs;
- a stage's wall seconds against all its evaluations at every core's speed (the explain stage),
  or at one core's speed divided among its single-threaded Dask workers (global).
The Keras variants run in TensorFlow; their floor is counted in the same JAX units.
Run it on a quiet machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 512
TARGET = 2.0  # worker-seconds at most twice the floor
INPUTS = ["data/prepared/test.npz", "data/prepared/train.npz", "data/prepared/classes.json"]


def seconds_per_row(backward: bool) -> float:
    """Best-of-5 seconds per row of one 512-row call of the trained CNN: forward, or forward +
    input gradient, on the cores this process may use."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import fmnist_shap  # noqa: F401  (the reproducible XLA settings, before jax runs)
    from fmnist_shap.model import load_model

    graphdef, state = nnx.split(load_model(REPO / "models/model.npz"))

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


def row_costs(cores: int | None) -> tuple[float, float]:
    """(forward, forward + input gradient) seconds per row, in a fresh process on `cores` CPUs
    (None: all of them)."""
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); n = int(sys.argv[2])\n"
        "if n: os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])\n"
        "from floors import seconds_per_row\n"
        "print(seconds_per_row(False), seconds_per_row(True))\n"
    )
    cmd = [sys.executable, "-c", script, str(Path(__file__).parent), str(cores or 0)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=stage_env())
    forward, backward = map(float, done.stdout.split()[-2:])
    return forward, backward


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def run_stage(script: str, out: Path) -> float:
    """Wall seconds of one stage's command, as dvc.yaml runs it, writing into `out`."""
    start = time.perf_counter()
    cmd = [sys.executable, f"stages/{script}", *INPUTS, "models/model.npz", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=stage_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def rows(variant, params, evals: float, images: int) -> tuple[float, float]:
    """(forward rows, backward rows) of one explain variant over both models and the curves."""
    k = params.top_k
    curves = 4 * (params.faithfulness_steps + 1) * images  # deletion, insertion, random × 2
    if variant.masker is not None:  # shap: every evaluation a forward row, for both models
        return 2 * evals * images + curves, 0.0
    points = evals  # path points, draws or background images per image
    backward = points * images * (k + 1)  # one per class, and the randomized top-1
    base = points * images * 2 if variant.explainer != "integrated_gradients" else 2 * images
    return base + 2 * points * images + curves, backward


def global_rows(variant, evals: float, images: int) -> tuple[float, float]:
    """(forward rows, backward rows) of one global variant: the true class, trained model."""
    if variant.masker is not None:
        return evals * images, 0.0
    return evals * images, evals * images  # a forward and a gradient row per path point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--last-run", action="store_true", help="reports/*/timing.json instead of running"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from fmnist_shap.global_explain import GlobalParams
    from fmnist_shap.params import load_params
    from fmnist_shap.variants import ALL_VARIANTS, ExplainParams, selected_variants

    params = load_params(REPO / "params.yaml", "explain", ExplainParams)
    with tempfile.TemporaryDirectory(prefix="fmnist-shap-floors-") as tmp:
        if args.last_run:
            explain_dir, global_dir = REPO / "reports/explain", REPO / "reports/global"
            explain_wall = global_wall = None
        else:
            explain_dir, global_dir = Path(tmp) / "explain", Path(tmp) / "global"
            explain_wall = run_stage("explain.py", explain_dir)
            global_wall = run_stage("global.py", global_dir)
        metrics = json.loads((explain_dir / "metrics.json").read_text())
        timing = json.loads((explain_dir / "timing.json").read_text())
        global_timing = json.loads((global_dir / "timing.json").read_text())
        global_metrics = json.loads((global_dir / "metrics.json").read_text())
    one = row_costs(1)
    every = row_costs(None)
    cores = os.cpu_count() or 1
    print(
        f"per row, {BATCH}-row calls: forward {one[0] * 1e6:.0f} µs on 1 core, "
        f"{every[0] * 1e6:.0f} µs on {cores}; forward + input gradient {one[1] * 1e6:.0f} µs, "
        f"{every[1] * 1e6:.0f} µs"
    )
    images = 2 * params.samples_per_set + params.review_per_class * 10
    print(f"explain: {images} images, top {params.top_k} classes, one worker per core")
    print(
        f"{'variant':22s} {'fwd rows':>9s} {'bwd rows':>9s} {'floor s':>8s} {'took s':>7s} "
        "ratio  (worker-seconds vs floor on 1 core)"
    )
    total_fwd = total_bwd = total_took = total_floor = 0.0
    for variant in selected_variants(params):
        fwd_rows, bwd_rows = rows(variant, params, metrics[variant.name]["evals_per_image"], images)
        floor = fwd_rows * one[0] + bwd_rows * one[1]
        took = timing[variant.name]["seconds"]
        total_fwd, total_bwd = total_fwd + fwd_rows, total_bwd + bwd_rows
        total_floor, total_took = total_floor + floor, total_took + took
        verdict = "meets" if took <= TARGET * floor else f"target ≤ {TARGET:.0f}x: missed"
        print(
            f"{variant.name:22s} {fwd_rows:9.0f} {bwd_rows:9.0f} {floor:8.1f} {took:7.1f} "
            f"{took / floor:5.1f}x  {verdict}"
        )
    print(
        f"{'all variants':22s} {total_fwd:9.0f} {total_bwd:9.0f} {total_floor:8.1f} "
        f"{total_took:7.1f} {total_took / total_floor:5.1f}x  (worker-seconds)"
    )
    wall_floor = total_fwd * every[0] + total_bwd * every[1]
    if explain_wall is not None:
        print(
            f"explain stage: {explain_wall:.1f} s wall against {wall_floor:.1f} s, all its rows "
            f"on {cores} cores ({explain_wall / wall_floor:.1f}x; imports, loading and the "
            "workers' start included)"
        )
    global_params = load_params(REPO / "params.yaml", "global", GlobalParams)
    workers = global_timing["workers"]
    g_floor = 0.0
    for name in global_params.variants:
        variant = next(v for v in ALL_VARIANTS if v.name == name)
        fwd_rows, bwd_rows = global_rows(
            variant, metrics[name]["evals_per_image"], global_metrics[name]["images"]
        )
        g_floor += (fwd_rows * one[0] + bwd_rows * one[1]) / workers
    took = global_timing["seconds"]
    wall = f", {global_wall:.1f} s with the cluster's start" if global_wall is not None else ""
    print(
        f"global: {took:.1f} s computing{wall}, against {g_floor:.1f} s, its rows on 1 core "
        f"per worker ({workers} workers): {took / g_floor:.1f}x"
    )


if __name__ == "__main__":
    main()
