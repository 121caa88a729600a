"""DVC stage `export`: the trained model as a SavedModel, a TFLite file and a `jax.export`
artifact, each reloaded in a fresh process and checked against the Flax model on the test set."""

import argparse
from pathlib import Path

from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_split
from fmnist_shap.environment import record_environment
from fmnist_shap.errors import run_cli
from fmnist_shap.export import FILES as FORMATS
from fmnist_shap.export import export_model, write_export_metrics
from fmnist_shap.model import load_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test_npz")
    parser.add_argument("model")
    parser.add_argument("out_dir", help="saved_model/, model.tflite, model.jax_export")
    parser.add_argument("metrics_dir", help="metrics.json")
    args = parser.parse_args(argv)

    test, model = load_split(args.test_npz), load_model(args.model)
    enable_compilation_cache()
    metrics = export_model(model, test.images_NHW, args.out_dir)
    write_export_metrics(metrics, args.metrics_dir)
    record_environment(Path(args.metrics_dir) / "environment.json")
    sizes = ", ".join(f"{kind} {metrics[kind]['size_bytes'] / 1e6:.2f} MB" for kind in FORMATS)
    diffs = ", ".join(f"{kind} {metrics[kind]['max_logit_diff']:.1e}" for kind in FORMATS)
    print(
        f"export: twin parity {metrics['twin_max_logit_diff']:.1e}; max |logit diff| on "
        f"{metrics['images']} test images: {diffs}; {sizes}"
    )


if __name__ == "__main__":
    run_cli(main, stage="export")
