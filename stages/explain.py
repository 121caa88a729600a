"""DVC stage `explain@<explainer>-<masker>`: SHAP values, image plots and metrics for one variant."""

import argparse
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import write_bytes, write_json, write_text
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import run_cli
from fmnist_shap.explain import (
    additivity_error,
    explain,
    image_plot_png,
    samples_csv,
    save_values,
    select_samples,
)
from fmnist_shap.model import load_model, make_predict_fn
from fmnist_shap.params import ExplainParams, check_explainer, check_masker, load_params


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("explainer", help="partition or permutation")
    parser.add_argument("masker", help="blur, telea or ns")
    parser.add_argument("test_npz")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "explain", ExplainParams)
    check_explainer(args.explainer)
    check_masker(args.masker)
    test, class_names = load_split(args.test_npz), load_classes(args.classes_json)
    predict = make_predict_fn(load_model(args.model), params.batch_size)
    samples = select_samples(predict(test.images_NHW), test.labels_N, params.samples_per_set)
    images = test.images_NHW[samples.test_index_N]

    explanations = explain(predict, images, args.explainer, args.masker, params)

    out = Path(args.out_dir)
    name = f"{args.explainer} · {args.masker}"
    for set_name, rows in (
        ("correct", np.flatnonzero(samples.correct_N)),
        ("wrong", np.flatnonzero(~samples.correct_N)),
    ):
        png = image_plot_png(
            explanations, samples, images, class_names, rows, f"{name} · {set_name} predictions"
        )
        write_bytes(out / f"{set_name}.png", png)
    save_values(out / "values.npz", explanations, samples, images, class_names)
    write_text(out / "samples.csv", samples_csv(samples, class_names))
    additivity = additivity_error(explanations, samples.logits_NC)
    write_json(
        out / "metrics.json",
        {"additivity_max_error": additivity, "evals_per_image": explanations.evals_per_image},
    )
    # Timing differs on every run, so it lives apart from the byte-stable outputs.
    write_json(out / "timing.json", {"seconds_per_image": round(explanations.seconds_per_image, 4)})
    print(
        f"explain {name}: additivity error {additivity:.2e}, "
        f"{explanations.seconds_per_image:.2f} s/image"
    )


if __name__ == "__main__":
    run_cli(main)
