"""DVC stage `evaluate`: test-set metrics, confusion matrix entries, classification report."""

import argparse
from pathlib import Path

from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.environment import record_environment
from fmnist_shap.errors import run_cli
from fmnist_shap.evaluation import write_evaluation
from fmnist_shap.model import load_model, make_predict_fn


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test_npz")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir", help="metrics.json, plots/sklearn/confusion.json, report")
    args = parser.parse_args(argv)

    test, class_names = load_split(args.test_npz), load_classes(args.classes_json)
    model = load_model(args.model)
    enable_compilation_cache()  # a rerun loads the compiled step instead of compiling it
    predicted = make_predict_fn(model)(test.images_NHW).argmax(-1)
    metrics = write_evaluation(args.out_dir, test.labels_N, predicted, class_names)
    record_environment(Path(args.out_dir) / "environment.json")
    print(f"evaluate: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    run_cli(main, stage="evaluate")
