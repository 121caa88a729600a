"""params.yaml → frozen, validated dataclasses: the loader shared by every stage.

Each section's dataclass lives beside the code that reads it (`raw.PrepareParams`,
`train.TrainParams`, `variants.ExplainParams`), so a stage's DVC deps name only the code it
runs, and adding an explain setting does not retrain the model.
"""

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fmnist_shap.errors import UserError


def require(ok: bool, key: str, problem: str) -> None:
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
    if typing.get_origin(annotation) is dict:
        key_type, value_type = typing.get_args(annotation)
        return isinstance(value, dict) and all(
            _type_ok(k, key_type) and _type_ok(v, value_type) for k, v in value.items()
        )
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
    missing = [name for name in hints if name not in raw]
    if missing:
        raise UserError(
            f"params.yaml: {section}.{missing[0]} is missing; every key of '{section}' is "
            "required (see the repository's params.yaml)"
        )
    for key, value in raw.items():
        if not _type_ok(value, hints[key]):
            raise UserError(
                f"params.yaml: {section}.{key} is {value!r} ({type(value).__name__}); "
                f"expected {_describe(hints[key])}"
            )
    values = dict(raw)
    for key, annotation in hints.items():
        # YAML lists arrive as lists; tuple fields keep the dataclass frozen.
        if typing.get_origin(annotation) is tuple:
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
        raise UserError(f"{params_path}: missing section '{section}'; see docs/configuration.md")
    return from_mapping(cls, section, document[section])
