"""ROAD (Rong et al., ICML 2022, "A consistent and efficient evaluation strategy for
attribution methods"): remove pixels and debias, by noisy linear imputation.

Deleting pixels to a constant leaks the class through the shape of what was deleted, so a
deletion curve partly measures that shape. ROAD replaces each removed pixel by the weighted
mean of its eight neighbours (edge neighbours 1/6, corner ones 1/12), solved jointly for all
removed pixels as one sparse linear system, plus a little Gaussian noise; the model's
probability of the class is then read at a growing fraction of removed pixels, most relevant
first (MoRF: should fall fast) or least relevant first (LeRF: should stay high).

This follows the reference code (tleemann/road_evaluation, `NoisyLinearImputer`): the same
weights, the same equations (a neighbour outside the image drops out of its pixel's sum), noise
with a standard deviation of `noise` in the image's units. Written for numpy/scipy, with the
noise drawn from a generator the caller seeds (by test image), so results are deterministic.
"""

import numpy as np
from scipy.sparse import coo_matrix, diags
from scipy.sparse.linalg import spsolve

# (row offset, column offset, weight): the reference's neighbour weights; they sum to 1.
NEIGHBOURS = (
    (1, 1, 1 / 12),
    (0, 1, 1 / 6),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (0, -1, 1 / 6),
    (-1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
)


def impute(
    image_HW: np.ndarray, removed_HW: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """`image_HW` with every pixel where `removed_HW` is True replaced by the weighted mean of
    its neighbours (removed ones solved for jointly), plus N(0, noise²); float64.

    Every connected group of removed pixels needs a kept neighbour somewhere (remove less than
    the whole image), or the system is singular."""
    height, width = image_HW.shape
    flat = image_HW.astype(np.float64).ravel()
    removed = removed_HW.ravel()
    missing = np.flatnonzero(removed)
    if missing.size == 0:
        return flat.reshape(height, width)
    if missing.size == removed.size:
        raise ValueError("ROAD cannot impute an image with every pixel removed")
    variable = np.full(removed.size, -1)
    variable[missing] = np.arange(missing.size)
    row, col = np.divmod(missing, width)
    weight_sum = np.ones(missing.size)  # the weights of the neighbours inside the image
    rhs = np.zeros(missing.size)
    rows, cols, values = [], [], []
    for d_row, d_col, weight in NEIGHBOURS:
        r, c = row + d_row, col + d_col
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        weight_sum[~inside] -= weight
        equation = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        known = ~removed[neighbour]
        rhs[equation[known]] -= weight * flat[neighbour[known]]
        rows.append(equation[~known])
        cols.append(variable[neighbour[~known]])
        values.append(np.full(int((~known).sum()), weight))
    system = coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(missing.size, missing.size),
    ) - diags(weight_sum)
    solved = spsolve(system.tocsc(), rhs)
    out = flat.copy()
    out[missing] = solved + noise * rng.standard_normal(missing.size)
    return out.reshape(height, width)


FRACTIONS = np.round(np.arange(1, 10) / 10, 1)  # the paper's: 10% … 90% of the pixels removed


def road_batch(
    image_HW: np.ndarray,
    order_P: np.ndarray,
    fractions_F: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The imputed images of one pixel ranking (most relevant first), removing the top
    `fractions_F` of it (MoRF) and the bottom (LeRF): two (F, H, W) float32 stacks."""
    num_pixels = order_P.size
    counts = np.round(fractions_F * num_pixels).astype(np.int64)
    stacks = []
    for ranking in (order_P, order_P[::-1]):  # most relevant first, least relevant first
        images = []
        for count in counts:
            removed_P = np.zeros(num_pixels, bool)
            removed_P[ranking[:count]] = True
            images.append(impute(image_HW, removed_P.reshape(image_HW.shape), noise, rng))
        stacks.append(np.stack(images).astype(np.float32))
    return stacks[0], stacks[1]
