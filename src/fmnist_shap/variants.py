"""Which explanations the explain stage computes, and its params section (`explain`)."""

import dataclasses

from fmnist_shap.explain.masker_ids import MASKERS
from fmnist_shap.explain.registry import METHODS, explainers
from fmnist_shap.params import require

# The method ids by family, from the one list of methods (explain/registry.py).
EXPLAINERS = explainers("shap")  # shap's, with an image masker
GRADIENT_EXPLAINERS = explainers("gradient")  # ours, in JAX
KERAS_EXPLAINERS = explainers("keras")  # shap's DeepExplainer, GradientExplainer: Keras twin
SUBSTRATES = ("black", "blur")  # what deleted pixels become in the faithfulness curves


@dataclasses.dataclass(frozen=True)
class ExplainParams:
    """The explain stage's settings: params.yaml's `explain` section, every key required."""

    samples_per_set: int  # the first N correct and the first N wrong test predictions
    review_per_class: int  # the review set: the first N test images of every class
    top_k: int  # classes explained per image, by the model's own ranking
    budget: dict[str, int]  # per explainer: shap's max_evals, or the gradient samples per image
    batch_size: int  # rows per model call shap may send; the model pads to powers of two
    seed: int  # Permutation's orderings, EG's draws, the random baseline's pixel orders
    explainers: tuple[str, ...]  # × maskers: the shap variants explain computes
    maskers: tuple[str, ...]
    gradient_explainers: tuple[str, ...]
    keras_explainers: tuple[str, ...]
    keras_background: int  # training images drawn with `seed`: DeepSHAP's reference set
    substrate: str  # deletion/insertion: what removed pixels become
    faithfulness_steps: int  # points on the deletion/insertion curves, after the first
    random_weights_seed: int  # the re-initialised model of the randomization check

    def __post_init__(self) -> None:
        require(self.samples_per_set > 0, "explain.samples_per_set", "must be > 0, e.g. 4")
        require(self.review_per_class > 0, "explain.review_per_class", "must be > 0, e.g. 1")
        require(self.top_k >= 1, "explain.top_k", f"is {self.top_k}; use 1 or more, e.g. 5")
        _check_budget(self.budget)
        require(self.batch_size > 0, "explain.batch_size", "must be > 0, e.g. 512")
        require(self.seed >= 0, "explain.seed", "must be >= 0")
        _check_ids("explain.explainers", "explainer", self.explainers, EXPLAINERS, empty=False)
        _check_ids("explain.maskers", "masker", self.maskers, tuple(MASKERS), empty=False)
        _check_ids(
            "explain.gradient_explainers",
            "explainer",
            self.gradient_explainers,
            GRADIENT_EXPLAINERS,
        )
        _check_ids("explain.keras_explainers", "explainer", self.keras_explainers, KERAS_EXPLAINERS)
        require(self.keras_background >= 1, "explain.keras_background", "must be >= 1, e.g. 100")
        require(
            self.substrate in SUBSTRATES,
            "explain.substrate",
            f"is {self.substrate!r}; use one of {', '.join(SUBSTRATES)}",
        )
        require(self.faithfulness_steps >= 1, "explain.faithfulness_steps", "must be >= 1, e.g. 49")
        require(self.random_weights_seed >= 0, "explain.random_weights_seed", "must be >= 0")

    def check_data(
        self, image_hw: tuple[int, int], class_counts: list[int], train_size: int
    ) -> None:
        """The settings that depend on the data, checked once it is known and before any work:
        no more classes per image than the data has; as many test images of every class as the
        review set takes; Permutation needs one forward-and-back pass over every pixel
        (2·H·W + 1 evaluations); no more curve steps than pixels; no larger Keras background
        than the training set."""
        num_classes = len(class_counts)
        require(
            self.keras_background <= train_size,
            "explain.keras_background",
            f"is {self.keras_background}; the training set has only {train_size} images: lower it",
        )
        require(
            min(class_counts) >= self.review_per_class,
            "explain.review_per_class",
            f"is {self.review_per_class}; the test set has only {min(class_counts)} images of "
            "its rarest class: lower it",
        )
        require(
            self.top_k <= num_classes,
            "explain.top_k",
            f"is {self.top_k}; the data has {num_classes} classes: use 1..{num_classes}",
        )
        pixels = image_hw[0] * image_hw[1]
        minimum = 2 * pixels + 1
        require(
            self.budget["permutation"] >= minimum,
            "explain.budget.permutation",
            f"is {self.budget['permutation']}; {image_hw[0]}×{image_hw[1]} images need at "
            f"least 2·{pixels}+1 = {minimum}",
        )
        require(
            self.faithfulness_steps <= pixels,
            "explain.faithfulness_steps",
            f"is {self.faithfulness_steps}; use 1..{pixels} (one pixel a step at most)",
        )


# explain.budget's keys: every method that takes a budget, with its least value (the registry's).
MIN_BUDGET = {spec.explainer: spec.min_budget for spec in METHODS if spec.min_budget is not None}


def _check_budget(budget: dict[str, int]) -> None:
    for explainer in budget:
        require(
            explainer in MIN_BUDGET,
            "explain.budget",
            f"has unknown explainer {explainer!r}; its keys are {', '.join(MIN_BUDGET)}",
        )
    for explainer, minimum in MIN_BUDGET.items():
        require(explainer in budget, f"explain.budget.{explainer}", "is missing; add it")
        require(
            budget[explainer] >= minimum,
            f"explain.budget.{explainer}",
            f"is {budget[explainer]}; the minimum is {minimum}",
        )


def _check_ids(
    key: str, kind: str, ids: tuple[str, ...], known: tuple[str, ...], empty: bool = True
) -> None:
    """Refuse an unknown explainer or masker id, or an empty list where one is needed."""
    require(empty or len(ids) > 0, key, "must list at least one")
    for item in ids:
        require(item in known, key, f"has unknown {kind} {item!r}; use one of {', '.join(known)}")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One explanation method: a shap explainer with an image masker, or a gradient explainer."""

    name: str  # its key in metrics.json and its folder name, e.g. partition-blur
    explainer: str
    masker: str | None  # None for the gradient and Keras explainers

    @property
    def label(self) -> str:
        """How plots and tables name it: 'partition · blur', 'integrated_gradients'."""
        return self.explainer if self.masker is None else f"{self.explainer} · {self.masker}"


def variants_of(
    explainers: tuple[str, ...],
    maskers: tuple[str, ...],
    gradient_explainers: tuple[str, ...],
    keras_explainers: tuple[str, ...],
) -> list[Variant]:
    """Every explainer × masker shap variant, then the gradient explainers, then shap's
    deep-learning explainers on the Keras twin."""
    shap_variants = [
        Variant(f"{explainer}-{masker}", explainer, masker)
        for explainer in explainers
        for masker in maskers
    ]
    unmasked = (*gradient_explainers, *keras_explainers)
    return shap_variants + [Variant(name, name, None) for name in unmasked]


def selected_variants(params: ExplainParams) -> list[Variant]:
    """Every variant params.yaml selects, shap ones (explainer × masker) first."""
    return variants_of(
        params.explainers, params.maskers, params.gradient_explainers, params.keras_explainers
    )


ALL_VARIANTS = variants_of(EXPLAINERS, tuple(MASKERS), GRADIENT_EXPLAINERS, KERAS_EXPLAINERS)
