"""The same bits on another CPU? docs/environment.md's cross-CPU table, measured by this script.

Prints this machine (CPU model, instruction sets jax may use, cores), then two md5s under the
project's XLA settings: `training_fingerprint()` (four training steps on fixed synthetic images,
what `make verify` compares) and the weights after one epoch on the first 1024 real training
images with params.yaml's `train` settings. Two machines that print the same md5s train the
same bits.

    python benchmarks/same_bits.py                          # this machine
    taskset -c 0 python benchmarks/same_bits.py             # one core
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/same_bits.py   # an AVX2-only CPU,
                                 # emulated (Debian's qemu-user; a few minutes)
"""

import argparse
import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from fmnist_shap.environment import machine
from fmnist_shap.params import load_params
from fmnist_shap.raw import load_raw
from fmnist_shap.train import TrainParams, fit, training_fingerprint

IMAGES = 1024


def epoch_md5(raw_dir: Path, params_path: Path) -> str:
    from flax import nnx

    from fmnist_shap.data import Split
    from fmnist_shap.model import init_model

    train, _ = load_raw(raw_dir)
    params = dataclasses.replace(load_params(params_path, "train", TrainParams), epochs=1)
    subset = Split(train.images_NHW[:IMAGES], train.labels_N[:IMAGES])
    model = init_model(params.seed, 10, subset.images_NHW.shape[1:])
    fit(model, subset, Split(subset.images_NHW[:64], subset.labels_N[:64]), params, progress=False)
    weights = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return hashlib.md5(
        b"".join(np.asarray(v.get_value()).tobytes() for _, v in weights)
    ).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    here = machine()
    print(f"machine: {here['cpu']}, {here['cores']} cores, ISA {' '.join(here['isa'])}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
    print(f"training fingerprint: {training_fingerprint()}")
    print(f"one epoch, first {IMAGES} training images: {epoch_md5(args.raw, args.params)}")


if __name__ == "__main__":
    main()
