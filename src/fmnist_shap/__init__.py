"""Fashion-MNIST → Flax CNN → evaluation → SHAP explanations, as a reproducible DVC pipeline."""

# Parsed by whatever `python` a stage's command finds on PATH, before anything else of the
# package: this part stays readable by old interpreters, so the wrong one gets one line, not a
# SyntaxError from a module further down.
import sys
from importlib.util import find_spec

# (dvc stands for the locked packages: every install of the project has it; jax is not asked
# for, since the exported model's loaders in `serving` run where jax is absent.)
if sys.version_info < (3, 12) or find_spec("dvc") is None:
    sys.exit(
        f"error: {sys.executable} (Python {sys.version.split()[0]}) cannot run this project, which needs Python 3.12 or 3.13 with "
        "the packages of requirements.lock: activate the venv first (`. .venv/bin/activate`) "
        "or run through make (`make repro`), then run the command again"
    )

from fmnist_shap.environment import apply_xla_settings

__version__ = "0.1.0"

# Before any jax computation of any stage, worker or test: the same bits on any x86-64 CPU.
apply_xla_settings()
