"""The prepared data set: splits as uint8 arrays with labels, and the class names."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import load_npz, save_npz, write_json
from fmnist_shap.errors import UserError

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class Split:
    """Images as stored (uint8, N×28×28) and their integer labels."""

    images_NHW: np.ndarray
    labels_N: np.ndarray

    def __len__(self) -> int:
        return len(self.labels_N)


def save_split(path: str | os.PathLike, split: Split) -> None:
    save_npz(path, {"images": split.images_NHW, "labels": split.labels_N})


def load_split(path: str | os.PathLike) -> Split:
    """Read a prepared split, checking it looks like what prepare writes."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: missing; run `dvc repro prepare`")
    try:
        arrays = load_npz(file)
        images, labels = arrays["images"], arrays["labels"]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{file}: unreadable ({error}); run `dvc repro -f prepare`") from None
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise UserError(f"{file}: unexpected arrays; run `dvc repro -f prepare`")
    return Split(images, labels)


def save_classes(path: str | os.PathLike) -> None:
    write_json(path, {"class_names": list(CLASS_NAMES)})


def load_classes(path: str | os.PathLike) -> tuple[str, ...]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: missing; run `dvc repro prepare`")
    return tuple(json.loads(file.read_text(encoding="utf-8"))["class_names"])
