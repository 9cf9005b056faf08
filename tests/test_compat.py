"""k-hat is the same on both ArviZ generations (0.2x: ``arviz.psislw``; 1.x: ``arviz_stats``)."""

import importlib.metadata
from statistics import NormalDist

import numpy as np
import pytest
import torch

from pyrogen.bounds import MIN_KHAT_DRAWS, pareto_khat, psis


def fixed_weights(num: int) -> np.ndarray:
    """[K, 5] log-weights at evenly spaced quantiles: lognormal and Pareto-tailed weights.

    Columns: w ~ Normal(0, s) for s = 0.5, 1, 2 (lognormal weights), and w ~ Exponential with mean
    0.3 and 0.8 (Pareto weights whose true tail shape k is 0.3 and 0.8).
    """
    u = (np.arange(num) + 0.5) / num
    z = np.array([NormalDist().inv_cdf(p) for p in u])
    return np.stack([0.5 * z, z, 2.0 * z, -0.3 * np.log1p(-u), -0.8 * np.log1p(-u)], axis=1)


# computed once with ArviZ 0.23.4 (Python 3.11) and ArviZ 1.3.0 / arviz-stats 1.3.3 (Python
# 3.12): the two agree to every printed digit
EXPECTED = {
    30: [0.308668, 0.383427, 0.530896, 0.385466, 0.521904],
    100: [0.22143, 0.36814, 0.663086, 0.37727, 0.663432],
    101: [0.221634, 0.368006, 0.662241, 0.37727, 0.663432],
    226: [0.145275, 0.331434, 0.714371, 0.346166, 0.723699],
    1000: [0.108569, 0.290492, 0.664867, 0.32342, 0.756556],
    5000: [0.086251, 0.260288, 0.617259, 0.31125, 0.779786],
}


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _generations() -> list:
    """Each ArviZ generation, skipped where it is not installed."""
    arviz = _installed("arviz")
    zero = arviz is not None and arviz.startswith("0.")
    one = _installed("arviz-stats") is not None and not (
        _installed("arviz-stats") or ""
    ).startswith("0.")
    return [
        pytest.param(0, marks=pytest.mark.skipif(not zero, reason="ArviZ 0.2x not installed")),
        pytest.param(1, marks=pytest.mark.skipif(not one, reason="ArviZ 1.x not installed")),
    ]


@pytest.mark.parametrize("generation", _generations())
@pytest.mark.parametrize("num", sorted(EXPECTED))
def test_khat_matches_the_fixed_values_on_each_arviz_generation(generation, num):
    khat = psis.pareto_khat(fixed_weights(num), generation=generation)
    np.testing.assert_allclose(
        khat, EXPECTED[num], atol=1e-6, err_msg=f"K={num}, ArviZ generation {generation}"
    )


def test_the_installed_generation_is_found_and_used_by_bounds():
    assert psis.arviz_generation() in (0, 1)
    lw = torch.from_numpy(fixed_weights(1000))
    np.testing.assert_allclose(pareto_khat(lw), EXPECTED[1000], atol=1e-6)


def test_tail_length_follows_arviz_1():
    # floor(K / 5) up to K = 225, then floor(3 sqrt(K))
    assert [psis.tail_length(k) for k in (30, 101, 225, 226, 1000)] == [6, 20, 45, 45, 94]


@pytest.mark.parametrize("generation", _generations())
def test_no_tail_gives_the_same_answer_on_each_generation(generation):
    num = 200
    lw = np.zeros((num, 4))
    lw[:, 1] = np.linspace(0, 1, num)
    lw[-80:, 1] = 1.0  # a constant tail (a bounded weight with mass at its maximum)
    lw[:, 2] = np.linspace(0, 1, num)
    lw[-41:-29, 2] = lw[-41, 2]  # ties at the bottom of the tail: ArviZ 1.x cannot fit it
    lw[:, 3] = np.linspace(0, 1, num)
    lw[::7, 3] = -np.inf  # weights of 0 are ordinary draws
    khat = psis.pareto_khat(lw, generation=generation)
    assert khat[0] == -np.inf and khat[1] == -np.inf, khat
    assert np.isnan(khat[2]), khat
    assert np.isfinite(khat[3]), khat


def test_too_few_draws_give_nan():
    rng = np.random.default_rng(0)
    assert np.isnan(pareto_khat(torch.from_numpy(rng.normal(size=(MIN_KHAT_DRAWS - 1, 3))))).all()
    assert np.isfinite(pareto_khat(torch.from_numpy(rng.normal(size=(MIN_KHAT_DRAWS, 3))))).all()
