"""The on-disk XLA compilation cache shared by the pipeline's processes.

Each stage, and each explain worker, is a process of its own and would otherwise recompile the
model's jitted shapes and Flax's eager initialisation ops (several seconds a process here);
with the cache only the first process on a machine compiles and the later ones load the
executables. Cached code is the code a fresh compile produces, so outputs do not change.

(shap itself needs no compiling since 0.54, which dropped numba.)

Location: $FMNIST_SHAP_CACHE, else $XDG_CACHE_HOME/fmnist-shap, else ~/.cache/fmnist-shap.
Deleting it is always safe.
"""

import os
from pathlib import Path

import jax


def cache_root() -> Path:
    if "FMNIST_SHAP_CACHE" in os.environ:
        return Path(os.environ["FMNIST_SHAP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fmnist-shap"


def enable_compilation_cache() -> Path:
    """Persist XLA executables under `cache_root()/jax`; returns that folder."""
    folder = cache_root() / "jax"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
