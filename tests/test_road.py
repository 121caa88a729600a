"""ROAD's noisy linear imputation (fmnist_shap.road) on images small enough to check by hand."""

import numpy as np
import pytest

from fmnist_shap.road import NEIGHBOURS, impute

NO_NOISE = np.random.default_rng(0)


def test_the_weights_are_the_reference_ones() -> None:
    assert sum(w for _, _, w in NEIGHBOURS) == pytest.approx(1.0)
    assert sorted({(abs(r) + abs(c), w) for r, c, w in NEIGHBOURS}) == [(1, 1 / 6), (2, 1 / 12)]


def test_a_centre_pixel_is_the_weighted_mean_of_its_eight_neighbours() -> None:
    image = np.array([[0, 12, 0], [12, 99, 12], [0, 12, 0]], np.float64)
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    out = impute(image, removed, 0.0, NO_NOISE)
    assert out[1, 1] == pytest.approx(4 * 12 / 6)  # edges 1/6 each, corners 1/12 of 0
    assert np.array_equal(out[~removed], image[~removed])  # kept pixels untouched


def test_neighbours_outside_the_image_drop_out_and_removed_ones_are_solved_jointly() -> None:
    row = np.array([[3.0, -1, -1, 9.0]])  # one row: only left and right neighbours
    removed = np.array([[False, True, True, False]])
    out = impute(row, removed, 0.0, NO_NOISE)
    # x1 = (3 + x2) / 2 and x2 = (x1 + 9) / 2: a straight line from 3 to 9
    assert out[0, 1:3] == pytest.approx([5.0, 7.0])


def test_noise_is_seeded_and_of_the_given_size() -> None:
    image = np.full((28, 28), 100.0)
    removed = np.zeros((28, 28), bool)
    removed[4:24, 4:24] = True
    first = impute(image, removed, 2.0, np.random.default_rng(7))
    again = impute(image, removed, 2.0, np.random.default_rng(7))
    assert np.array_equal(first, again)
    residual = first[removed] - 100.0  # the mean of a constant image is the constant
    assert abs(residual.mean()) < 0.3 and residual.std() == pytest.approx(2.0, rel=0.1)


def test_nothing_to_keep_is_an_error() -> None:
    with pytest.raises(ValueError, match="every pixel removed"):
        impute(np.zeros((2, 2)), np.ones((2, 2), bool), 0.0, NO_NOISE)


def test_road_ranks_an_oracle_map_first_and_a_random_map_at_chance() -> None:
    """A planted model: the class's logit is the mean brightness of a known 8×8 region of a
    textured image. Removing the oracle's top pixels (the region, MoRF) lowers it far more than
    removing the oracle's bottom ones (LeRF); a random map's two orders score alike (chance)."""
    from scipy.special import softmax

    from fmnist_shap.faithfulness import attribution_order, random_order
    from fmnist_shap.road import FRACTIONS, road_batch

    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (28, 28))
    region = np.zeros((28, 28), bool)
    region[10:18, 10:18] = True
    image[region] = 255.0  # bright: imputing it from darker neighbours lowers the logit

    def probability(images_NHW: np.ndarray) -> np.ndarray:
        logit = (images_NHW[:, region].mean(axis=1) - 150.0) / 15.0  # against a logit of 0
        return softmax(np.stack([logit, np.zeros_like(logit)], axis=1), axis=1)[:, 0]

    chance = random_order(784, 0, 0)
    scores = {}
    for name, attribution in (("oracle", region * 1.0), ("random", rng.uniform(size=(28, 28)))):
        morf, lerf = road_batch(
            image, attribution_order(attribution, chance), FRACTIONS, 5.0, np.random.default_rng(1)
        )
        scores[name] = (probability(morf).mean(), probability(lerf).mean())
    oracle_morf, oracle_lerf = scores["oracle"]
    random_morf, random_lerf = scores["random"]
    # measured: oracle 0.088 (MoRF) / 0.999 (LeRF), random 0.998 / 0.990
    assert oracle_morf < 0.5 < min(random_morf, random_lerf) and oracle_lerf - oracle_morf > 0.8
    assert abs(random_lerf - random_morf) < 0.05
