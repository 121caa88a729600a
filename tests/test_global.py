"""The global stage on real Dask clusters: determinism across workers and chunk sizes, a worker
killed mid-run, an existing cluster by address, and a scheduler that does not answer."""

import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster

from fmnist_shap.data import Split, save_classes, save_split
from fmnist_shap.errors import UserError
from fmnist_shap.global_explain import (
    SCHEDULER_ENV,
    GlobalParams,
    class_means,
    dask_client,
    explain_many,
    run_global,
    selected_images,
    write_global,
)
from fmnist_shap.model import save_model
from fmnist_shap.variants import ExplainParams
from tests.conftest import NUM_CLASSES, repo_params

VARIANTS = ("integrated_gradients", "permutation-blur", "expected_gradients")


@pytest.fixture(scope="module")
def explain_params() -> ExplainParams:
    budget = {
        "partition": 50,
        "permutation": 1569,  # the minimum for 28×28
        "integrated_gradients": 16,
        "expected_gradients": 8,
        "gradient": 8,
    }
    return repo_params("explain", ExplainParams, budget=budget, seed=0, batch_size=512)


@pytest.fixture(scope="module")
def inputs(trained_model, raw_splits: tuple[Split, Split], tmp_path_factory) -> dict:
    """The test model's file and the first real test image of every class."""
    folder = tmp_path_factory.mktemp("global")
    save_model(folder / "model.npz", trained_model)
    test = raw_splits[1]
    indices = selected_images(test.labels_N, NUM_CLASSES, 1)
    return {
        "model": folder / "model.npz",
        "background": raw_splits[0].images_NHW[:300],
        "images": test.images_NHW[indices],
        "labels": test.labels_N[indices],
        "indices": indices,
        "test": test,
    }


def _local(workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def _maps(inputs: dict, explain_params: ExplainParams, client: Client, chunk: int, **kw):
    return explain_many(
        inputs["model"],
        inputs["background"],
        inputs["images"],
        inputs["labels"],
        inputs["indices"],
        VARIANTS,
        explain_params,
        chunk,
        client,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(inputs: dict, explain_params: ExplainParams):
    """The maps on one worker, one image per chunk."""
    with dask_client(None, workers=1) as client:
        return _maps(inputs, explain_params, client, chunk=1)


def test_selected_images_are_the_first_of_every_class(inputs: dict) -> None:
    labels = inputs["test"].labels_N
    chosen = selected_images(labels, NUM_CLASSES, 3)
    assert list(chosen) == sorted(chosen) and len(chosen) == 30
    assert np.bincount(labels[chosen]).tolist() == [3] * NUM_CLASSES
    for c in range(NUM_CLASSES):  # the first three of the class, no later one
        assert set(chosen[labels[chosen] == c]) == set(np.flatnonzero(labels == c)[:3])
    assert len(selected_images(labels, NUM_CLASSES, None)) == len(labels)
    with pytest.raises(UserError, match="global.per_class is 1001; .* only 1000 images"):
        selected_images(labels, NUM_CLASSES, 1001)


@pytest.mark.slow
def test_maps_are_bit_identical_for_any_workers_and_chunk_size(
    inputs: dict, explain_params: ExplainParams, reference
) -> None:
    assert reference.workers == 1 and reference.chunks == len(VARIANTS) * 10
    for variant in VARIANTS:
        assert reference.maps[variant].shape == (10, 28, 28)
        assert np.abs(reference.maps[variant]).max() > 0, variant
    for workers, chunk in ((2, 3), (3, 7)):
        with dask_client(None, workers) as client:
            result = _maps(inputs, explain_params, client, chunk)
        assert result.workers == workers
        for variant in VARIANTS:
            assert np.array_equal(result.maps[variant], reference.maps[variant]), (
                workers,
                chunk,
                variant,
            )


@pytest.mark.slow
def test_two_runs_on_one_client_each_get_the_model(
    inputs: dict, explain_params: ExplainParams, reference
) -> None:
    """The model bytes are scattered under a fresh key per run: a second run on the same client
    does not lose them while the first run's reference is released (it did with content keys)."""
    with dask_client(None, workers=1) as client:
        for _ in range(2):
            result = explain_many(
                inputs["model"],
                None,
                inputs["images"],
                inputs["labels"],
                inputs["indices"],
                ("integrated_gradients",),
                explain_params,
                5,
                client,
            )
            assert np.array_equal(
                result.maps["integrated_gradients"], reference.maps["integrated_gradients"]
            )


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(
    inputs: dict, explain_params: ExplainParams, reference
) -> None:
    killed: list[int] = []
    with _local(2) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address → process id

        def kill_one(done: int, total: int) -> None:
            if not killed:  # after the first chunk: the others are queued or running
                pid = next(iter(pids.values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        result = _maps(inputs, explain_params, client, chunk=1, on_chunk=kill_one)
        after = set(client.run(os.getpid).values())
    assert killed and killed[0] not in after  # the nanny started a new worker process
    for variant in VARIANTS:
        assert np.array_equal(result.maps[variant], reference.maps[variant]), variant


@pytest.mark.slow
def test_runs_on_an_existing_cluster_by_address(
    inputs: dict, explain_params: ExplainParams, reference, monkeypatch, tmp_path: Path
) -> None:
    test = inputs["test"]
    save_split(tmp_path / "test.npz", test)
    save_split(tmp_path / "train.npz", Split(inputs["background"], np.zeros(300, np.int64)))
    save_classes(tmp_path / "classes.json")
    params = GlobalParams(VARIANTS, per_class=1, chunk_size=4, workers=None, scheduler=None)
    with _local(2) as cluster:
        monkeypatch.setenv(SCHEDULER_ENV, cluster.scheduler_address)
        result, names = run_global(
            str(tmp_path / "test.npz"),
            str(tmp_path / "train.npz"),
            str(tmp_path / "classes.json"),
            str(inputs["model"]),
            params,
            explain_params,
        )
        assert len(cluster.workers) == 2  # the cluster's own workers did the work
    assert result.workers == 2 and names[9] == "Ankle boot"
    for variant in VARIANTS:
        assert np.array_equal(result.maps[variant], reference.maps[variant]), variant
    write_global(result, names, tmp_path / "out")
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    write_global(result, names, tmp_path / "out")
    again = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {k: v for k, v in first.items() if k != "timing.json"} == {
        k: v for k, v in again.items() if k != "timing.json"
    }
    assert sorted(first) == [
        "expected_gradients.png",
        "integrated_gradients.png",
        "maps.npz",
        "metrics.json",
        "permutation-blur.png",
        "timing.json",
    ]
    with np.load(tmp_path / "out" / "maps.npz", allow_pickle=False) as arrays:
        expected = class_means(reference.maps["permutation-blur"], inputs["labels"], NUM_CLASSES)
        assert np.array_equal(arrays["permutation-blur.signed"], expected["signed"])
        assert arrays["images_per_class"].tolist() == [1] * NUM_CLASSES


@pytest.mark.parametrize("where", ["params", "environment"])
def test_a_scheduler_that_does_not_answer_is_a_one_line_error(
    where: str, monkeypatch, tmp_path: Path
) -> None:
    address = "tcp://127.0.0.1:9"  # nothing listens on the discard port
    if where == "environment":
        monkeypatch.setenv(SCHEDULER_ENV, address)
        params = GlobalParams(VARIANTS, 1, 8, None, None)
    else:
        monkeypatch.delenv(SCHEDULER_ENV, raising=False)
        params = GlobalParams(VARIANTS, 1, 8, None, address)
    start = time.perf_counter()
    with (
        pytest.raises(UserError, match=r"no Dask scheduler answers at tcp://127.0.0.1:9 .*"),
        dask_client(params.address(), workers=1),
    ):
        pass
    assert time.perf_counter() - start < 30  # a few seconds, not a hang


def test_class_means_are_per_class_means() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(12, 4, 4)).astype(np.float32)
    labels = np.array([0, 1, 2] * 4)
    means = class_means(maps, labels, 3)
    np.testing.assert_allclose(means["signed"][1], maps[labels == 1].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(
        means["absolute"][2], np.abs(maps[labels == 2]).mean(axis=0), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variants": ("deep",)}, "global.variants has 'deep'; use any of"),
        ({"variants": ()}, "global.variants must list at least one"),
        ({"per_class": 0}, "global.per_class must be > 0, or null"),
        ({"chunk_size": 0}, "global.chunk_size must be > 0"),
        ({"workers": 0}, "global.workers must be > 0, or null"),
    ],
)
def test_bad_global_params_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        repo_params("global", GlobalParams, **changes)


@pytest.mark.slow
def test_a_test_images_map_is_the_one_explain_computes(
    trained_model, inputs: dict, explain_params: ExplainParams, reference
) -> None:
    """The explain stage explains a review-set image's true class first, next to other classes
    and with the re-initialised model alongside (`Method.attribute_pair`); global explains the
    true class alone. Same method, budget, seed and test index: the same bits."""
    from fmnist_shap.explain.base import Context
    from fmnist_shap.explain.registry import build
    from fmnist_shap.explain.selection import top_classes
    from fmnist_shap.model import init_model, make_predict_fn
    from fmnist_shap.variants import ALL_VARIANTS

    def context(model) -> Context:
        predict = make_predict_fn(model, explain_params.batch_size)
        return Context(model, predict, explain_params, inputs["background"])

    trained, randomized = context(trained_model), context(init_model(1, NUM_CLASSES, (28, 28)))
    images, labels = inputs["images"][:3], inputs["labels"][:3]
    ranked = top_classes(trained.predict(images), NUM_CLASSES)
    # As explain's review set: the true class first, then the model's top others.
    classes_NK = np.stack(
        [[y, *[c for c in r if c != y][:2]] for y, r in zip(labels, ranked, strict=True)]
    )
    for variant in ALL_VARIANTS:
        if variant.name not in VARIANTS:
            continue
        method = build(variant.explainer, variant.masker)
        explained, _ = method.attribute_pair(
            trained, randomized, images, classes_NK, inputs["indices"][:3]
        )
        assert np.array_equal(explained.values_NHWK[..., 0], reference.maps[variant.name][:3]), (
            variant.name
        )
