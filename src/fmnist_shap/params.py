"""params.yaml → frozen, validated dataclasses, one per stage section."""

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fmnist_shap.errors import UserError


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    """How the 60k training images are split; optional subsets for quick runs."""

    val_size: int = 5000
    seed: int = 0
    train_subset: int | None = None  # None: all training images left after the validation split
    test_subset: int | None = None  # None: all 10k test images

    def __post_init__(self) -> None:
        _require(self.val_size > 0, "prepare.val_size", "must be > 0")
        _require(self.val_size < 60000, "prepare.val_size", "must be < 60000")
        _require(self.seed >= 0, "prepare.seed", "must be >= 0")
        if self.train_subset is not None:
            _require(self.train_subset > 0, "prepare.train_subset", "must be > 0 or null")
        if self.test_subset is not None:
            _require(self.test_subset > 0, "prepare.test_subset", "must be > 0 or null")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Optimiser and schedule for the CNN."""

    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "cosine" (decays to 0 over all steps) or "constant"
    epochs: int = 6
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "train.lr", "must be > 0, e.g. 0.002")
        _require(self.lr < 1, "train.lr", "must be < 1, e.g. 0.002")
        _require(
            self.lr_schedule in ("cosine", "constant"),
            "train.lr_schedule",
            f"is {self.lr_schedule!r}; use 'cosine' or 'constant'",
        )
        _require(self.epochs > 0, "train.epochs", "must be a positive integer, e.g. 6")
        _require(self.batch_size > 0, "train.batch_size", "must be a positive integer, e.g. 128")
        _require(self.seed >= 0, "train.seed", "must be >= 0")


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
    explainers: tuple[str, ...] = EXPLAINERS  # the variants dvc.yaml builds (matrix)
    maskers: tuple[str, ...] = tuple(MASKERS)
    gradient_explainers: tuple[str, ...] = GRADIENT_EXPLAINERS
    integrated_gradients_samples: int = 256  # points on the path from the black image
    expected_gradients_samples: int = 256  # (training image, α) draws per image
    substrate: str = "black"  # deletion/insertion: what removed pixels become
    faithfulness_steps: int = 49  # points on the deletion/insertion curves, after the first
    random_weights_seed: int = 1  # the re-initialised model of the randomization check

    def __post_init__(self) -> None:
        _require(self.samples_per_set > 0, "explain.samples_per_set", "must be > 0, e.g. 4")
        _require(1 <= self.top_k <= 10, "explain.top_k", f"is {self.top_k}; use 1..10")
        for explainer in EXPLAINERS:
            key = f"{explainer}_max_evals"
            value, minimum = getattr(self, key), MIN_MAX_EVALS[explainer]
            _require(value >= minimum, f"explain.{key}", f"is {value}; the minimum is {minimum}")
        _require(self.batch_size > 0, "explain.batch_size", "must be > 0, e.g. 512")
        _require(self.seed >= 0, "explain.seed", "must be >= 0")
        _require(len(self.explainers) > 0, "explain.explainers", "must list at least one")
        _require(len(self.maskers) > 0, "explain.maskers", "must list at least one")
        for explainer in self.explainers:
            check_explainer(explainer)
        for masker in self.maskers:
            check_masker(masker)
        for explainer in self.gradient_explainers:
            _require(
                explainer in GRADIENT_EXPLAINERS,
                "explain.gradient_explainers",
                f"has unknown explainer {explainer!r}; use one of {', '.join(GRADIENT_EXPLAINERS)}",
            )
        for explainer in GRADIENT_EXPLAINERS:
            key = f"{explainer}_samples"
            value = getattr(self, key)
            _require(value >= 1, f"explain.{key}", f"is {value}; use a positive integer, e.g. 256")
        _require(
            self.substrate in SUBSTRATES,
            "explain.substrate",
            f"is {self.substrate!r}; use one of {', '.join(SUBSTRATES)}",
        )
        _require(
            1 <= self.faithfulness_steps <= IMAGE_FEATURES,
            "explain.faithfulness_steps",
            f"is {self.faithfulness_steps}; use 1..{IMAGE_FEATURES}",
        )
        _require(self.random_weights_seed >= 0, "explain.random_weights_seed", "must be >= 0")

    def max_evals(self, explainer: str) -> int:
        return getattr(self, f"{explainer}_max_evals")


def check_explainer(explainer: str) -> None:
    """Refuse an explainer id that is not one of ours."""
    _require(
        explainer in EXPLAINERS,
        "explain.explainers",
        f"has unknown explainer {explainer!r}; use one of {', '.join(EXPLAINERS)}",
    )


def check_masker(masker: str) -> None:
    """Refuse a masker id that is not one of ours."""
    _require(
        masker in MASKERS,
        "explain.maskers",
        f"has unknown masker {masker!r}; use one of {', '.join(MASKERS)}",
    )


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise UserError(f"params.yaml: {key} {problem}")


def _type_ok(value: Any, annotation: Any) -> bool:
    """Is a YAML value acceptable for a dataclass field of this annotation?"""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        return isinstance(value, list | tuple) and all(_type_ok(v, item) for v in value)
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def from_mapping[T](cls: type[T], section: str, raw: Any) -> T:
    """Build and validate dataclass `cls` from the mapping found under `section`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: '{section}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(
            f"params.yaml: unknown key {section}.{unknown[0]}; "
            f"valid keys are {', '.join(sorted(fields))}"
        )
    for key, value in raw.items():
        if not _type_ok(value, hints[key]):
            raise UserError(
                f"params.yaml: {section}.{key} is {value!r} ({type(value).__name__}); "
                f"expected {_describe(hints[key])}"
            )
    values = dict(raw)
    for key, annotation in hints.items():
        # YAML lists arrive as lists; tuple fields keep the dataclass hashable and frozen.
        if key in values and typing.get_origin(annotation) is tuple:
            values[key] = tuple(values[key])
    return cls(**values)


def load_params[T](path: str | os.PathLike, section: str, cls: type[T]) -> T:
    """Read one section of params.yaml (safe_load) into a validated `cls`."""
    params_path = Path(path)
    if not params_path.is_file():
        raise UserError(f"{params_path}: not found; run from the repository root")
    try:
        document = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{params_path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(document, dict) or section not in document:
        raise UserError(f"{params_path}: missing section '{section}'; see the README")
    return from_mapping(cls, section, document[section])
