"""Streaming reduction of a pool of log-weights: the whole pool's table, in bounded memory."""

import math

import numpy as np
import pytest
import torch
from ppca import PPCA

import pyrogen
from pyrogen.bounds import estimators, iwae, pareto_khat
from pyrogen.bounds.estimators import _group_ess
from pyrogen.bounds.psis import tail_length
from pyrogen.bounds.streaming import PoolReducer, khat_buffer_size
from pyrogen.errors import ConfigError


def heavy_pool(num: int, n: int, seed: int) -> torch.Tensor:
    """Log-weights with a heavy right tail (k-hat well above 0.5 for some points)."""
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(num, n, generator=g, dtype=torch.float64) + torch.randn(
        num, n, generator=g, dtype=torch.float64
    ).exp() * torch.linspace(0.2, 3, n, dtype=torch.float64)


def feed_in_random_chunks(lw: torch.Tensor, ks: list[int], seed: int) -> PoolReducer:
    rng = np.random.default_rng(seed)
    cuts = sorted({0, lw.shape[0], *rng.integers(0, lw.shape[0], size=9).tolist()})
    reducer = PoolReducer(ks, lw.shape[0], lw.shape[1])
    for a, b in zip(cuts[:-1], cuts[1:]):
        reducer.update(lw[a:b])
    return reducer


@pytest.mark.parametrize(
    ("num", "ks"),
    [(1000, [1, 10, 100, 1000]), (997, [3, 600]), (5000, [1, 7, 64, 5000]), (30, [2, 30])],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_reduction_equals_the_whole_pool(num, ks, seed):
    lw = heavy_pool(num, 7, seed)
    table = feed_in_random_chunks(lw, ks, seed).table()
    for k in sorted({1, *ks}):
        name = "elbo" if k == 1 else f"iwae_{k}"
        est, se = iwae(lw, k)
        np.testing.assert_allclose(table[name], est.numpy(), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(table[f"{name}_stderr"], se.numpy(), rtol=1e-9, err_msg=name)
    for k in ks:
        np.testing.assert_allclose(table[f"ess_{k}"], _group_ess(lw, k).numpy(), rtol=1e-9)
    np.testing.assert_allclose(table["ess"], _group_ess(lw, num).numpy(), rtol=1e-9)
    # k-hat from the buffer of largest weights equals ArviZ on all K draws
    np.testing.assert_allclose(table["khat"], pareto_khat(lw), rtol=1e-12)
    assert list(table.columns) == list(pyrogen.estimate(lw, ks).columns)


@pytest.mark.parametrize("num", [226, 1000, 5000, 100_000])
def test_khat_buffer_holds_the_tail_and_its_cutoff_and_grows_like_sqrt_k(num):
    rows = khat_buffer_size(num)
    assert tail_length(num) + 1 <= rows <= num
    assert rows <= 18 * math.sqrt(num) + 6


@pytest.mark.parametrize("num", [226, 1000, 10_000])
def test_khat_of_the_largest_draws_equals_khat_of_the_pool(num):
    lw = heavy_pool(num, 5, 3)
    top = lw.topk(khat_buffer_size(num), dim=0).values
    np.testing.assert_allclose(pareto_khat(top, num_draws=num), pareto_khat(lw), rtol=1e-12)


def test_khat_of_the_buffer_changes_when_the_tail_changes():
    lw = heavy_pool(4000, 3, 5)
    base = feed_in_random_chunks(lw, [1, 4000], 0).table()["khat"].to_numpy()
    heavier = lw.clone()
    top = heavier.topk(50, dim=0)
    heavier.scatter_(0, top.indices, top.values * 1.5)
    moved = feed_in_random_chunks(heavier, [1, 4000], 0).table()["khat"].to_numpy()
    assert (moved > base).all(), (base, moved)
    np.testing.assert_allclose(moved, pareto_khat(heavier), rtol=1e-12)


def test_iwae_with_one_group_uses_only_that_groups_draws():
    lw = heavy_pool(997, 4, 2)
    changed = lw.clone()
    changed[600:] += 50.0  # draws past the single group of 600 must not enter IWAE_600
    for a, b in zip(iwae(lw, 600), iwae(changed, 600)):
        torch.testing.assert_close(a, b)


def test_a_reducer_refuses_a_short_or_long_pool():
    reducer = PoolReducer([1, 10], 20, 2)
    reducer.update(torch.zeros(15, 2))
    with pytest.raises(ValueError, match="15 of the pool's 20"):
        reducer.table()
    with pytest.raises(ValueError, match="more than the pool's 20"):
        reducer.update(torch.zeros(6, 2))


def test_evaluate_never_holds_the_pool(monkeypatch):
    """Every chunk evaluate reduces is at most one chunk of particles; the buffer stays small."""
    torch.manual_seed(0)
    m = PPCA(5, 2).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    seen: list[int] = []
    buffers: list[int] = []
    update = PoolReducer.update

    def spy(self, lw):
        seen.append(lw.shape[0])
        update(self, lw)
        buffers.append(self.top.shape[0])

    monkeypatch.setattr(PoolReducer, "update", spy)
    num = 20_000
    ev = pyrogen.evaluate(m.model, m.guide, x, ks=[1, 100, num], chunk_size=512, seed=0)
    assert max(seen) == 512 and sum(seen) == num
    assert max(buffers) == khat_buffer_size(num) < num / 7
    # the same draws as one whole pool under the same seed
    torch.manual_seed(0 * 1_000_003 + 0)
    lw = pyrogen.log_weights(
        m.model, m.guide, x, num_particles=num, chunk_size=512, max_plate_nesting=1
    )
    whole = pyrogen.estimate(lw, [1, 100, num])
    np.testing.assert_allclose(ev.points["log_px"], whole["log_px"], rtol=1e-12)
    np.testing.assert_allclose(ev.points["khat"], whole["khat"], rtol=1e-12)


def test_a_k_whose_buffer_cannot_fit_is_refused_before_any_draw(monkeypatch):
    monkeypatch.setattr(estimators, "_available_bytes", lambda: 2**30)
    m = PPCA(5, 2)
    called = []
    monkeypatch.setattr(estimators, "iter_log_weights", lambda *a, **k: called.append(1))
    with pytest.raises(ConfigError, match=r"K=100000000000000 needs .* GiB .* 1\.0 GiB available"):
        pyrogen.evaluate(m.model, m.guide, torch.zeros(2, 5), ks=[1, 10**14])
    assert not called
