"""The explain stage's work inside one worker process: load once, then explain variants.

Kept apart from `runner`, which coordinates the workers, so that the coordinating process
imports neither jax nor shap (a few seconds saved on every run).
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from fmnist_shap.artifacts import csv_bytes, npz_bytes
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.explain.base import Attributions, Context, Method
from fmnist_shap.explain.job import Inputs
from fmnist_shap.explain.metrics import additivity_error
from fmnist_shap.explain.outputs import (
    VariantOutputs,
    image_scores,
    samples_table,
    values_arrays,
)
from fmnist_shap.explain.plots import image_plot_png
from fmnist_shap.explain.registry import SPECS, build
from fmnist_shap.explain.selection import (
    SETS,
    SelectedImages,
    select_leading_samples,
    with_review_set,
)
from fmnist_shap.faithfulness import faithfulness_curves, randomization_spearman
from fmnist_shap.model import CNN, init_model, load_model, make_predict_fn
from fmnist_shap.variants import ExplainParams, Variant


def context_of(model: CNN, params: ExplainParams, background_BHW: np.ndarray | None) -> Context:
    """A model with its numpy predictor, as methods use it."""
    return Context(model, make_predict_fn(model, params.batch_size), params, background_BHW)


@dataclass(frozen=True)
class Loaded:
    """What a worker loads once and keeps for every variant it computes: the trained model and
    the re-initialised one of the randomization check, the selected images, the background."""

    trained: Context
    randomized: Context
    samples: SelectedImages
    images_NHW: np.ndarray  # the selected test images
    class_names: tuple[str, ...]
    params: ExplainParams

    @classmethod
    def load(cls, inputs: Inputs) -> "Loaded":
        params = inputs.params
        test, class_names = load_split(inputs.test_npz), load_classes(inputs.classes_json)
        model = load_model(inputs.model)
        background = load_split(inputs.train_npz).images_NHW
        trained = context_of(model, params, background)
        randomized_model = init_model(params.random_weights_seed, model.num_classes, model.image_hw)
        randomized = context_of(randomized_model, params, background)
        samples = with_review_set(
            select_leading_samples(
                trained.predict, test.images_NHW, test.labels_N, params.samples_per_set
            ),
            trained.predict,
            test.images_NHW,
            test.labels_N,
            params.review_per_class,
        )
        images = test.images_NHW[samples.test_index_N]
        return cls(trained, randomized, samples, images, class_names, params)


def with_twins(loaded: Loaded) -> tuple[Context, Context]:
    """Both contexts with their Keras twins (TensorFlow is imported only here), each checked
    against its Flax model, and the twins' background: `explain.keras_background` training
    images drawn with `explain.seed`."""
    from fmnist_shap.explain.methods.keras import background_images
    from fmnist_shap.keras_twin import build_twin, check_parity

    trained, randomized, params = loaded.trained, loaded.randomized, loaded.params
    background = background_images(trained.background_BHW, params.keras_background, params.seed)
    contexts = []
    for context in (trained, randomized):
        twin = build_twin(context.model)
        check_parity(twin, context.predict, np.concatenate([loaded.images_NHW, background]))
        contexts.append(replace(context, twin=twin, twin_background_BHW=background))
    return contexts[0], contexts[1]


# The twins of the inputs a worker loaded, built on first use (a process that loads other
# inputs, as a single-process run may, builds new ones).
_twins: tuple[Loaded, tuple[Context, Context]] | None = None


def contexts_for(variant: Variant, loaded: Loaded) -> tuple[Context, Context]:
    """The trained and re-initialised contexts a variant runs on."""
    global _twins
    if not SPECS[variant.explainer].needs_tensorflow:
        return loaded.trained, loaded.randomized
    if _twins is None or _twins[0] is not loaded:
        _twins = (loaded, with_twins(loaded))
    return _twins[1]


def explain_pair(
    method: Method, variant: Variant, loaded: Loaded
) -> tuple[Attributions, Attributions]:
    """The variant's explanations of the trained model's classes (`explained_classes`: the
    top-k, or for the review set the true class first), and of the first of them with
    re-initialised weights (the randomization check)."""
    trained, randomized = contexts_for(variant, loaded)
    classes_NK = loaded.samples.explained_classes(loaded.params.top_k)
    return method.attribute_pair(
        trained, randomized, loaded.images_NHW, classes_NK, loaded.samples.test_index_N
    )


def explain_one(variant: Variant, loaded: Loaded) -> VariantOutputs:
    """One variant: its explanations, the randomization check, faithfulness, plots."""
    start = time.perf_counter()
    samples, params, images_NHW = loaded.samples, loaded.params, loaded.images_NHW
    method = build(variant.explainer, variant.masker)
    explanations, randomized = explain_pair(method, variant, loaded)
    curves = faithfulness_curves(  # of the first explained class: top-1, or the true class
        loaded.trained.predict,
        images_NHW,
        explanations.values_NHWK[..., 0],
        explanations.classes_NK[:, 0],
        params.substrate,
        params.faithfulness_steps,
        params.seed,
        samples.test_index_N,
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
    plots = {
        set_name: image_plot_png(
            explanations,
            samples,
            images_NHW,
            class_names,
            samples.rows(set_name),
            f"{variant.label} · {TITLES[set_name]}",
            method.scale_label,
        )
        for set_name in SETS
    }
    files = {
        "values.npz": npz_bytes(values_arrays(explanations, samples, images_NHW, class_names)),
        "samples.csv": csv_bytes(samples_table(samples, class_names), "%.4f"),
        "curves.csv": csv_bytes(curves.table(), "%.6f"),
        "scores.csv": csv_bytes(image_scores(samples, curves), "%.6f"),
    }
    return VariantOutputs(variant, files, plots, metrics, time.perf_counter() - start)


TITLES = {
    "correct": "correct predictions",
    "wrong": "wrong predictions",
    "review": "review set (first column: the true class)",
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
