"""Training and explaining on whatever device jax uses (a GPU where one is installed).

    python benchmarks/accelerator.py --raw data/raw            # default params: time and accuracy
    python benchmarks/accelerator.py --raw data/raw --sweep    # also other training settings

Prints the device, seconds per training epoch (the first includes compilation), test accuracy,
and seconds per image for each explain variant on the first correct/wrong test images. With
`--sweep`, test accuracy of other (epochs, batch size, learning rate) settings: what a shorter
training schedule costs in accuracy. Numbers come from the same code as the pipeline's stages.
"""

import argparse
import dataclasses
import time

import jax
import numpy as np

from fmnist_shap.data import CLASS_NAMES
from fmnist_shap.explain.base import Context
from fmnist_shap.explain.registry import build
from fmnist_shap.explain.selection import select_samples, top_classes
from fmnist_shap.model import init_model, make_predict_fn
from fmnist_shap.params import load_params
from fmnist_shap.raw import PrepareParams, load_raw, split_train_val
from fmnist_shap.train import TrainParams, fit
from fmnist_shap.variants import ExplainParams

SWEEP = (  # (epochs, batch_size, lr), cosine schedule
    (6, 128, 0.002),
    (5, 128, 0.002),
    (4, 128, 0.002),
    (4, 128, 0.003),
    (3, 128, 0.003),
    (4, 256, 0.004),
    (3, 256, 0.004),
    (2, 128, 0.003),
)


def train_and_score(train, val, test, params: TrainParams) -> tuple[object, list[float], float]:
    """Train from the params' seed; return the model, per-epoch seconds and test accuracy."""
    model = init_model(params.seed, len(CLASS_NAMES), train.images_NHW.shape[1:])
    stamps = [time.perf_counter()]
    fit(model, train, val, params, on_epoch=lambda log: stamps.append(time.perf_counter()))
    accuracy = float((make_predict_fn(model)(test.images_NHW).argmax(-1) == test.labels_N).mean())
    return model, list(np.diff(stamps)), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per sweep setting")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform}: {device.device_kind}")
    train_full, test = load_raw(args.raw)
    train, val = split_train_val(train_full, load_params(args.params, "prepare", PrepareParams))
    params = load_params(args.params, "train", TrainParams)
    model, seconds, accuracy = train_and_score(train, val, test, params)
    print(
        f"train {params.epochs} epochs (batch {params.batch_size}): "
        f"{', '.join(f'{s:.1f}' for s in seconds)} s per epoch, {sum(seconds):.1f} s in all; "
        f"test accuracy {accuracy:.4f}"
    )

    explain_params = load_params(args.params, "explain", ExplainParams)
    predict = make_predict_fn(model, explain_params.batch_size)
    samples = select_samples(
        predict(test.images_NHW), test.labels_N, explain_params.samples_per_set
    )
    images = test.images_NHW[samples.test_index_N]
    variants = [(e, m) for e in explain_params.explainers for m in explain_params.maskers]
    variants += [(g, None) for g in explain_params.gradient_explainers]
    context = Context(model, predict, explain_params, train.images_NHW)
    classes_NK = top_classes(predict(images), explain_params.top_k)
    for explainer, masker in variants:
        start = time.perf_counter()
        result = build(explainer, masker).attribute(
            context, images, classes_NK, samples.test_index_N
        )
        total = time.perf_counter() - start
        name = f"{explainer}-{masker}" if masker else explainer
        print(
            f"explain {name:22s} {len(images)} images: "
            f"{result.seconds_per_image:.3f} s/image, {total:.1f} s with set-up"
        )

    if args.sweep:
        for epochs, batch_size, lr in SWEEP:
            accuracies = []
            for seed in range(args.seeds):
                setting = dataclasses.replace(
                    params, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed
                )
                _, seconds, accuracy = train_and_score(train, val, test, setting)
                accuracies.append(accuracy)
            print(
                f"sweep epochs {epochs} batch {batch_size} lr {lr}: test accuracy "
                f"{' '.join(f'{a:.4f}' for a in accuracies)} (mean {np.mean(accuracies):.4f}), "
                f"{sum(seconds):.1f} s"
            )


if __name__ == "__main__":
    main()
