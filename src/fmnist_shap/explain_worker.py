"""The explain stage's work inside one worker process: load once, then explain variants.

Kept apart from `explain_all`, which coordinates the workers, so that the coordinating process
imports neither jax nor shap (a few seconds saved on every run).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fmnist_shap.artifacts import csv_bytes, npz_bytes
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.explain import (
    SETS,
    Attributions,
    SelectedImages,
    additivity_error,
    explain_permutation_pair,
    explain_variant,
    image_plot_png,
    samples_table,
    select_leading_samples,
    values_arrays,
    with_review_set,
)
from fmnist_shap.explain_all import Inputs, VariantOutputs
from fmnist_shap.faithfulness import Curves, faithfulness_curves, randomization_spearman
from fmnist_shap.model import CNN, init_model, load_model, make_predict_fn
from fmnist_shap.variants import KERAS_EXPLAINERS, ExplainParams, Variant


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
class Loaded:
    """What a worker loads once and keeps for every variant it computes."""

    models: Models
    samples: SelectedImages
    images_NHW: np.ndarray  # the selected test images
    background_BHW: np.ndarray
    class_names: tuple[str, ...]
    params: ExplainParams

    @classmethod
    def load(cls, inputs: Inputs) -> "Loaded":
        params = inputs.params
        test, class_names = load_split(inputs.test_npz), load_classes(inputs.classes_json)
        models = Models.build(load_model(inputs.model), params)
        samples = with_review_set(
            select_leading_samples(
                models.predict, test.images_NHW, test.labels_N, params.samples_per_set
            ),
            models.predict,
            test.images_NHW,
            test.labels_N,
            params.review_per_class,
        )
        background = load_split(inputs.train_npz).images_NHW
        images = test.images_NHW[samples.test_index_N]
        return cls(models, samples, images, background, class_names, params)


@dataclass(frozen=True)
class Twins:
    """Keras twins of the trained and the re-initialised model, and their background images:
    built by the first Keras variant a worker computes (TensorFlow is imported only then)."""

    trained: Any
    randomized: Any
    background_BHW: np.ndarray

    @classmethod
    def build(cls, loaded: Loaded) -> "Twins":
        from fmnist_shap.keras_twin import background_images, build_twin, check_parity

        params, models = loaded.params, loaded.models
        background = background_images(loaded.background_BHW, params.keras_background, params.seed)
        twins = []
        for model, predict in (
            (models.trained, models.predict),
            (models.randomized, models.predict_randomized),
        ):
            twin = build_twin(model)
            check_parity(twin, predict, np.concatenate([loaded.images_NHW, background]))
            twins.append(twin)
        return cls(twins[0], twins[1], background)


# The twins of the inputs a worker loaded, built on first use (a process that loads other
# inputs, as a single-process run may, builds new ones).
_twins: tuple[Loaded, Twins] | None = None


def twins_of(loaded: Loaded) -> Twins:
    global _twins
    if _twins is None or _twins[0] is not loaded:
        _twins = (loaded, Twins.build(loaded))
    return _twins[1]


def explain_keras(
    twin: Any,
    images_NHW: np.ndarray,
    explainer_id: str,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
    params: ExplainParams,
) -> Attributions:
    """One Keras explainer (`deep` or `gradient`) on the twin, for each image's `classes_NK`."""
    from fmnist_shap.keras_twin import deep_shap, gradient_shap

    start = time.perf_counter()
    if explainer_id == "deep":
        values, base_values = deep_shap(twin, images_NHW, classes_NK, background_BHW)
        evals = len(background_BHW)  # one DeepLIFT pass against each background image
    else:
        samples = params.budget["gradient"]
        values, base_values = gradient_shap(
            twin, images_NHW, classes_NK, background_BHW, samples, params.seed
        )
        evals = samples
    return Attributions(
        values_NHWK=values.astype(np.float32),
        base_values_NK=base_values.astype(np.float32),
        classes_NK=classes_NK,
        evals_per_image=float(evals),
        seconds_per_image=(time.perf_counter() - start) / len(images_NHW),
    )


def explain_keras_pair(
    variant: Variant, loaded: Loaded, classes_NK: np.ndarray
) -> tuple[Attributions, Attributions]:
    twins, images, params = twins_of(loaded), loaded.images_NHW, loaded.params
    background = twins.background_BHW
    trained = explain_keras(
        twins.trained, images, variant.explainer, classes_NK, background, params
    )
    randomized = explain_keras(
        twins.randomized, images, variant.explainer, classes_NK[:, :1], background, params
    )
    return trained, randomized


def explain_pair(variant: Variant, loaded: Loaded) -> tuple[Attributions, Attributions]:
    """The variant's explanations of the trained model's classes (`explained_classes`: the
    top-k, or for the review set the true class first), and of the first of them with
    re-initialised weights (the randomization check)."""
    models, params = loaded.models, loaded.params
    classes_NK = loaded.samples.explained_classes(params.top_k)
    if variant.explainer in KERAS_EXPLAINERS:
        return explain_keras_pair(variant, loaded, classes_NK)
    if variant.explainer == "permutation":
        return explain_permutation_pair(
            models.predict,
            models.predict_randomized,
            loaded.images_NHW,
            variant.masker,
            params,
            classes_NK,
        )
    trained = explain_variant(
        models.trained,
        models.predict,
        loaded.images_NHW,
        variant.explainer,
        variant.masker,
        params,
        loaded.background_BHW,
        classes_NK=classes_NK,
    )
    randomized = explain_variant(
        models.randomized,
        models.predict_randomized,
        loaded.images_NHW,
        variant.explainer,
        variant.masker,
        params,
        loaded.background_BHW,
        classes_NK=trained.classes_NK[:, :1],
    )
    return trained, randomized


def explain_one(variant: Variant, loaded: Loaded) -> VariantOutputs:
    """One variant: its explanations, the randomization check, faithfulness, plots."""
    start = time.perf_counter()
    models, samples, params = loaded.models, loaded.samples, loaded.params
    images_NHW = loaded.images_NHW
    explanations, randomized = explain_pair(variant, loaded)
    curves = faithfulness_curves(  # of the first explained class: top-1, or the true class
        models.predict,
        images_NHW,
        explanations.values_NHWK[..., 0],
        explanations.classes_NK[:, 0],
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
        "samples.csv": csv_bytes(samples_table(samples, class_names), "%.4f"),
        "curves.csv": csv_bytes(curves.table(), "%.6f"),
        "scores.csv": csv_bytes(image_scores(samples, curves), "%.6f"),
    }
    return VariantOutputs(variant, files, plots, metrics, time.perf_counter() - start)


def image_scores(samples: SelectedImages, curves: Curves) -> pd.DataFrame:
    """Each explained image's deletion/insertion AUCs (and the random order's), with its set and
    test index: the per-image scores behind the metrics' means and their intervals."""
    where = pd.DataFrame({"set": samples.set_N, "test_index": samples.test_index_N})
    return pd.concat([where, curves.scores()], axis=1)


def _plots(
    variant: Variant,
    explanations: Attributions,
    samples: SelectedImages,
    images_NHW: np.ndarray,
    class_names: tuple[str, ...],
) -> dict[str, bytes]:
    titles = {
        "correct": "correct predictions",
        "wrong": "wrong predictions",
        "review": "review set (first column: the true class)",
    }
    return {
        set_name: image_plot_png(
            explanations,
            samples,
            images_NHW,
            class_names,
            samples.rows(set_name),
            f"{variant.label} · {titles[set_name]}",
        )
        for set_name in SETS
    }


# A worker process's loaded inputs, or the error loading them raised (re-raised per variant,
# so a bad input reaches the stage as its one-line error, not as a broken pool).
_loaded: Loaded | Exception | None = None


def load_in_worker(inputs: Inputs) -> None:
    global _loaded
    enable_compilation_cache()  # compiled once on a machine, loaded by every later process
    try:
        _loaded = Loaded.load(inputs)
    except Exception as error:
        _loaded = error


def explain_in_worker(variant: Variant) -> VariantOutputs:
    if isinstance(_loaded, Exception):
        raise _loaded
    assert _loaded is not None, "the worker's initializer did not run"
    return explain_one(variant, _loaded)
