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
    plots/<variant>-{correct,wrong}.png    shap image plots (a DVC image plot each)
"""

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import atomic_dir, npz_bytes, write_bytes, write_json
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import UserError
from fmnist_shap.explain import (
    Explanations,
    Samples,
    additivity_error,
    explain_permutation_pair,
    explain_variant,
    image_plot_png,
    samples_csv,
    select_leading_samples,
    values_arrays,
)
from fmnist_shap.faithfulness import faithfulness_curves, randomization_spearman
from fmnist_shap.model import CNN, init_model, load_model, make_predict_fn
from fmnist_shap.variants import ExplainParams, Variant, selected_variants

SETS = ("correct", "wrong")


@dataclass(frozen=True)
class VariantOutputs:
    """Everything the explain stage writes for one variant."""

    variant: Variant
    files: dict[str, bytes]  # file name under variants/<variant>/ → content
    plots: dict[str, bytes]  # set name (correct, wrong) → PNG
    metrics: dict[str, float]
    seconds: float  # wall-clock time of the whole variant (explaining, scoring, plotting)


@dataclass(frozen=True)
class Models:
    """The trained model and the re-initialised one of the randomization check, with their
    numpy predictors."""

    trained: CNN
    predict: Callable[[np.ndarray], np.ndarray]
    randomized: CNN
    predict_randomized: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def build(cls, model: CNN, params: ExplainParams) -> "Models":
        randomized = init_model(params.random_weights_seed, model.num_classes, model.image_hw)
        return cls(
            model,
            make_predict_fn(model, params.batch_size),
            randomized,
            make_predict_fn(randomized, params.batch_size),
        )


@dataclass(frozen=True)
class Inputs:
    """The explain stage's input files and settings: what every worker loads."""

    test_npz: str
    train_npz: str  # background images of Expected Gradients
    classes_json: str
    model: str
    params: ExplainParams

    def check(self) -> None:
        """Refuse a missing input file before any worker starts."""
        for path, stage in (
            (self.test_npz, "prepare"),
            (self.train_npz, "prepare"),
            (self.classes_json, "prepare"),
            (self.model, "train"),
        ):
            if not Path(path).is_file():
                raise UserError(f"{path}: missing; run `dvc repro {stage}`")


@dataclass(frozen=True)
class Loaded:
    """What a worker loads once and keeps for every variant it computes."""

    models: Models
    samples: Samples
    images_NHW: np.ndarray  # the selected test images
    background_BHW: np.ndarray
    class_names: tuple[str, ...]
    params: ExplainParams

    @classmethod
    def load(cls, inputs: Inputs) -> "Loaded":
        params = inputs.params
        test, class_names = load_split(inputs.test_npz), load_classes(inputs.classes_json)
        models = Models.build(load_model(inputs.model), params)
        samples = select_leading_samples(
            models.predict, test.images_NHW, test.labels_N, params.samples_per_set
        )
        background = load_split(inputs.train_npz).images_NHW
        images = test.images_NHW[samples.test_index_N]
        return cls(models, samples, images, background, class_names, params)


def explain_one(variant: Variant, loaded: Loaded) -> VariantOutputs:
    """One variant: its explanations, the randomization check, faithfulness, plots."""
    start = time.perf_counter()
    models, samples, params = loaded.models, loaded.samples, loaded.params
    images_NHW, background_BHW = loaded.images_NHW, loaded.background_BHW
    if variant.explainer == "permutation":
        explanations, randomized = explain_permutation_pair(
            models.predict, models.predict_randomized, images_NHW, variant.masker, params
        )
    else:
        explanations = explain_variant(
            models.trained,
            models.predict,
            images_NHW,
            variant.explainer,
            variant.masker,
            params,
            background_BHW,
        )
        randomized = explain_variant(
            models.randomized,
            models.predict_randomized,
            images_NHW,
            variant.explainer,
            variant.masker,
            params,
            background_BHW,
            classes_NK=explanations.classes_NK[:, :1],
        )
    top1_N = explanations.classes_NK[:, 0]
    curves = faithfulness_curves(
        models.predict,
        images_NHW,
        explanations.values_NHWK[..., 0],
        top1_N,
        params.substrate,
        params.faithfulness_steps,
        params.seed,
    )
    metrics = {
        "additivity_max_error": additivity_error(explanations, samples.logits_NC),
        "evals_per_image": explanations.evals_per_image,
        **curves.metrics(),
        "randomization_spearman": randomization_spearman(
            explanations.values_NHWK[..., 0], randomized.values_NHWK[..., 0]
        ),
    }
    class_names = loaded.class_names
    plots = _plots(variant, explanations, samples, images_NHW, class_names)
    files = {
        "values.npz": npz_bytes(values_arrays(explanations, samples, images_NHW, class_names)),
        "samples.csv": samples_csv(samples, class_names).encode(),
        "curves.csv": curves.csv().encode(),
    }
    return VariantOutputs(variant, files, plots, metrics, time.perf_counter() - start)


def _plots(
    variant: Variant,
    explanations: Explanations,
    samples: Samples,
    images_NHW: np.ndarray,
    class_names: tuple[str, ...],
) -> dict[str, bytes]:
    rows = {
        "correct": np.flatnonzero(samples.correct_N),
        "wrong": np.flatnonzero(~samples.correct_N),
    }
    return {
        set_name: image_plot_png(
            explanations,
            samples,
            images_NHW,
            class_names,
            rows[set_name],
            f"{variant.label} · {set_name} predictions",
        )
        for set_name in SETS
    }


# A worker process's loaded inputs, or the error loading them raised (re-raised per variant,
# so a bad input reaches the stage as its one-line error, not as a broken pool).
_loaded: Loaded | Exception | None = None


def _load_in_worker(inputs: Inputs) -> None:
    global _loaded
    enable_compilation_cache()  # compiled once on a machine, loaded by every later process
    try:
        _loaded = Loaded.load(inputs)
    except Exception as error:
        _loaded = error


def _explain_in_worker(variant: Variant) -> VariantOutputs:
    if isinstance(_loaded, Exception):
        raise _loaded
    assert _loaded is not None, "the worker's initializer did not run"
    return explain_one(variant, _loaded)


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
        _load_in_worker(inputs)
        for i in order:
            results[i] = _explain_in_worker(variants[i])
            if on_variant is not None:
                on_variant(results[i])
        return [results[i] for i in range(len(variants))]
    # On a GPU, each process would otherwise reserve most of the device's memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # fork and jax's threads do not mix
        initializer=_load_in_worker,
        initargs=(inputs,),
    ) as pool:
        futures = {pool.submit(_explain_in_worker, variants[i]): i for i in order}
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
