"""The explain stage's inputs: what every worker loads, checked before any worker starts."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import UserError
from fmnist_shap.variants import ExplainParams


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
