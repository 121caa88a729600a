"""Additivity: how far attributions plus base values are from the explained logits."""

import numpy as np

from fmnist_shap.explain.base import Attributions


def additivity_error(explanations: Attributions, logits_NC: np.ndarray) -> float:
    """Largest |sum of SHAP values + base value − model output| over images and outputs."""
    explained = np.take_along_axis(logits_NC, explanations.classes_NK, axis=-1)
    total = explanations.values_NHWK.sum(axis=(1, 2)) + explanations.base_values_NK
    return float(np.abs(total - explained).max())
