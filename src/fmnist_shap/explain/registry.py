"""Every attribution method, listed once, with what it needs.

The explain stage, the `global` stage and the PR report build their methods with `build`;
params validation (`variants.py`) reads the ids and budgets, the summarize stage the baselines.
Adding a method is a file in `methods/` with a `Method` subclass (`base.py`) and one line in
METHODS (then its id in params.yaml's list of its family): docs/development.md.

The method modules are imported by `build`, by name, so that reading the registry (params
validation, the coordinating process, the summarize stage) imports neither jax, shap nor
TensorFlow. `tests/test_dvc_yaml.py` counts every module listed here as imported by whoever
imports `build`, so a stage that builds methods depends on all of them in dvc.yaml.
"""

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    """One method: its id, its family, what running it needs, and where its class is."""

    explainer: str  # its id in params.yaml and in variant names
    family: str  # "shap": with an image masker; "gradient": JAX; "keras": on the Keras twin
    needs_background: bool  # training images (Expected Gradients; the twin's reference set)
    needs_tensorflow: bool  # runs on the Keras twin: TensorFlow in the process that runs it
    module: str  # fmnist_shap.explain.methods.<module>
    cls: str  # its `Method` subclass there
    min_budget: int | None = None  # the least explain.budget.<id>; None: it takes no budget
    baseline: str | None = None  # what a method without a masker compares the image with


# Partition needs its two reference rows (all masked, none masked) and one split: 3 evaluations.
METHODS = (
    MethodSpec("partition", "shap", False, False, "shap_image", "Partition", 3),
    MethodSpec("permutation", "shap", False, False, "shap_image", "Permutation", 1),
    MethodSpec(
        "integrated_gradients",
        "gradient",
        False,
        False,
        "gradients",
        "IntegratedGradients",
        1,
        "black image",
    ),
    MethodSpec(
        "expected_gradients",
        "gradient",
        True,
        False,
        "gradients",
        "ExpectedGradients",
        1,
        "training images",
    ),
    MethodSpec(
        "deep", "keras", True, True, "keras", "DeepShap", None, "training images (Keras twin)"
    ),
    MethodSpec(
        "gradient", "keras", True, True, "keras", "GradientShap", 1, "training images (Keras twin)"
    ),
)
SPECS = {spec.explainer: spec for spec in METHODS}


def explainers(family: str) -> tuple[str, ...]:
    """The ids of one family, in registry order."""
    return tuple(spec.explainer for spec in METHODS if spec.family == family)


def build(explainer: str, masker: str | None = None):
    """The method `explainer` (with `masker` for a shap method), ready to `attribute`."""
    spec = SPECS[explainer]
    module = importlib.import_module(f"fmnist_shap.explain.methods.{spec.module}")
    return getattr(module, spec.cls)(masker)
