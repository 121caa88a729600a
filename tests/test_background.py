"""fmnist_shap.background on maps whose shares are known by construction."""

import numpy as np
import pytest

from fmnist_shap.background import background_shares


def test_shares_on_hand_made_maps() -> None:
    image = np.zeros((1, 10, 10), np.uint8)
    image[0, :, 5:] = 200  # the right half is the garment, the left half background
    on_garment = np.zeros((1, 10, 10))
    on_garment[0, :, 5:] = 1.0
    quarter_on_background = on_garment.copy()
    quarter_on_background[0, :, :5] = -1 / 3  # |·| mass 50 × 1/3 against 50 × 1
    mass, top = background_shares(
        np.concatenate([image] * 3),
        np.concatenate([on_garment, quarter_on_background, np.zeros((1, 10, 10))]),
    )
    assert mass == pytest.approx([0.0, 0.25, 0.0])
    assert top[:2] == pytest.approx([0.0, 0.0])  # the top 10 pixels are all on the garment
    assert top[2] == pytest.approx(0.5)  # a map of zeros: the first 10 pixels (row 0), half black


def test_the_top_pixels_on_the_background_count() -> None:
    image = np.full((1, 10, 10), 50, np.uint8)
    image[0, 0, :] = 0  # ten background pixels
    attribution = np.zeros((1, 10, 10))
    attribution[0, 0, :4] = 5.0  # four of the top ten on the background
    attribution[0, 5, :6] = -4.0  # six on the garment (sign does not matter)
    mass, top = background_shares(image, attribution)
    assert top == pytest.approx([0.4])
    assert mass == pytest.approx([20 / 44])
