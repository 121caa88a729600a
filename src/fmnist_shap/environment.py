"""The XLA settings that give the same bits on any x86-64 CPU, and a record of where a result
was computed.

Measured with one epoch of this project's training (`benchmarks/same_bits.py`, md5 of the
weights): XLA:CPU's default "platform-dependent math" compiles float32 rsqrt/tanh/exp with
refinements it picks by CPU vendor and ISA, so an AMD Zen 2 without AVX-512 trains other weights
than an AMD Zen 4 or an Intel CPU with it. With it off, the weights are bit-identical on AMD Zen 4
(AVX-512), an AMD EPYC-Rome and an Intel Haswell (both AVX2 only), and on 1 or 2 cores; the model
being applied to the whole batch (no row chunking) keeps the core count out of the bits too.

TensorFlow's oneDNN kernels are turned off for the same reason (`ENVIRONMENT_SETTINGS`).

The settings are applied when the package is imported, before jax starts its CPU backend
(jax reads $XLA_FLAGS then), so every stage, worker process and test gets them without anything
in a user's shell. A flag the user already put in $XLA_FLAGS is left as they set it.
"""

import os
import platform
import sys
import warnings
from collections.abc import MutableMapping
from importlib import metadata
from pathlib import Path

XLA_SETTINGS = ("--xla_cpu_enable_platform_dependent_math=false",)
# TensorFlow (the Keras twin's explainers and the export's checks): its oneDNN kernels are
# chosen by instruction set and round differently ("You may see slightly different numerical
# results", TensorFlow's own start-up notice); its Eigen kernels are the same on every x86-64,
# but split an op's sums across as many threads as it may use, so the export's SavedModel logits
# moved in the last bits between 1 and 2 cores (1.05e-05 vs 1.14e-05, measured here under
# `taskset -c 0`): one thread per op, whatever the machine.
ENVIRONMENT_SETTINGS = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1"}


def apply_xla_settings(environ: MutableMapping[str, str] = os.environ) -> str:
    """Add `XLA_SETTINGS` to $XLA_FLAGS (a flag already there keeps the user's value) and
    `ENVIRONMENT_SETTINGS` to the environment (a variable already set keeps its value); returns
    $XLA_FLAGS.

    Warns when jax has already started its backend: the settings then apply only to processes
    started later, and this one may compute other bits than dvc.lock's.
    """
    for name, value in ENVIRONMENT_SETTINGS.items():
        environ.setdefault(name, value)
    flags = environ.get("XLA_FLAGS", "").split()
    names = {flag.split("=")[0] for flag in flags}
    missing = [setting for setting in XLA_SETTINGS if setting.split("=")[0] not in names]
    environ["XLA_FLAGS"] = " ".join(flags + missing)
    if missing and "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            warnings.warn(
                "jax ran before fmnist_shap was imported, so its XLA settings "
                f"{' '.join(missing)} do not apply in this process; import fmnist_shap first",
                stacklevel=2,
            )
    return environ["XLA_FLAGS"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _isa_extensions() -> list[str]:
    """The SIMD extensions XLA:CPU may compile for, as the kernel reports them (Linux)."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


def describe() -> dict:
    """What decides a result's bits besides code, data and params: the locked versions, the
    backend and the XLA and TensorFlow settings.

    This is what a stage's `environment.json` holds, hashed in dvc.lock: the same on every
    machine that computes the same bits, whatever its CPU model or core count (`machine()`).
    No timestamps or host names: a rerun writes the same bytes.
    """
    import jax

    versions = {name: metadata.version(name) for name in ("jax", "jaxlib", "flax", "numpy", "shap")}
    return {
        "packages": versions,
        "platform": f"{sys.platform}-{platform.machine()}",
        "jax_backend": jax.default_backend(),
        "devices": sorted({device.device_kind for device in jax.devices()}),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "settings": {name: os.environ.get(name) for name in ENVIRONMENT_SETTINGS},
    }


def machine() -> dict:
    """Where a result was computed, which (with `XLA_SETTINGS`) does not decide its bits: the
    CPU model, its SIMD extensions, the cores this process may use, Python's version."""
    return {
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "isa": _isa_extensions(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


# Per stage, the machine that last ran it in this workspace (not tracked by git or DVC, so a
# rerun on another machine leaves dvc.lock and `git status` as they were). `make repro` and
# `make pull` start them afresh; `make verify` and the PR report read them to say which stages
# ran here and where (fmnist_shap.review.provenance).
RUNS = Path(".dvc/tmp/runs")


def record_environment(path: str | os.PathLike, **extra: str) -> None:
    """Write `describe()` and `extra` to `path` (JSON): each stage that computes with jax leaves
    one beside its outputs (a DVC output), so `make verify` and the PR report can tell a change
    of versions or settings from a code change."""
    from fmnist_shap.artifacts import write_json

    write_json(path, describe() | extra)


def record_run(stage: str) -> None:
    """Note in this workspace's run records (RUNS) that `stage` ran here, and on what machine;
    the last thing a stage does. Skipped outside a DVC project (a stage's main in a test)."""
    from fmnist_shap.artifacts import write_json

    if Path(".dvc").is_dir():
        write_json(RUNS / f"{stage}.json", machine() | {"stage": stage})
