"""The fault table's row 6: every key of params.yaml given a wrong type, an out-of-range value,
and every section an unknown key or variant — each stage that reads it stops with one line that
names the key, before any work (its inputs do not exist: reading them would be another error)
and with nothing written.

A table, not a test per key: a key added to params.yaml fails `test_every_key_has_a_row` until
its row is added here."""

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# key → (a value of the wrong type, a value of the right type out of its range)
ROWS: dict[str, tuple[Any, Any]] = {
    "prepare.val_size": ("5k", 0),
    "prepare.seed": (0.5, -1),
    "prepare.train_subset": ("all", 0),
    "prepare.test_subset": ([100], -5),
    "train.lr": ("fast", 0.0),
    "train.lr_schedule": (1, "linear"),
    "train.epochs": (2.5, 0),
    "train.batch_size": (True, -128),
    "train.seed": ("zero", -1),
    "explain.explainers": ("partition", []),
    "explain.maskers": (["blur", 3], ["blur", "gauss"]),
    "explain.samples_per_set": (None, 0),
    "explain.review_per_class": (1.0, 0),
    "explain.top_k": ("5", 0),
    "explain.budget.partition": ("500", 0),
    "explain.budget.permutation": (1600.0, 0),  # < 2·H·W+1: checked with the data
    "explain.budget.integrated_gradients": (None, 0),
    "explain.budget.expected_gradients": ([256], -1),
    "explain.budget.gradient": (False, 0),
    "explain.batch_size": ("512", 0),
    "explain.seed": (None, -1),
    "explain.gradient_explainers": ("integrated_gradients", ["lime"]),
    "explain.keras_explainers": ({"deep": 1}, ["kernel"]),
    "explain.keras_background": ("100", 0),
    "explain.substrate": (0, "grey"),
    "explain.faithfulness_steps": (49.5, 0),
    "explain.random_weights_seed": ("one", -1),
    "global.variants": ("integrated_gradients", ["no-such-variant"]),
    "global.per_class": ("ten", 0),
    "global.chunk_size": (8.0, 0),
    "global.workers": ("2", 0),
    "global.scheduler": (8786, "http://localhost:8786"),
}

# Every stage that reads params: the arguments of a run whose inputs do not exist.
ARGS = {
    "prepare": ["raw", "out"],
    "train": ["train.npz", "val.npz", "classes.json", "out/model.npz", "out"],
    "explain": ["test.npz", "train.npz", "classes.json", "model.npz", "out"],
    "summarize": ["explain", "out"],
    "global": ["test.npz", "train.npz", "classes.json", "model.npz", "out"],
}


def readers(key: str) -> list[str]:
    """The stages dvc.yaml says read `key`: those listing it, its section or a mapping above it."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    parts = key.split(".")
    heads = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
    return [
        name
        for name, stage in stages.items()
        if any(str(p) in heads or str(p).startswith(f"{key}.") for p in stage.get("params", []))
    ]


def leaf_keys(document: dict, prefix: str = "") -> list[str]:
    """Every section's keys, and those of a mapping in a section (explain.budget's)."""
    keys = []
    for key, value in document.items():
        if isinstance(value, dict):
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def repository_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def with_value(key: str, value: Any) -> dict:
    document = repository_params()
    *path, last = key.split(".")
    node = document
    for part in path:
        node = node[part]
    node[last] = value
    return document


def cases() -> list[tuple[str, dict, str, str]]:
    """(case id, params document, the key that is wrong, the key the error must name)."""
    found = []
    for key, (wrong_type, out_of_range) in ROWS.items():
        # a budget entry of the wrong type is named by its mapping: "explain.budget is {…}"
        mapping = key.rsplit(".", 1)[0] if key.startswith("explain.budget.") else key
        found.append((f"{key}-type", with_value(key, wrong_type), key, mapping))
        found.append((f"{key}-range", with_value(key, out_of_range), key, key))
    for section in repository_params():
        document = repository_params()
        document[section]["no_such_key"] = 1
        found.append((f"{section}-unknown-key", document, section, f"{section}.no_such_key"))
    budget = with_value("explain.budget.lime", 100)
    found.append(("explain.budget-unknown-explainer", budget, "explain.budget", "explain.budget"))
    return found


def test_every_key_has_a_row() -> None:
    """A new key in params.yaml is covered once its row is added to ROWS."""
    assert sorted(leaf_keys(repository_params())) == sorted(ROWS)


def run_stage(stage: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    module = importlib.import_module(f"stages.{stage}")
    from fmnist_shap.errors import run_cli

    with pytest.raises(SystemExit) as exited:
        run_cli(module.main, argv)
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("document", "key", "named"), [c[1:] for c in cases()], ids=[c[0] for c in cases()]
)
def test_bad_params_stop_every_stage_that_reads_them(
    document: dict, key: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    stages = readers(key)
    assert stages, f"no stage of dvc.yaml reads {key}"
    for stage in stages:
        argv = [str(tmp_path / arg) for arg in ARGS[stage]] + ["--params", str(params)]
        code, err = run_stage(stage, argv, capsys)
        assert code == 2, (stage, err)
        assert err.count("\n") == 1 and err.startswith("error: params.yaml: "), (stage, err)
        assert f"params.yaml: {named} " in err or f"key {named};" in err, (stage, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], stage


# Bounds that depend on the data, checked once the inputs are read and before any work:
# key → a value out of range for Fashion-MNIST (28×28, 10 classes, the training set's size).
DATA_ROWS = {
    "explain.budget.permutation": 1568,  # 2·784+1 = 1569 at least
    "explain.top_k": 11,
    "explain.faithfulness_steps": 785,
    "explain.keras_background": 10**6,
    "explain.review_per_class": 10**4,
}


@pytest.fixture(scope="module")
def explain_inputs(raw_splits, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real inputs of explain: 2000 training and all 10k test images, an untrained model."""
    from fmnist_shap.data import CLASS_NAMES, Split, save_classes, save_split
    from fmnist_shap.model import init_model, save_model

    folder = tmp_path_factory.mktemp("inputs")
    train, test = raw_splits
    save_split(folder / "test.npz", test)
    save_split(folder / "train.npz", Split(train.images_NHW[:2000], train.labels_N[:2000]))
    save_classes(folder / "classes.json")
    save_model(folder / "model.npz", init_model(0, len(CLASS_NAMES), (28, 28)))
    return [folder / name for name in ("test.npz", "train.npz", "classes.json", "model.npz")]


@pytest.mark.parametrize(("key", "value"), DATA_ROWS.items(), ids=list(DATA_ROWS))
def test_bounds_of_the_data_stop_explain_before_any_work(
    key: str, value: int, explain_inputs: list[Path], tmp_path: Path, capsys
) -> None:
    inputs = explain_inputs
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(with_value(key, value)))
    argv = [*map(str, inputs), str(tmp_path / "out"), "--params", str(params)]
    code, err = run_stage("explain", argv, capsys)
    assert code == 2 and err.count("\n") == 1 and f"params.yaml: {key} is {value}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
