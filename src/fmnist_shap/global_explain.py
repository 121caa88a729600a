"""Class-level explanations: the per-class mean of the true-class attribution maps over many
test images, computed in chunks of images on a Dask cluster.

By default the stage starts a `LocalCluster` itself (one single-threaded worker process per
core); with `global.scheduler` or `$DASK_SCHEDULER_ADDRESS` it sends the chunks to an existing
cluster instead. The model file's bytes are scattered to every worker once, and each worker
process keeps the model it built from them for all its chunks. Workers need this project's
environment (the same `requirements.lock` and `pip install -e .`), not the data files.

Deterministic by construction: every image is explained on its own with a seed derived from
its test-set index (`explain.base.draw_seed`: explain.seed, index, method), so its map does not
depend on the chunk or the worker that computed it, and equals its map in the explain stage
for the same method, budget and classes; the per-class means are taken on the client over all maps in
test-set order. 1, 2 or 3 workers and any chunk size give bit-identical maps (tested), and a
chunk lost with a worker is recomputed elsewhere with the same result (tested).

Outputs, under the stage's folder:
    maps.npz                 `<variant>.signed`, `<variant>.absolute`: (classes, H, W) float32
                             means; `class_names`, `images_per_class`
    plots/<variant>.png      one column per class: the signed mean over the absolute mean
    metrics.json             images explained per variant (byte-stable)
    timing.json              seconds, images/s, workers, chunks (differ on every run)
"""

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import atomic_dir, npz_bytes, write_bytes, write_json
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import UserError
from fmnist_shap.explain.registry import SPECS
from fmnist_shap.params import require
from fmnist_shap.processes import children_killed_on_error
from fmnist_shap.variants import ALL_VARIANTS, ExplainParams

# Every method that runs without TensorFlow (the Keras ones would need it on every worker).
GLOBAL_VARIANTS = tuple(v.name for v in ALL_VARIANTS if not SPECS[v.explainer].needs_tensorflow)
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT = "5s"
PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")  # distributed's network protocols


def _is_address(text: str) -> bool:
    """protocol://host:port with one of Dask's protocols."""
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in PROTOCOLS and bool(parts.hostname) and port is not None


@dataclasses.dataclass(frozen=True)
class GlobalParams:
    """The global stage's settings: params.yaml's `global` section, every key required."""

    variants: tuple[str, ...]  # explain variants to average, e.g. integrated_gradients
    per_class: int | None  # the first N test images of every class; None: every test image
    chunk_size: int  # images per Dask task
    workers: int | None  # LocalCluster worker processes; None: one per core
    scheduler: str | None  # an existing cluster's scheduler address; None: a LocalCluster

    def __post_init__(self) -> None:
        require(len(self.variants) > 0, "global.variants", "must list at least one")
        for name in self.variants:
            require(
                name in GLOBAL_VARIANTS,
                "global.variants",
                f"has {name!r}; use any of {', '.join(GLOBAL_VARIANTS)}",
            )
        require(
            self.per_class is None or self.per_class > 0,
            "global.per_class",
            "must be > 0, or null for every test image",
        )
        require(self.chunk_size > 0, "global.chunk_size", "must be > 0, e.g. 8")
        require(
            self.workers is None or self.workers > 0,
            "global.workers",
            "must be > 0, or null for one per core",
        )
        require(
            self.scheduler is None or _is_address(self.scheduler),
            "global.scheduler",
            f"is {self.scheduler!r}; use a Dask scheduler's address such as "
            "tcp://10.0.0.5:8786 (protocol://host:port), or null for a local cluster",
        )

    def address(self) -> str | None:
        """The scheduler to use: params.yaml's, else $DASK_SCHEDULER_ADDRESS, else none."""
        return self.scheduler or os.environ.get(SCHEDULER_ENV) or None


def selected_images(labels_N: np.ndarray, num_classes: int, per_class: int | None) -> np.ndarray:
    """Test indices: the first `per_class` of every class, in test-set order (all if None)."""
    if per_class is None:
        return np.arange(len(labels_N), dtype=np.int64)
    counts = np.bincount(labels_N, minlength=num_classes)
    if counts.min() < per_class:
        raise UserError(
            f"params.yaml: global.per_class is {per_class}; the test set has only "
            f"{counts.min()} images of its rarest class: lower it, or null for all"
        )
    chosen = [np.flatnonzero(labels_N == c)[:per_class] for c in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def chunks_of(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


# --- inside a worker process -------------------------------------------------------------

_worker_contexts: dict[str, object] = {}  # model bytes' SHA-256 → its explain.base.Context


def _worker_context(model_bytes: bytes, params: ExplainParams):
    """The CNN in `model_bytes` as a method's context, built once per worker process and kept
    for later chunks."""
    from fmnist_shap.caches import enable_compilation_cache
    from fmnist_shap.explain.base import Context
    from fmnist_shap.model import load_model, make_predict_fn

    key = hashlib.sha256(model_bytes).hexdigest()
    if key not in _worker_contexts:
        enable_compilation_cache()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.npz"
            path.write_bytes(model_bytes)
            model = load_model(path)
        _worker_contexts[key] = Context(model, make_predict_fn(model, params.batch_size), params)
    return _worker_contexts[key]


def explain_chunk(
    model_bytes: bytes,
    background_BHW: np.ndarray | None,
    variant_name: str,
    test_index_N: np.ndarray,
    images_NHW: np.ndarray,
    labels_N: np.ndarray,
    params: ExplainParams,
) -> np.ndarray:
    """The true-class attribution map (N, H, W) float32 of each image of one chunk, by the
    method the registry builds for the variant (seeded by test index, as in explain)."""
    from fmnist_shap.explain.registry import build

    variant = next(v for v in ALL_VARIANTS if v.name == variant_name)
    context = dataclasses.replace(
        _worker_context(model_bytes, params), params=params, background_BHW=background_BHW
    )
    method = build(variant.explainer, variant.masker)
    classes_N1 = labels_N.astype(np.int64)[:, None]
    attributions = method.attribute(context, images_NHW, classes_N1, test_index_N)
    return attributions.values_NHWK[..., 0]


# --- on the client ------------------------------------------------------------------------


@contextmanager
def dask_client(address: str | None, workers: int) -> Iterator:
    """A client of the cluster at `address`, or of a LocalCluster of `workers` single-threaded
    worker processes started here and closed on exit."""
    from distributed import Client, LocalCluster

    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise UserError(
                f"global: no Dask scheduler answers at {address} within {CONNECT_TIMEOUT} "
                f"({type(error).__name__}); start one (`dask scheduler`, then `dask worker "
                f"{address}`), or unset global.scheduler and ${SCHEDULER_ENV} for a local cluster"
            ) from None
        with client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    # Ctrl-C or an error, in the work or in the close: the workers go now, not after a
    # graceful close.
    with children_killed_on_error(), cluster, Client(cluster) as client, children_killed_on_error():
        yield client


@dataclasses.dataclass(frozen=True)
class GlobalResult:
    maps: dict[str, np.ndarray]  # variant → (N, H, W) per-image maps, in test-set order
    test_index_N: np.ndarray
    labels_N: np.ndarray
    seconds: float
    workers: int
    chunks: int


def explain_many(
    model_path: str | os.PathLike,
    background_BHW: np.ndarray | None,
    images_NHW: np.ndarray,
    labels_N: np.ndarray,
    test_index_N: np.ndarray,
    variants: tuple[str, ...],
    explain_params: ExplainParams,
    chunk_size: int,
    client,
    on_chunk: Callable[[int, int], None] | None = None,
) -> GlobalResult:
    """Every variant's map of every image, computed chunk by chunk on `client`'s cluster."""
    from distributed import as_completed

    start = time.perf_counter()
    # A key of its own (hash=False): with the default content hash, a second call on the same
    # client could scatter under the key the first call's future is releasing, and lose it.
    model_future = client.scatter(Path(model_path).read_bytes(), broadcast=True, hash=False)
    background_future = (
        None
        if background_BHW is None
        else client.scatter(background_BHW, broadcast=True, hash=False)
    )
    positions = chunks_of(np.arange(len(test_index_N)), chunk_size)
    futures = {}
    for variant in variants:
        for rows in positions:
            future = client.submit(
                explain_chunk,
                model_future,
                background_future,
                variant,
                test_index_N[rows],
                images_NHW[rows],
                labels_N[rows],
                explain_params,
                pure=False,
            )
            futures[future] = (variant, rows)
    maps = {v: np.zeros((len(test_index_N), *images_NHW.shape[1:]), np.float32) for v in variants}
    chunks = len(futures)
    for done, future in enumerate(as_completed(futures), start=1):
        # Dropped once read: the cluster keeps a result as long as its future lives.
        variant, rows = futures.pop(future)
        maps[variant][rows] = future.result()
        del future
        if on_chunk is not None:
            on_chunk(done, chunks)
    workers = len(client.scheduler_info(n_workers=-1)["workers"])
    return GlobalResult(maps, test_index_N, labels_N, time.perf_counter() - start, workers, chunks)


def class_means(
    maps_NHW: np.ndarray, labels_N: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Per class, the mean of the signed maps and of their absolute values: (classes, H, W).

    numpy's pairwise sums over a contiguous per-class array: the same maps in the same order
    give the same bits."""
    signed, absolute = [], []
    for c in range(num_classes):
        of_class = np.ascontiguousarray(maps_NHW[labels_N == c], dtype=np.float64)
        signed.append(of_class.mean(axis=0))
        absolute.append(np.abs(of_class).mean(axis=0))
    return {
        "signed": np.stack(signed).astype(np.float32),
        "absolute": np.stack(absolute).astype(np.float32),
    }


def grid_png(means: dict[str, np.ndarray], class_names: tuple[str, ...], title: str) -> bytes:
    """One column per class: the signed mean (red: towards the class, blue: against it) above
    the absolute mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmnist_shap.pngs import figure_png

    num_classes = len(class_names)
    figure, axes = plt.subplots(2, num_classes, figsize=(1.6 * num_classes, 3.9))
    limit = float(np.abs(means["signed"]).max()) or 1.0
    for c, name in enumerate(class_names):
        axes[0, c].imshow(means["signed"][c], cmap="bwr", vmin=-limit, vmax=limit)
        axes[0, c].set_title(name, fontsize=9)
        axes[1, c].imshow(means["absolute"][c], cmap="magma")
        for ax in axes[:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mean", fontsize=9)
    axes[1, 0].set_ylabel("mean |·|", fontsize=9)
    figure.suptitle(title, fontsize=10)
    png = figure_png(figure, dpi=70)
    plt.close(figure)
    return png


def write_global(
    result: GlobalResult, class_names: tuple[str, ...], out_dir: str | os.PathLike
) -> None:
    """maps.npz, plots/, metrics.json and timing.json; plots and maps replace the old ones
    only once complete."""
    out = Path(out_dir)
    num_classes = len(class_names)
    arrays: dict[str, np.ndarray] = {
        "class_names": np.array(class_names),
        "images_per_class": np.bincount(result.labels_N, minlength=num_classes).astype(np.int64),
    }
    with atomic_dir(out / "plots") as plots:
        for variant, maps in result.maps.items():
            means = class_means(maps, result.labels_N, num_classes)
            arrays |= {f"{variant}.{kind}": array for kind, array in means.items()}
            title = (
                f"{variant}: mean true-class attribution over "
                f"{len(result.labels_N)} test images ({len(result.labels_N) // num_classes} a class)"
            )
            write_bytes(plots / f"{variant}.png", grid_png(means, class_names, title))
    write_bytes(out / "maps.npz", npz_bytes(arrays))
    images = len(result.test_index_N)
    write_json(out / "metrics.json", {v: {"images": images} for v in result.maps})
    total = images * len(result.maps)
    write_json(
        out / "timing.json",
        {
            "seconds": round(result.seconds, 3),
            "images_per_s": round(total / result.seconds, 3),
            "workers": result.workers,
            "chunks": result.chunks,
        },
    )


def run_global(
    test_npz: str,
    train_npz: str,
    classes_json: str,
    model_path: str,
    params: GlobalParams,
    explain_params: ExplainParams,
    on_chunk: Callable[[int, int], None] | None = None,
) -> tuple[GlobalResult, tuple[str, ...]]:
    """Check the inputs, then explain the selected images on the cluster."""
    for path, stage in (
        (test_npz, "prepare"),
        (train_npz, "prepare"),
        (classes_json, "prepare"),
        (model_path, "train"),
    ):
        if not Path(path).is_file():
            raise UserError(f"{path}: missing; run `dvc repro {stage}`")
    test, class_names = load_split(test_npz), load_classes(classes_json)
    # Training images are sent to the workers only for a method that draws from them.
    needs_background = any(
        SPECS[v.explainer].needs_background for v in ALL_VARIANTS if v.name in params.variants
    )
    background = load_split(train_npz).images_NHW if needs_background else None
    indices = selected_images(test.labels_N, len(class_names), params.per_class)
    workers = params.workers or os.cpu_count() or 1
    with dask_client(params.address(), workers) as client:
        result = explain_many(
            model_path,
            background,
            test.images_NHW[indices],
            test.labels_N[indices],
            indices,
            params.variants,
            explain_params,
            params.chunk_size,
            client,
            on_chunk,
        )
    return result, class_names
