from pathlib import Path

import pytest
import yaml

from fmnist_shap.errors import UserError
from fmnist_shap.params import load_params
from fmnist_shap.raw import PrepareParams
from fmnist_shap.train import TrainParams

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_load() -> None:
    assert isinstance(load_params(REPO / "params.yaml", "train", TrainParams), TrainParams)
    assert isinstance(load_params(REPO / "params.yaml", "prepare", PrepareParams), PrepareParams)


FULL_TRAIN = "train: {lr: 0.01, lr_schedule: constant, epochs: 2, batch_size: 64, seed: 7}"


def test_values_are_read(tmp_path: Path) -> None:
    params = load_params(_write(tmp_path, FULL_TRAIN + "\n"), "train", TrainParams)
    assert (params.lr, params.epochs, params.batch_size, params.seed) == (0.01, 2, 64, 7)
    assert params.lr_schedule == "constant"


def test_every_key_is_required(tmp_path: Path) -> None:
    """params.yaml is the one place for every value: the dataclasses have no defaults."""
    path = _write(tmp_path, "train: {lr: 0.01, epochs: 2, batch_size: 64, seed: 7}\n")
    with pytest.raises(UserError, match=r"train.lr_schedule is missing; every key of 'train'"):
        load_params(path, "train", TrainParams)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("train: {epochs: 0}", r"train.epochs must be a positive integer"),
        ("train: {epochs: -3}", r"train.epochs must be a positive integer"),
        ("train: {batch_size: 0}", r"train.batch_size must be a positive integer"),
        ("train: {lr: 0}", r"train.lr must be > 0"),
        ("train: {lr: -0.1}", r"train.lr must be > 0"),
        ("train: {lr: fast}", r"train.lr is 'fast' \(str\); expected float"),
        ("train: {epochs: 2.5}", r"train.epochs is 2.5 \(float\); expected int"),
        ("train: {epochs: true}", r"train.epochs is True \(bool\); expected int"),
        (
            "train: {lr_schedule: linear}",
            r"train.lr_schedule is 'linear'; use 'cosine' or 'constant'",
        ),
        ("train: {epoch: 3}", r"unknown key train.epoch; valid keys are"),
        ("train: [1, 2]", r"'train' must be a mapping"),
        ("other: {}", r"missing section 'train'"),
        ("train: {lr: [", r"not valid YAML at line \d"),
    ],
)
def test_bad_values_give_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    if body.startswith("train: {") and "epoch:" not in body and body.endswith("}"):
        # one bad value in an otherwise full section
        good = yaml.safe_load(FULL_TRAIN)["train"]
        body = yaml.safe_dump({"train": good | yaml.safe_load(body)["train"]})
    with pytest.raises(UserError, match=message) as caught:
        load_params(_write(tmp_path, body + "\n"), "train", TrainParams)
    assert "\n" not in str(caught.value)


def test_prepare_subsets(tmp_path: Path) -> None:
    def prepare(**values: object) -> PrepareParams:
        section = {"val_size": 5000, "seed": 0, "train_subset": None, "test_subset": 100}
        text = yaml.safe_dump({"prepare": section | values})
        return load_params(_write(tmp_path, text), "prepare", PrepareParams)

    params = prepare()
    assert params.train_subset is None and params.test_subset == 100
    with pytest.raises(UserError, match="prepare.val_size must be > 0"):
        prepare(val_size=0)
    with pytest.raises(UserError, match="prepare.train_subset must be > 0"):
        prepare(train_subset=-5)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "absent.yaml", "train", TrainParams)
