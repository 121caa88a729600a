"""The global stage's throughput on this machine: images/s with 1 and 2 Dask workers, side by
side in one run, per variant of params.yaml's `global.variants`, and the time for all 10k test
images projected from it.

    python benchmarks/global_bench.py          # (or: make bench-global) about 3 minutes

Each cluster is warmed first (every worker builds the model and compiles once, as in a long
run), then timed on the first `--per-class` test images of every class. Nothing is asserted.
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fmnist_shap.data import load_classes, load_split  # noqa: E402
from fmnist_shap.global_explain import (  # noqa: E402
    GlobalParams,
    dask_client,
    explain_many,
    selected_images,
)
from fmnist_shap.params import load_params  # noqa: E402
from fmnist_shap.variants import ExplainParams  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=4, help="timed images per class")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml", "global", GlobalParams)
    explain_params = load_params(REPO / "params.yaml", "explain", ExplainParams)
    prepared = REPO / "data" / "prepared"
    test, classes = load_split(prepared / "test.npz"), load_classes(prepared / "classes.json")
    model = REPO / "models" / "model.npz"
    background = load_split(REPO / "data" / "prepared" / "train.npz").images_NHW
    timed = selected_images(test.labels_N, len(classes), args.per_class)
    warm = timed[:: max(1, len(timed) // 4)][:4]
    rates: dict[tuple[str, int], float] = {}
    for workers in args.workers:
        start = time.perf_counter()
        with dask_client(None, workers) as client:
            for variant in params.variants:  # every worker builds the model and compiles once
                explain_many(
                    model,
                    background,
                    test.images_NHW[warm],
                    test.labels_N[warm],
                    warm,
                    (variant,),
                    explain_params,
                    1,
                    client,
                )
            warmed = time.perf_counter() - start
            for variant in params.variants:
                result = explain_many(
                    model,
                    background,
                    test.images_NHW[timed],
                    test.labels_N[timed],
                    timed,
                    (variant,),
                    explain_params,
                    params.chunk_size,
                    client,
                )
                rates[variant, workers] = len(timed) / result.seconds
        print(f"{workers} worker(s): cluster start and warm-up {warmed:.1f} s", flush=True)

    print(f"\n{len(timed)} test images per variant, chunks of {params.chunk_size}, warm workers:")
    header = "| variant | " + " | ".join(f"{w} worker(s), images/s" for w in args.workers)
    print(header + " | speed-up | s/image, 1 worker | all 10k, " + f"{max(args.workers)} workers |")
    print("|---" * (len(args.workers) + 4) + "|")
    total, per_worker = 0.0, 0.0
    for variant in params.variants:
        row = [rates[variant, w] for w in args.workers]
        speedup = row[-1] / row[0]
        ten_k = 10_000 / row[-1]
        total += ten_k
        per_worker += 10_000 / row[0]
        cells = " | ".join(f"{r:.2f}" for r in row)
        print(f"| {variant} | {cells} | {speedup:.2f}× | {1 / row[0]:.3f} | {ten_k / 60:.1f} min |")
    print(
        f"\nAll 10k test images, every variant: about {total / 60:.0f} min on this machine "
        f"({max(args.workers)} workers); on W workers that each have a machine's cores to "
        f"themselves, at most about {per_worker / 60:.0f}/W min (one worker's rate, W-fold)."
    )


if __name__ == "__main__":
    main()
