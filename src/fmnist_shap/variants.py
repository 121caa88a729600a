"""Which explanations the explain stage computes, and its params section (`explain`)."""

import dataclasses

from fmnist_shap.params import require

EXPLAINERS = ("partition", "permutation")  # shap's, with an image masker
GRADIENT_EXPLAINERS = ("integrated_gradients", "expected_gradients")  # ours, in JAX
SUBSTRATES = ("black", "blur")  # what deleted pixels become in the faithfulness curves
MASKERS = {"blur": "blur(28,28)", "telea": "inpaint_telea", "ns": "inpaint_ns"}  # id → shap's name
IMAGE_FEATURES = 28 * 28
# Partition needs its two reference rows (all masked, none masked) and one split;
# Permutation needs one forward-and-back pass over every pixel: 2·784 + 1.
MIN_MAX_EVALS = {"partition": 3, "permutation": 2 * IMAGE_FEATURES + 1}


@dataclasses.dataclass(frozen=True)
class ExplainParams:
    """SHAP settings shared by every explain variant."""

    samples_per_set: int = 4  # the first N correct and the first N wrong test predictions
    top_k: int = 5  # classes explained per image, by the model's own ranking
    partition_max_evals: int = 500
    permutation_max_evals: int = 1600
    batch_size: int = 512  # rows per model call shap may send; the model pads to powers of two
    seed: int = 0  # Permutation's orderings, EG's draws, the random baseline's pixel orders
    explainers: tuple[str, ...] = EXPLAINERS  # × maskers: the shap variants explain computes
    maskers: tuple[str, ...] = tuple(MASKERS)
    gradient_explainers: tuple[str, ...] = GRADIENT_EXPLAINERS
    integrated_gradients_samples: int = 256  # points on the path from the black image
    expected_gradients_samples: int = 256  # (training image, α) draws per image
    substrate: str = "black"  # deletion/insertion: what removed pixels become
    faithfulness_steps: int = 49  # points on the deletion/insertion curves, after the first
    random_weights_seed: int = 1  # the re-initialised model of the randomization check

    def __post_init__(self) -> None:
        require(self.samples_per_set > 0, "explain.samples_per_set", "must be > 0, e.g. 4")
        require(1 <= self.top_k <= 10, "explain.top_k", f"is {self.top_k}; use 1..10")
        for explainer in EXPLAINERS:
            key = f"{explainer}_max_evals"
            value, minimum = getattr(self, key), MIN_MAX_EVALS[explainer]
            require(value >= minimum, f"explain.{key}", f"is {value}; the minimum is {minimum}")
        require(self.batch_size > 0, "explain.batch_size", "must be > 0, e.g. 512")
        require(self.seed >= 0, "explain.seed", "must be >= 0")
        require(len(self.explainers) > 0, "explain.explainers", "must list at least one")
        require(len(self.maskers) > 0, "explain.maskers", "must list at least one")
        for explainer in self.explainers:
            check_explainer(explainer)
        for masker in self.maskers:
            check_masker(masker)
        for explainer in self.gradient_explainers:
            require(
                explainer in GRADIENT_EXPLAINERS,
                "explain.gradient_explainers",
                f"has unknown explainer {explainer!r}; use one of {', '.join(GRADIENT_EXPLAINERS)}",
            )
        for explainer in GRADIENT_EXPLAINERS:
            key = f"{explainer}_samples"
            value = getattr(self, key)
            require(value >= 1, f"explain.{key}", f"is {value}; use a positive integer, e.g. 256")
        require(
            self.substrate in SUBSTRATES,
            "explain.substrate",
            f"is {self.substrate!r}; use one of {', '.join(SUBSTRATES)}",
        )
        require(
            1 <= self.faithfulness_steps <= IMAGE_FEATURES,
            "explain.faithfulness_steps",
            f"is {self.faithfulness_steps}; use 1..{IMAGE_FEATURES}",
        )
        require(self.random_weights_seed >= 0, "explain.random_weights_seed", "must be >= 0")

    def max_evals(self, explainer: str) -> int:
        return getattr(self, f"{explainer}_max_evals")


def check_explainer(explainer: str) -> None:
    """Refuse an explainer id that is not one of ours."""
    require(
        explainer in EXPLAINERS,
        "explain.explainers",
        f"has unknown explainer {explainer!r}; use one of {', '.join(EXPLAINERS)}",
    )


def check_masker(masker: str) -> None:
    """Refuse a masker id that is not one of ours."""
    require(
        masker in MASKERS,
        "explain.maskers",
        f"has unknown masker {masker!r}; use one of {', '.join(MASKERS)}",
    )


@dataclasses.dataclass(frozen=True)
class Variant:
    """One explanation method: a shap explainer with an image masker, or a gradient explainer."""

    name: str  # its key in metrics.json and its folder name, e.g. partition-blur
    explainer: str
    masker: str | None  # None for the gradient explainers

    @property
    def label(self) -> str:
        """How plots and tables name it: 'partition · blur', 'integrated_gradients'."""
        return self.explainer if self.masker is None else f"{self.explainer} · {self.masker}"


def selected_variants(params: ExplainParams) -> list[Variant]:
    """Every variant params.yaml selects, shap ones (explainer × masker) first."""
    shap_variants = [
        Variant(f"{explainer}-{masker}", explainer, masker)
        for explainer in params.explainers
        for masker in params.maskers
    ]
    return shap_variants + [Variant(name, name, None) for name in params.gradient_explainers]


ALL_VARIANTS = selected_variants(
    ExplainParams(
        explainers=EXPLAINERS, maskers=tuple(MASKERS), gradient_explainers=GRADIENT_EXPLAINERS
    )
)
