"""DVC stage `explain`: every explain variant params.yaml selects, in one process — values,
image plots, faithfulness and randomization metrics per variant."""

import argparse
import sys
from pathlib import Path

from fmnist_shap.environment import record_environment
from fmnist_shap.errors import run_cli
from fmnist_shap.explain.job import Inputs
from fmnist_shap.explain.outputs import VariantOutputs, write_outputs
from fmnist_shap.explain.runner import explain_all
from fmnist_shap.params import load_params
from fmnist_shap.variants import ExplainParams


def report(result: VariantOutputs) -> None:
    m = result.metrics
    print(
        f"explain {result.variant.label}: deletion AUC {m['deletion_auc']:.3f} "
        f"(random {m['deletion_auc_random']:.3f}), insertion AUC {m['insertion_auc']:.3f} "
        f"(random {m['insertion_auc_random']:.3f}), randomization rho "
        f"{m['randomization_spearman']:.3f}, additivity error {m['additivity_max_error']:.2e}, "
        f"{result.seconds:.1f} s",
        file=sys.stderr,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test_npz")
    parser.add_argument("train_npz", help="background images of Expected Gradients")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir", help="metrics.json, timing.json, variants/, plots/")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--workers", type=int, help="processes (default: one per core); outputs do not change"
    )
    args = parser.parse_args(argv)

    params = load_params(args.params, "explain", ExplainParams)
    inputs = Inputs(args.test_npz, args.train_npz, args.classes_json, args.model, params)
    results = explain_all(inputs, args.workers, on_variant=report)
    write_outputs(results, args.out_dir)
    record_environment(Path(args.out_dir) / "environment.json")


if __name__ == "__main__":
    run_cli(main, stage="explain")
