"""The export stage's work: the trained model as files other programs load.

    saved_model/        TensorFlow SavedModel of the Keras twin; signature `serving_default`:
                        pixels uint8 [None, H, W] → logits float32 [None, classes]
    model.tflite        the same, converted for TensorFlow Lite
    model.jax_export    `jax.export` serialisation of the Flax model (StableHLO), for jax
                        programs without this repository's code

Every file is reloaded in a fresh process (`python -m fmnist_shap.serving`; the SavedModel and
the TFLite file with jax made unimportable) and its logits on the whole test set compared with
the Flax model's: the largest difference, the agreement of predicted classes and the file
sizes are the stage's metrics. A file that disagrees is an error, and nothing is written.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
import tensorflow as tf
from jax import export
from tensorflow.core.protobuf import fingerprint_pb2

from fmnist_shap.artifacts import atomic_dir, write_bytes, write_json
from fmnist_shap.errors import UserError
from fmnist_shap.keras_twin import build_twin, check_parity
from fmnist_shap.model import CNN, make_predict_fn
from fmnist_shap.serving import SIGNATURE

# Largest |logit difference| to Flax an exported file may have. TFLite's kernels sum in
# another order than XLA's (measured ~6e-5); a wrong conversion is off by whole units.
EXPORT_TOLERANCE = 1e-3
FILES = {"saved_model": "saved_model", "tflite": "model.tflite", "jax_export": "model.jax_export"}


class _Serving(tf.Module):
    """The twin behind a uint8 signature, so a server feeds raw pixels."""

    def __init__(self, twin: keras.Model, image_hw: tuple[int, int]):
        super().__init__()
        self.twin = twin
        spec = tf.TensorSpec([None, *image_hw], tf.uint8, name="pixels")
        self.serve = tf.function(self._logits, input_signature=[spec])

    def _logits(self, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": self.twin(tf.cast(pixels, tf.float32), training=False)}


def write_saved_model(twin: keras.Model, image_hw: tuple[int, int], path: Path) -> None:
    module = _Serving(twin, image_hw)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})
    # The fingerprint's content hashes stay; its random UUID would make every export differ.
    fingerprint = path / "fingerprint.pb"
    if fingerprint.is_file():
        definition = fingerprint_pb2.FingerprintDef.FromString(fingerprint.read_bytes())
        definition.ClearField("uuid")
        fingerprint.write_bytes(definition.SerializeToString(deterministic=True))


def tflite_bytes(saved_model: Path) -> bytes:
    """The SavedModel's serving signature as TFLite, weights frozen into the file.

    (`from_saved_model` keeps Keras 3's weights as resource variables that the interpreter
    never initialises: a 7 kB file that computes NaN.)"""
    loaded = tf.saved_model.load(str(saved_model))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [loaded.signatures[SIGNATURE]], loaded
    )
    return converter.convert()


def jax_export_bytes(model: CNN) -> bytes:
    """`jax.export` of uint8 pixels (b, H, W) → logits, for any batch size b; the same bytes
    from any checkout folder."""
    (batch,) = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, *model.image_hw), jnp.uint8)
    # No Python tracebacks in the program's locations: they hold the checkout's absolute paths,
    # and the same model exported from another folder would be another file.
    previous = jax.config.jax_traceback_in_locations_limit
    jax.config.update("jax_traceback_in_locations_limit", 0)
    try:
        return bytes(export.export(jax.jit(model))(spec).serialize())
    finally:
        jax.config.update("jax_traceback_in_locations_limit", previous)


def reloaded_logits(files: dict[str, Path], images_NHW: np.ndarray) -> dict[str, np.ndarray]:
    """Each exported file's logits, computed by fresh Python processes running side by side:
    one for the TensorFlow files, with jax unimportable, and one for the `jax.export` file."""
    logits = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        np.save(work / "images.npy", images_NHW.astype(np.uint8))
        groups = (
            ([k for k in files if k != "jax_export"], ["--without-jax"]),
            (["jax_export"], []),
        )
        running = []
        for kinds, flags in groups:
            command = [sys.executable, "-m", "fmnist_shap.serving", str(work / "images.npy")]
            command += [str(work), *(f"{k}={files[k]}" for k in kinds), *flags]
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            running.append((kinds, process))
        try:
            for kinds, process in running:
                _, stderr = process.communicate()
                if process.returncode != 0:
                    last = (stderr.strip().splitlines() or ["no output"])[-1]
                    raise RuntimeError(f"export: reloading {', '.join(kinds)} failed: {last}")
                logits |= {k: np.load(work / f"{k}.npy") for k in kinds}
        finally:
            for _, process in running:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return logits


def export_model(
    model: CNN, images_NHW: np.ndarray, out_dir: str | os.PathLike
) -> dict[str, float | dict[str, float]]:
    """Write the three files into `out_dir` (replaced only when all three check out) and
    return the metrics: the twin's parity, and per file its difference, agreement and size."""
    predict = make_predict_fn(model)
    flax_logits = predict(images_NHW)
    twin = build_twin(model)
    metrics: dict[str, float | dict[str, float]] = {
        "twin_max_logit_diff": check_parity(twin, predict, images_NHW),
        "images": len(images_NHW),
    }
    with atomic_dir(out_dir) as folder:
        write_saved_model(twin, model.image_hw, folder / FILES["saved_model"])
        write_bytes(folder / FILES["tflite"], tflite_bytes(folder / FILES["saved_model"]))
        write_bytes(folder / FILES["jax_export"], jax_export_bytes(model))
        reloaded = reloaded_logits({k: folder / name for k, name in FILES.items()}, images_NHW)
        for kind, name in FILES.items():
            logits = reloaded[kind]
            difference = float(np.abs(logits - flax_logits).max())
            if not difference <= EXPORT_TOLERANCE:
                raise UserError(
                    f"export: {name} gives logits {difference:.2e} from the Flax model's "
                    f"(> {EXPORT_TOLERANCE:.0e}); nothing was written: report the versions "
                    "in requirements.lock with this message"
                )
            agreement = float(np.mean(logits.argmax(-1) == flax_logits.argmax(-1)))
            metrics[kind] = {
                "max_logit_diff": difference,
                "class_agreement": agreement,
                "size_bytes": _size(folder / name),
            }
    return metrics


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file())


def write_export_metrics(metrics: dict, metrics_dir: str | os.PathLike) -> None:
    write_json(Path(metrics_dir) / "metrics.json", metrics)
