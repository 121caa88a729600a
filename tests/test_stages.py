"""Each stage's main on a small real subset, in tmp_path: outputs, and nothing left on failure."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.processes import CORE_LOCKS_ENV
from fmnist_shap.variants import KERAS_EXPLAINERS
from stages import evaluate, explain, prepare, summarize, train
from tests.conftest import REPO

SMALL = {
    "prepare": {"val_size": 300, "seed": 0, "train_subset": 600, "test_subset": 200},
    "train": {"lr": 0.003, "lr_schedule": "cosine", "epochs": 2, "batch_size": 100, "seed": 0},
    "explain": {
        "explainers": ["partition"],
        "maskers": ["blur"],
        "gradient_explainers": ["integrated_gradients", "expected_gradients"],
        "keras_explainers": [],  # tests/test_keras.py and the end-to-end test cover them
        "samples_per_set": 1,
        "review_per_class": 1,
        "top_k": 2,
        "budget": {
            "partition": 50,
            "permutation": 1569,
            "integrated_gradients": 16,
            "expected_gradients": 16,
            "gradient": 16,
        },
        "faithfulness_steps": 8,
    },
}
VARIANTS = ("partition-blur", "integrated_gradients", "expected_gradients")


def _params(tmp_path: Path, **overrides: dict) -> Path:
    """The repository's params.yaml with SMALL's values, then `overrides`, per section."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in doc.items():
        values.update(SMALL.get(section, {}) | overrides.get(section, {}))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def pipeline_outputs(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prepare → train → evaluate, run once for the tests of this module."""
    work = tmp_path_factory.mktemp("stages")
    params = str(_params(work))
    prep = work / "prepared"
    prepare.main([str(raw_dir), str(prep), "--params", params])
    train.main(
        [
            str(prep / "train.npz"),
            str(prep / "val.npz"),
            str(prep / "classes.json"),
            str(work / "model.npz"),
            str(work / "train"),
            "--params",
            params,
        ]
    )
    evaluate.main(
        [
            str(prep / "test.npz"),
            str(prep / "classes.json"),
            str(work / "model.npz"),
            str(work / "eval"),
        ]
    )
    return work


def test_prepare_writes_uint8_splits(pipeline_outputs: Path) -> None:
    prep = pipeline_outputs / "prepared"
    sizes = {}
    for name in ("train", "val", "test"):
        with np.load(prep / f"{name}.npz", allow_pickle=False) as arrays:
            assert arrays["images"].dtype == np.uint8 and arrays["images"].shape[1:] == (28, 28)
            sizes[name] = len(arrays["labels"])
    assert sizes == {"train": 600, "val": 300, "test": 200}
    assert json.loads((prep / "classes.json").read_text())["class_names"][9] == "Ankle boot"


def test_train_logs_curves_and_saves_model(pipeline_outputs: Path) -> None:
    assert (pipeline_outputs / "model.npz").is_file()
    summary = json.loads((pipeline_outputs / "train" / "metrics.json").read_text())
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(summary)
    curve = (
        (pipeline_outputs / "train" / "plots" / "metrics" / "val_accuracy.tsv").read_text().split()
    )
    assert curve[:2] == ["step", "val_accuracy"] and curve[2::2] == ["1", "2"]
    assert not list(pipeline_outputs.glob(".*.tmp"))


def test_evaluate_writes_flat_metrics_and_confusion(pipeline_outputs: Path) -> None:
    metrics = json.loads((pipeline_outputs / "eval" / "metrics.json").read_text())
    assert all(isinstance(v, float) for v in metrics.values())
    assert 0.3 < metrics["accuracy"] <= 1.0
    assert {"macro_f1", "precision_t_shirt_top", "recall_ankle_boot", "f1_bag"} <= set(metrics)
    entries = json.loads(
        (pipeline_outputs / "eval" / "plots" / "sklearn" / "confusion.json").read_text()
    )
    test = np.load(pipeline_outputs / "prepared" / "test.npz")
    class_names = json.loads((pipeline_outputs / "prepared" / "classes.json").read_text())
    # one entry per test image, in test-set order
    actual = [class_names["class_names"][label] for label in test["labels"]]
    assert [e["actual"] for e in entries] == actual and len(entries) == 200
    correct = sum(e["actual"] == e["predicted"] for e in entries)
    assert correct / 200 == pytest.approx(metrics["accuracy"])
    report = (pipeline_outputs / "eval" / "classification_report.txt").read_text()
    assert "Ankle boot" in report and "macro avg" in report


def test_bad_params_stop_train_before_any_output(
    pipeline_outputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    params = str(_params(tmp_path, train={"epochs": 0}))
    prep = pipeline_outputs / "prepared"
    args = [
        str(prep / "train.npz"),
        str(prep / "val.npz"),
        str(prep / "classes.json"),
        str(tmp_path / "m.npz"),
        str(tmp_path / "log"),
        "--params",
        params,
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: params.yaml: train.epochs must be a positive integer, e.g. 4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_batch_too_large_leaves_previous_outputs_untouched(
    pipeline_outputs: Path, tmp_path: Path
) -> None:
    prep = pipeline_outputs / "prepared"
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "metrics.json").write_text("{}")
    params = str(_params(tmp_path, train={"batch_size": 601}))
    with pytest.raises(UserError, match="train.batch_size=601"):
        train.main(
            [
                str(prep / "train.npz"),
                str(prep / "val.npz"),
                str(prep / "classes.json"),
                str(tmp_path / "m.npz"),
                str(log_dir),
                "--params",
                params,
            ]
        )
    assert not (tmp_path / "m.npz").exists()
    assert (log_dir / "metrics.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "params.yaml"]


def test_prepare_on_missing_data(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data directory missing"):
        prepare.main(
            [str(tmp_path / "raw"), str(tmp_path / "out"), "--params", str(_params(tmp_path))]
        )
    assert not (tmp_path / "out").exists()


def _explain_args(work: Path, out: Path, params: Path) -> list[str]:
    prep = work / "prepared"
    return [
        str(prep / "test.npz"),
        str(prep / "train.npz"),
        str(prep / "classes.json"),
        str(work / "model.npz"),
        str(out),
        "--params",
        str(params),
    ]


@pytest.fixture(scope="module")
def explained(pipeline_outputs: Path) -> Path:
    """explain (a shap variant and both gradient explainers, one process), then summarize."""
    params = _params(pipeline_outputs)
    explain.main(_explain_args(pipeline_outputs, pipeline_outputs / "explain", params))
    summary = pipeline_outputs / "faithfulness"
    summarize.main([str(pipeline_outputs / "explain"), str(summary), "--params", str(params)])
    return pipeline_outputs


def test_explain_writes_every_variants_files_and_nothing_else(explained: Path) -> None:
    out = explained / "explain"
    assert sorted(p.name for p in out.iterdir()) == [
        "environment.json",
        "metrics.json",
        "plots",
        "timing.json",
        "variants",
    ]
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        f"{v}-{s}.png" for v in VARIANTS for s in ("correct", "wrong", "review")
    )
    assert sorted(p.name for p in (out / "variants").iterdir()) == sorted(VARIANTS)
    assert set(json.loads((out / "timing.json").read_text())) == set(VARIANTS)


def test_explain_outputs_do_not_depend_on_the_workers(explained: Path, tmp_path: Path) -> None:
    """The fixture ran one process per core; one process alone gives the same bytes."""
    args = _explain_args(explained, tmp_path / "one", _params(explained))
    explain.main([*args, "--workers", "1"])
    pooled = explained / "explain"
    files = sorted(
        p.relative_to(pooled) for p in pooled.rglob("*") if p.is_file() and p.name != "timing.json"
    )
    # values/samples/curves/scores, 3 plots, metrics, environment
    assert len(files) == 3 * 4 + 3 * 3 + 1 + 1
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (pooled / rel).read_bytes(), rel


def test_pool_jobs_hold_every_variant_once_and_tensorflow_in_one() -> None:
    from fmnist_shap.explain.runner import expected_cost, jobs_of
    from fmnist_shap.variants import ALL_VARIANTS

    variants = list(ALL_VARIANTS)
    jobs = jobs_of(variants)
    assert sorted(i for job in jobs for i in job) == list(range(len(variants)))
    keras = [job for job in jobs if any(variants[i].explainer in KERAS_EXPLAINERS for i in job)]
    assert len(keras) == 1 and {variants[i].explainer for i in keras[0]} == set(KERAS_EXPLAINERS)
    costs = [sum(expected_cost(variants[i]) for i in job) for job in jobs]
    assert costs == sorted(costs, reverse=True)  # the slowest start first
    assert jobs_of([v for v in variants if v.explainer == "partition"]) == [(1,), (2,), (0,)]


def _claim(queue) -> None:
    from fmnist_shap.processes import claim_a_core

    cpu = claim_a_core()
    queue.put((cpu, sorted(os.sched_getaffinity(0))))
    time.sleep(120)  # holds the claim until killed


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_workers_claim_free_cores_and_a_killed_one_frees_its_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker alive on the machine holds another core; one more than cores runs unpinned;
    a SIGKILLed worker's core is free for the next (the kernel drops its lock)."""
    monkeypatch.setenv(CORE_LOCKS_ENV, str(tmp_path / "cores"))  # apart from running pipelines
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    cpus = sorted(os.sched_getaffinity(0))
    workers, claims = [], []
    try:
        for _ in range(len(cpus) + 1):
            workers.append(context.Process(target=_claim, args=(queue,)))
            workers[-1].start()
            claims.append(queue.get(timeout=60))
        assert claims == [(cpu, [cpu]) for cpu in cpus] + [(None, cpus)]
        workers[0].kill()
        workers[0].join()
        workers.append(context.Process(target=_claim, args=(queue,)))
        workers[-1].start()
        assert queue.get(timeout=60) == (cpus[0], [cpus[0]])
    finally:
        for worker in workers:
            worker.kill()
            worker.join()


def test_review_set_maps_do_not_depend_on_samples_per_set(explained: Path, tmp_path: Path) -> None:
    """Draws are keyed by test index, not by position: explaining one more correct and wrong
    image moves every review-set row down, and changes none of their maps."""
    params = _params(tmp_path, explain={"samples_per_set": 2})
    explain.main([*_explain_args(explained, tmp_path / "more", params), "--workers", "1"])
    for variant in VARIANTS:
        maps = {}
        for run in (explained / "explain", tmp_path / "more"):
            with np.load(run / "variants" / variant / "values.npz", allow_pickle=False) as arrays:
                review = arrays["set"] == "review"
                maps[run] = (arrays["test_index"][review], arrays["values"][review])
        (index_a, values_a), (index_b, values_b) = maps.values()
        assert np.array_equal(index_a, index_b) and len(index_a) == 10
        assert np.array_equal(values_a, values_b), variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_explain_writes_values_plots_and_quality_metrics(explained: Path, variant: str) -> None:
    out = explained / "explain" / "variants" / variant
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.csv",
        "samples.csv",
        "scores.csv",
        "values.npz",
    ]
    metrics = json.loads((explained / "explain" / "metrics.json").read_text())[variant]
    # The metrics are the means of the per-image scores the PR report resamples.
    scores = pd.read_csv(out / "scores.csv")
    for metric, column in (
        ("deletion_auc", "deletion_auc"),
        ("insertion_auc", "insertion_auc"),
        ("deletion_auc_random", "deletion_random_auc"),
        ("insertion_auc_random", "insertion_random_auc"),
    ):
        assert metrics[metric] == pytest.approx(scores[column].mean(), abs=1e-6), metric
    assert len(scores) == 12 and not scores.duplicated(["set", "test_index"]).any()
    curves = (out / "curves.csv").read_text().splitlines()
    assert curves[0] == "fraction,deletion,insertion,deletion_random,insertion_random"
    assert len(curves) == 1 + 9  # faithfulness_steps + 1 points
    values = np.load(out / "values.npz", allow_pickle=False)
    assert values["values"].shape == (12, 28, 28, 2)  # 1 correct, 1 wrong, 10 review images
    assert values["set"].tolist() == ["correct", "wrong"] + ["review"] * 10
    review = values["set"] == "review"
    assert np.array_equal(values["output_classes"][review, 0], values["labels"][review])
    # The metrics are the means of the per-image scores.
    scores = pd.read_csv(out / "scores.csv")
    assert scores["test_index"].tolist() == values["test_index"].tolist()
    for key in ("deletion_auc", "insertion_auc"):
        assert scores[key].mean() == pytest.approx(metrics[key], abs=1e-6)
    # Every variant explains the same images.
    first = np.load(explained / "explain" / "variants" / VARIANTS[0] / "values.npz")
    assert np.array_equal(values["test_index"], first["test_index"])


def test_random_baseline_is_shared_by_all_variants(explained: Path) -> None:
    metrics = json.loads((explained / "explain" / "metrics.json").read_text())
    assert len({metrics[v]["deletion_auc_random"] for v in VARIANTS}) == 1


def test_summary_ranks_every_variant(explained: Path) -> None:
    out = explained / "faithfulness"
    table = (out / "summary.md").read_text()
    cells = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|")
    ]
    header, rows = cells[0], cells[2:]
    ranks = [int(row[0].split()[0]) for row in rows]
    assert ranks[0] == 1 and ranks == sorted(ranks)
    assert {row[header.index("variant")] for row in rows} == set(VARIANTS)
    cells = [row[header.index("insertion − deletion [95% CI]")] for row in rows]
    scores = [float(cell.split()[0]) for cell in cells]
    assert scores == sorted(scores, reverse=True)
    for cell, score in zip(cells, scores, strict=True):
        low, high = (float(v) for v in cell.split("[")[1].rstrip("]").split(","))
        assert low <= score <= high
    bars = (out / "bars.csv").read_text().splitlines()
    assert bars[0] == "variant,deletion_auc,insertion_auc" and bars[-1].startswith("random,")
    # One row per (variant, fraction): the plots draw whatever variants were built.
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["variant", "fraction", "deletion", "insertion"]
    assert set(curves["variant"]) == {*VARIANTS, "random"}
    assert (curves.groupby("variant").size() == 9).all()
    first = curves[curves["fraction"] == 0]
    # Nothing removed yet: every variant starts from the same image, and so does chance.
    assert first["deletion"].nunique() == 1 and first["insertion"].nunique() == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"maskers": ["gauss"]}, "unknown masker 'gauss'"),
        ({"explainers": ["lime"]}, "unknown explainer 'lime'"),
        (
            {"budget": {**SMALL["explain"]["budget"], "permutation": 100}},
            r"explain.budget.permutation is 100; 28×28 images need at least 2·784\+1 = 1569",
        ),
        ({"top_k": 11}, "explain.top_k is 11; the data has 10 classes: use 1..10"),
    ],
)
def test_explain_refuses_bad_params_before_any_output(
    explained: Path, tmp_path: Path, override: dict, message: str
) -> None:
    params = _params(tmp_path, explain=override)
    with pytest.raises(UserError, match=message):
        explain.main(_explain_args(explained, tmp_path / "out", params))
    assert not (tmp_path / "out").exists()


def test_explain_refuses_a_missing_model_before_any_output(explained: Path, tmp_path: Path) -> None:
    args = _explain_args(explained, tmp_path / "out", _params(tmp_path))
    args[3] = str(tmp_path / "no-model.npz")
    with pytest.raises(UserError, match=r"no-model.npz: missing; run `dvc repro train`"):
        explain.main(args)
    assert not (tmp_path / "out").exists()


def test_summarize_refuses_a_missing_variant(explained: Path, tmp_path: Path) -> None:
    params = _params(tmp_path, explain={"maskers": ["blur", "ns"]})
    with pytest.raises(UserError, match="partition-ns: results missing .* run `dvc repro`"):
        summarize.main([str(explained / "explain"), str(tmp_path / "out"), "--params", str(params)])
    assert not (tmp_path / "out").exists()
