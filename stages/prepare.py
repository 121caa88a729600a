"""DVC stage `prepare`: verified raw IDX files → train/val/test arrays and class names."""

import argparse
from pathlib import Path

from fmnist_shap.data import save_classes, save_split
from fmnist_shap.errors import run_cli
from fmnist_shap.params import load_params
from fmnist_shap.raw import PrepareParams, load_raw, split_train_val, subset_test


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir", help="directory with the four decompressed IDX files")
    parser.add_argument("out_dir", help="where train.npz, val.npz, test.npz, classes.json go")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "prepare", PrepareParams)
    train_full, test_full = load_raw(args.raw_dir)
    train, val = split_train_val(train_full, params)
    test = subset_test(test_full, params)

    out = Path(args.out_dir)
    save_split(out / "train.npz", train)
    save_split(out / "val.npz", val)
    save_split(out / "test.npz", test)
    save_classes(out / "classes.json")
    print(f"prepare: train {len(train)}, val {len(val)}, test {len(test)} images → {out}")


if __name__ == "__main__":
    run_cli(main, stage="prepare")
