"""Background evidence: how much of an explanation sits on the image's background.

Fashion-MNIST's background is pure black (0) on about half of every image's pixels. A map
that puts much of its |attribution|, or many of its most important pixels, there is either
reporting real silhouette evidence (where the garment is not) or an artefact of how the method
removes pixels (a masker's fill, a baseline): the number alone cannot tell which, but it tells
a reviewer where to look (docs/explanations.md).
"""

import numpy as np

TOP_FRACTION = 0.10  # "most important pixels": the top 10% by |attribution|


def background_shares(
    images_NHW: np.ndarray, attributions_NHW: np.ndarray, top_fraction: float = TOP_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of |attribution| on pixels that are exactly 0, and the share of the
    top `top_fraction` pixels by |attribution| that are (ties broken by pixel position). A map
    of zeros has no mass: its mass share is 0."""
    n = len(images_NHW)
    background_NP = images_NHW.reshape(n, -1) == 0
    magnitude_NP = np.abs(attributions_NHW.reshape(n, -1).astype(np.float64))
    total_N = magnitude_NP.sum(axis=1)
    on_background_N = (magnitude_NP * background_NP).sum(axis=1)
    mass_N = np.divide(on_background_N, total_N, out=np.zeros(n), where=total_N > 0)
    top = max(1, round(top_fraction * magnitude_NP.shape[1]))
    ranked_NP = np.argsort(-magnitude_NP, axis=1, kind="stable")[:, :top]
    top_N = np.take_along_axis(background_NP, ranked_NP, axis=1).mean(axis=1)
    return mass_N, top_N
