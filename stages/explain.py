"""DVC stage `explain@…`: one explanation variant's values, image plots, faithfulness and
randomization metrics.

    explain.py partition|permutation --masker blur|telea|ns  TEST CLASSES MODEL OUT_DIR
    explain.py integrated_gradients                          TEST CLASSES MODEL OUT_DIR
    explain.py expected_gradients --background TRAIN_NPZ     TEST CLASSES MODEL OUT_DIR
"""

import argparse
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import write_bytes, write_json, write_text
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.explain import (
    additivity_error,
    explain_variant,
    image_plot_png,
    samples_csv,
    save_values,
    select_samples,
)
from fmnist_shap.faithfulness import faithfulness_curves, randomization_spearman
from fmnist_shap.model import init_model, load_model, make_predict_fn
from fmnist_shap.params import (
    GRADIENT_EXPLAINERS,
    ExplainParams,
    check_explainer,
    check_masker,
    load_params,
)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "explainer", help="partition, permutation, " + ", ".join(GRADIENT_EXPLAINERS)
    )
    parser.add_argument("test_npz")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir")
    parser.add_argument("--masker", help="blur, telea or ns (shap explainers)")
    parser.add_argument("--background", help="training images (expected_gradients)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "explain", ExplainParams)
    gradient = args.explainer in GRADIENT_EXPLAINERS
    if not gradient:
        check_explainer(args.explainer)
        if args.masker is None:
            raise UserError(f"{args.explainer} needs --masker (blur, telea or ns)")
        check_masker(args.masker)
    elif args.masker is not None:
        raise UserError(f"{args.explainer} takes no --masker; drop it")
    if args.explainer == "expected_gradients" and args.background is None:
        raise UserError("expected_gradients needs --background data/prepared/train.npz")
    enable_compilation_cache()  # later stages load what the first one compiled
    test, class_names = load_split(args.test_npz), load_classes(args.classes_json)
    # Only Expected Gradients draws baselines; the flag is accepted for every gradient explainer.
    use_background = args.explainer == "expected_gradients"
    background = load_split(args.background).images_NHW if use_background else None
    model = load_model(args.model)
    predict = make_predict_fn(model, params.batch_size)
    samples = select_samples(predict(test.images_NHW), test.labels_N, params.samples_per_set)
    images = test.images_NHW[samples.test_index_N]
    # The randomization check explains the same images' top-1 class with re-initialised weights.
    random_model = init_model(params.random_weights_seed, model.num_classes, model.image_hw)

    explanations = explain_variant(
        model, predict, images, args.explainer, args.masker, params, background
    )
    top1_N = explanations.classes_NK[:, 0]
    randomized = explain_variant(
        random_model,
        make_predict_fn(random_model, params.batch_size),
        images,
        args.explainer,
        args.masker,
        params,
        background,
        classes_NK=top1_N[:, None],
    )
    curves = faithfulness_curves(
        predict,
        images,
        explanations.values_NHWK[..., 0],
        top1_N,
        params.substrate,
        params.faithfulness_steps,
        params.seed,
    )

    out = Path(args.out_dir)
    name = args.explainer if gradient else f"{args.explainer} · {args.masker}"
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
    write_text(out / "curves.csv", curves.csv())
    metrics = {
        "additivity_max_error": additivity_error(explanations, samples.logits_NC),
        "evals_per_image": explanations.evals_per_image,
        **curves.metrics(),
        "randomization_spearman": randomization_spearman(
            explanations.values_NHWK[..., 0], randomized.values_NHWK[..., 0]
        ),
    }
    write_json(out / "metrics.json", metrics)
    # Timing differs on every run, so it lives apart from the byte-stable outputs.
    write_json(out / "timing.json", {"seconds_per_image": round(explanations.seconds_per_image, 4)})
    print(
        f"explain {name}: deletion AUC {metrics['deletion_auc']:.3f} "
        f"(random {metrics['deletion_auc_random']:.3f}), insertion AUC "
        f"{metrics['insertion_auc']:.3f} (random {metrics['insertion_auc_random']:.3f}), "
        f"randomization rho {metrics['randomization_spearman']:.3f}, "
        f"additivity error {metrics['additivity_max_error']:.2e}, "
        f"{explanations.seconds_per_image:.2f} s/image"
    )


if __name__ == "__main__":
    run_cli(main)
