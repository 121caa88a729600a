"""Fashion-MNIST → Flax CNN → evaluation → SHAP explanations, as a reproducible DVC pipeline."""

__version__ = "0.1.0"
