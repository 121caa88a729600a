"""The explain stage's whole job: every selected variant, and its outputs.

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
    variants/<variant>/values.npz          attributions, see the README
    variants/<variant>/samples.csv         the explained images and the model's predictions
    variants/<variant>/curves.csv          the deletion/insertion curves
    variants/<variant>/scores.csv          every explained image's deletion/insertion AUCs
    plots/<variant>-{correct,wrong,review}.png   shap image plots (a DVC image plot each)
"""

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import atomic_dir, write_bytes, write_json
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import UserError
from fmnist_shap.variants import ExplainParams, Variant, selected_variants


@dataclass(frozen=True)
class VariantOutputs:
    """Everything the explain stage writes for one variant."""

    variant: Variant
    files: dict[str, bytes]  # file name under variants/<variant>/ → content
    plots: dict[str, bytes]  # set name (correct, wrong) → PNG
    metrics: dict[str, float]
    seconds: float  # wall-clock time of the whole variant (explaining, scoring, plotting)


@dataclass(frozen=True)
class Inputs:
    """The explain stage's input files and settings: what every worker loads."""

    test_npz: str
    train_npz: str  # background images of Expected Gradients
    classes_json: str
    model: str
    params: ExplainParams

    def check(self) -> None:
        """Refuse a missing input file, or settings the data does not allow, before any worker
        starts."""
        for path, stage in (
            (self.test_npz, "prepare"),
            (self.train_npz, "prepare"),
            (self.classes_json, "prepare"),
            (self.model, "train"),
        ):
            if not Path(path).is_file():
                raise UserError(f"{path}: missing; run `dvc repro {stage}`")
        test, classes = load_split(self.test_npz), load_classes(self.classes_json)
        counts = np.bincount(test.labels_N, minlength=len(classes)).tolist()
        train_size = len(load_split(self.train_npz))
        self.params.check_data(test.images_NHW.shape[1:], counts, train_size)


def _load(inputs: Inputs) -> None:
    from fmnist_shap.explain_worker import load_in_worker  # jax and shap: in workers only

    load_in_worker(inputs)


def _explain(variant: Variant) -> VariantOutputs:
    from fmnist_shap.explain_worker import explain_in_worker

    return explain_in_worker(variant)


def expected_cost(variant: Variant) -> int:
    """A rough rank of a variant's time, so the slowest start first and the workers finish
    together: Permutation with an inpaint masker inpaints ~12k images."""
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


def write_outputs(results: list[VariantOutputs], out_dir: str | Path) -> None:
    """The stage's files; each folder replaces the old one only once it is complete."""
    out = Path(out_dir)
    with atomic_dir(out / "variants") as variants_dir, atomic_dir(out / "plots") as plots_dir:
        for result in results:
            for file_name, content in result.files.items():
                write_bytes(variants_dir / result.variant.name / file_name, content)
            for set_name, png in result.plots.items():
                write_bytes(plots_dir / f"{result.variant.name}-{set_name}.png", png)
    write_json(out / "metrics.json", {r.variant.name: r.metrics for r in results})
    # Wall-clock time differs on every run, so it lives apart from the byte-stable metrics.
    write_json(
        out / "timing.json",
        {r.variant.name: {"seconds": round(r.seconds, 3)} for r in results},
    )
