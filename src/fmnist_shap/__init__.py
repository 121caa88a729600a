"""Fashion-MNIST → Flax CNN → evaluation → SHAP explanations, as a reproducible DVC pipeline."""

from fmnist_shap.environment import apply_xla_settings

__version__ = "0.1.0"

# Before any jax computation of any stage, worker or test: the same bits on any x86-64 CPU.
apply_xla_settings()
