"""Load the exported model and compute logits: what a user of `models/export/` runs.

Each loader takes uint8 (or 0–255) pixels (N, H, W) and returns float32 logits (N, classes).
The SavedModel and TFLite loaders need TensorFlow only; the `jax.export` one needs jax only.

`python -m fmnist_shap.serving IMAGES.npy OUT_DIR FORMAT=PATH… [--without-jax]` runs loaders
in a fresh process and saves each one's logits as OUT_DIR/FORMAT.npy (the export stage checks
every file this way); `--without-jax` makes jax and flax unimportable first, to show the
files do not need them.
"""

import argparse
import importlib.abc
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIGNATURE = "serving_default"  # the SavedModel's signature: pixels (uint8) → logits


def saved_model_logits(path: str | os.PathLike, pixels_NHW: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return serve(pixels=tf.constant(pixels_NHW, tf.uint8))["logits"].numpy()


def tflite_logits(path: str | os.PathLike, pixels_NHW: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_path=str(path), num_threads=1
    )  # same bits on any core count
    (given,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(given["index"], pixels_NHW.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], pixels_NHW.astype(np.uint8))
    interpreter.invoke()
    return interpreter.get_tensor(output["index"])


def jax_export_logits(path: str | os.PathLike, pixels_NHW: np.ndarray) -> np.ndarray:
    from jax import export

    exported = export.deserialize(bytearray(Path(path).read_bytes()))
    return np.asarray(exported.call(pixels_NHW.astype(np.uint8)))


LOADERS = {
    "saved_model": saved_model_logits,
    "tflite": tflite_logits,
    "jax_export": jax_export_logits,
}


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes the named top-level packages unimportable."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            raise ImportError(f"{fullname} is blocked: this loader must work without it")
        return None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("images_npy")
    parser.add_argument("out_dir")
    parser.add_argument("files", nargs="+", metavar="FORMAT=PATH", help=", ".join(LOADERS))
    parser.add_argument("--without-jax", action="store_true")
    args = parser.parse_args(argv)
    if args.without_jax:
        sys.meta_path.insert(0, _Refuse(("jax", "jaxlib", "flax")))
    pixels = np.load(args.images_npy)
    for item in args.files:
        kind, _, path = item.partition("=")
        if kind not in LOADERS:
            parser.error(f"{item}: unknown format {kind!r}; use one of {', '.join(LOADERS)}")
        logits = np.asarray(LOADERS[kind](path, pixels), np.float32)
        np.save(Path(args.out_dir) / f"{kind}.npy", logits)


if __name__ == "__main__":
    main(sys.argv[1:])
