"""The explain stage's pool: every selected variant, in worker processes (`worker.py`).

The variants run in a few worker processes (one per core), each of which loads the data and
the model and pays the imports, shap's start-up and jax's compilation once for all the variants
it computes; before, each variant was a DVC stage and a process of its own. shap's explainers
are mostly single-threaded Python, so two processes keep two cores busy. Every variant seeds its
own randomness per image, so which worker computes it changes nothing (tested).

Every variant explains the same test images, scores its maps with the same deletion/insertion
curves and random baseline, and repeats its explanation with re-initialised weights for the
randomization check.

Outputs, under the stage's folder:
    metrics.json, timing.json              one entry per variant (DVC flattens them: a column
                                           `partition-blur.deletion_auc` in `dvc exp show`)
    variants/<variant>/values.npz          attributions (docs/explanations.md)
    variants/<variant>/samples.csv         the explained images and the model's predictions
    variants/<variant>/curves.csv          the deletion/insertion curves
    variants/<variant>/scores.csv          every explained image's deletion/insertion AUCs
    plots/<variant>-{correct,wrong,review}.png   shap image plots (a DVC image plot each)
"""

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from fmnist_shap.explain.job import Inputs
from fmnist_shap.explain.outputs import VariantOutputs
from fmnist_shap.explain.registry import SPECS
from fmnist_shap.processes import children_killed_on_error, claim_a_core, die_with_parent
from fmnist_shap.variants import Variant, selected_variants


def _load(inputs: Inputs, parent_pid: int | None = None) -> None:
    """A worker's start: bound to the stage's life, and, before jax or TensorFlow start their
    thread pools, on a core of its own (`claim_a_core`). Unpinned, each worker's XLA and
    TensorFlow size their pools for every core, and two workers on two cores oversubscribe
    them (measured: the stage 100 s unpinned, 87 s pinned; the same bytes)."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
        claim_a_core()
    from fmnist_shap.explain.worker import load_in_worker  # jax and shap: in workers only

    load_in_worker(inputs)


def _explain(variants: tuple[Variant, ...]) -> list[VariantOutputs]:
    from fmnist_shap.explain.worker import explain_in_worker

    return [explain_in_worker(variant) for variant in variants]


# Rough seconds of one variant, measured in a single process (docs/performance.md, 18 images):
# only their order matters, the slowest start first so that the workers finish together.
SECONDS = {"deep": 13, "gradient": 10, "integrated_gradients": 10, "expected_gradients": 11}
SHAP_SECONDS = {"partition": 7, "permutation": 11}  # with the blur masker
INPAINT_SECONDS = {"partition": 1.5, "permutation": 3}  # more with an inpaint masker


def expected_cost(variant: Variant) -> float:
    """A variant's rough seconds in a worker, so the slowest start first."""
    if variant.masker is None:
        return SECONDS.get(variant.explainer, 10)
    inpainting = variant.masker in ("telea", "ns")
    return SHAP_SECONDS[variant.explainer] + inpainting * INPAINT_SECONDS[variant.explainer]


def jobs_of(variants: list[Variant]) -> list[tuple[int, ...]]:
    """The variants (by position) as the pool's jobs, slowest first: every TensorFlow variant
    in one job, so that one worker imports TensorFlow and builds the Keras twins (~3 s), not
    each; every other variant a job of its own."""
    needs_tf = tuple(i for i, v in enumerate(variants) if SPECS[v.explainer].needs_tensorflow)
    jobs = [(i,) for i, v in enumerate(variants) if i not in needs_tf]
    jobs += [needs_tf] if needs_tf else []
    return sorted(jobs, key=lambda job: -sum(expected_cost(variants[i]) for i in job))


def default_workers(variants: int) -> int:
    """One worker per core, no more than there are variants."""
    return max(1, min(os.cpu_count() or 1, variants))


def explain_all(
    inputs: Inputs,
    workers: int | None = None,
    on_variant: Callable[[VariantOutputs], None] | None = None,
) -> list[VariantOutputs]:
    """Every variant params.yaml selects, on the same selected test images, in `workers`
    processes (default: one per core); results in the order of `selected_variants`."""
    inputs.check()
    variants = selected_variants(inputs.params)
    jobs = jobs_of(variants)
    workers = default_workers(len(jobs)) if workers is None else workers
    results: dict[int, VariantOutputs] = {}

    def done(job: tuple[int, ...], outputs: list[VariantOutputs]) -> None:
        for i, result in zip(job, outputs, strict=True):
            results[i] = result
            if on_variant is not None:
                on_variant(result)

    if workers == 1:
        _load(inputs)
        for job in jobs:
            done(job, _explain(tuple(variants[i] for i in job)))
        return [results[i] for i in range(len(variants))]
    # On a GPU, each process would otherwise reserve most of the device's memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    context = multiprocessing.get_context("spawn")  # fork and jax's threads do not mix
    with (
        ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_load,
            initargs=(inputs, os.getpid()),
        ) as pool,
        children_killed_on_error(),
    ):  # Ctrl-C or a failed variant: the others stop now
        futures = {pool.submit(_explain, tuple(variants[i] for i in job)): job for job in jobs}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return [results[i] for i in range(len(variants))]
