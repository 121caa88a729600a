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
from fmnist_shap.variants import Variant, selected_variants


def _load(inputs: Inputs) -> None:
    from fmnist_shap.explain.worker import load_in_worker  # jax and shap: in workers only

    load_in_worker(inputs)


def _explain(variant: Variant) -> VariantOutputs:
    from fmnist_shap.explain.worker import explain_in_worker

    return explain_in_worker(variant)


def expected_cost(variant: Variant) -> int:
    """A rough rank of a variant's time, so the slowest start first and the workers finish
    together: the Keras methods (TensorFlow's import and the twins, then shap on TensorFlow)
    are the slowest, then Permutation with an inpaint masker (~12k images inpainted)."""
    if SPECS[variant.explainer].needs_tensorflow:
        return 4
    inpainting = variant.masker in ("telea", "ns")
    return 2 * (variant.explainer == "permutation" and inpainting) + inpainting


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
    workers = default_workers(len(variants)) if workers is None else workers
    order = sorted(range(len(variants)), key=lambda i: -expected_cost(variants[i]))
    results: dict[int, VariantOutputs] = {}
    if workers == 1:
        _load(inputs)
        for i in order:
            results[i] = _explain(variants[i])
            if on_variant is not None:
                on_variant(results[i])
        return [results[i] for i in range(len(variants))]
    # On a GPU, each process would otherwise reserve most of the device's memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # fork and jax's threads do not mix
        initializer=_load,
        initargs=(inputs,),
    ) as pool:
        futures = {pool.submit(_explain, variants[i]): i for i in order}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_variant is not None:
                on_variant(results[futures[future]])
    return [results[i] for i in range(len(variants))]
