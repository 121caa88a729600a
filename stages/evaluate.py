"""DVC stage `evaluate`: test-set metrics, confusion matrix rows, classification report."""

import argparse
from pathlib import Path

from fmnist_shap.artifacts import write_json, write_text
from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import load_classes, load_split
from fmnist_shap.errors import run_cli
from fmnist_shap.evaluation import confusion_csv, report_text, test_metrics
from fmnist_shap.model import load_model, make_predict_fn


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("test_npz")
    parser.add_argument("classes_json")
    parser.add_argument("model")
    parser.add_argument("out_dir", help="metrics.json, confusion.csv, classification_report.txt")
    args = parser.parse_args(argv)

    test, class_names = load_split(args.test_npz), load_classes(args.classes_json)
    enable_compilation_cache()  # a rerun loads the compiled step instead of compiling it
    predicted = make_predict_fn(load_model(args.model))(test.images_NHW).argmax(-1)

    out = Path(args.out_dir)
    metrics = test_metrics(test.labels_N, predicted, class_names)
    write_text(out / "confusion.csv", confusion_csv(test.labels_N, predicted, class_names))
    write_text(
        out / "classification_report.txt", report_text(test.labels_N, predicted, class_names)
    )
    write_json(out / "metrics.json", metrics)
    print(f"evaluate: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    run_cli(main)
