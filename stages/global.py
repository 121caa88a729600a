"""DVC stage `global`: per-class mean attribution maps over many test images, computed in
chunks on a Dask cluster (a LocalCluster started here unless a scheduler address is given)."""

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from fmnist_shap.environment import record_environment
from fmnist_shap.errors import run_cli
from fmnist_shap.global_explain import GlobalParams, run_global, write_global
from fmnist_shap.params import load_params
from fmnist_shap.variants import ExplainParams


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test_npz")
    parser.add_argument("train_npz", help="background images of Expected Gradients")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir", help="maps.npz, plots/, metrics.json, timing.json")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "global", GlobalParams)
    explain_params = load_params(args.params, "explain", ExplainParams)
    # The bar appears with the first chunk done: a run stopped by bad input prints one line only.
    with tqdm(
        desc="global: chunks", unit="chunk", file=sys.stderr, mininterval=2, delay=1e-3
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result, class_names = run_global(
            args.test_npz,
            args.train_npz,
            args.classes_json,
            args.model,
            params,
            explain_params,
            progress,
        )
    write_global(result, class_names, args.out_dir)
    record_environment(Path(args.out_dir) / "environment.json")
    images = len(result.test_index_N) * len(result.maps)
    print(
        f"global: {len(result.test_index_N)} images × {len(result.maps)} variants in "
        f"{result.seconds:.1f} s on {result.workers} workers ({images / result.seconds:.2f} images/s)"
    )


if __name__ == "__main__":
    run_cli(main, stage="global")
