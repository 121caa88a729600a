"""DVC stage `train`: fit the CNN, log per-epoch curves with dvclive, save the weights."""

import argparse
from pathlib import Path

from dvclive import Live

from fmnist_shap.artifacts import atomic_dir
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.environment import record_environment
from fmnist_shap.errors import run_cli
from fmnist_shap.model import init_model, save_model
from fmnist_shap.params import load_params
from fmnist_shap.train import EpochLog, TrainParams, fit, training_fingerprint


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("train_npz")
    parser.add_argument("val_npz")
    parser.add_argument("classes_json", help="the class names: the model's output count")
    parser.add_argument("model_out", help="weights file (.npz)")
    parser.add_argument("log_dir", help="dvclive directory: metrics.json and plots/metrics/*.tsv")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "train", TrainParams)
    enable_compilation_cache()  # a rerun loads the compiled step instead of compiling it
    train, val = load_split(args.train_npz), load_split(args.val_npz)
    classes = load_classes(args.classes_json)
    model = init_model(params.seed, len(classes), train.images_NHW.shape[1:])

    # dvclive writes into a temporary directory that replaces log_dir only on success.
    with atomic_dir(args.log_dir) as tmp_log_dir:
        with Live(str(tmp_log_dir), save_dvc_exp=False, dvcyaml=False) as live:

            def log_epoch(log: EpochLog) -> None:
                live.step = log.epoch  # curves are drawn against the epoch number, from 1
                live.log_metric("train_loss", log.train_loss)
                live.log_metric("val_loss", log.val_loss)
                live.log_metric("val_accuracy", log.val_accuracy)
                live.next_step()

            history = fit(model, train, val, params, on_epoch=log_epoch)
        save_model(args.model_out, model)
    record_environment(
        Path(args.log_dir) / "environment.json", training_fingerprint=training_fingerprint()
    )
    print(f"train: {len(history)} epochs, val_accuracy {history[-1].val_accuracy:.4f}")


if __name__ == "__main__":
    run_cli(main, stage="train")
