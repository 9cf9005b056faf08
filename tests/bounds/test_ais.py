"""AIS against closed-form log p(x): PPCA, a two-site hierarchy and a positive latent."""

import math

import numpy as np
import pytest
import torch
from ground_truth import Hierarchy, ScaleMixture, make_ppca, set_diagonal_guide

import pyrogen
from pyrogen.bounds.ais import _chunks, ais, annealing_schedule
from pyrogen.bounds.weights import CHUNK_ELEMENTS
from pyrogen.errors import ConfigError, ContractError


def check_against_exact(r, exact, max_mean_error=0.05, z_spread=(0.5, 1.8)):
    """Two-sided: every point within 4 s.e., the mean error small, and the z-scores' spread
    neither collapsed (an inflated s.e.) nor blown up (an understated one)."""
    err = (r.log_px - exact).double()
    z = (err / r.stderr).numpy()
    assert abs(err.mean().item()) < max_mean_error, f"mean error {err.mean().item():.4f} nats"
    assert np.all(np.abs(z) < 4), f"z-scores {np.round(z, 2).tolist()}"
    lo, hi = z_spread
    assert lo < z.std() < hi, f"z-scores' spread {z.std():.3f} not in ({lo}, {hi})"


def test_schedules_run_from_zero_to_one_and_increase():
    for kind in ("sigmoid", "linear", "geometric"):
        b = annealing_schedule(50, kind)
        assert b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all(), kind
    with pytest.raises(ConfigError):
        annealing_schedule(10, "cosine")


def test_exact_posterior_guide_makes_every_chain_exact():
    # every increment (b_t - b_{t-1}) log p(x) is exact: a schedule that does not sum to 1, or a
    # weight taken after instead of before the transition, shows here to 1e-9
    m, x = make_ppca(diagonal=False, n=6)
    m.set_exact_guide()
    r = ais(m.model, m.guide, x, num_chains=4, num_steps=20, leapfrog_steps=3)
    err = (r.log_weights - m.exact_log_likelihood(x)).abs().max().item()
    assert err < 1e-9, f"max |log w - log p(x)| = {err:.3g}"


@pytest.mark.slow
def test_ais_recovers_exact_ppca_likelihood_where_importance_sampling_cannot():
    # a guide too narrow and off-centre: IS with the same number of model calls is far off
    m, x = make_ppca(n=30)
    set_diagonal_guide(m, widen=0.5, shift=0.2)
    exact = m.exact_log_likelihood(x)
    r = ais(m.model, m.guide, x, num_chains=16, num_steps=150, leapfrog_steps=5)
    check_against_exact(r, exact)
    assert 0.4 < r.acceptance.mean().item() < 0.95, r.acceptance
    iwae = pyrogen.evaluate(m.model, m.guide, x, ks=[16]).points["log_px"].to_numpy()
    assert (exact.numpy() - iwae).mean() > 5 * abs((r.log_px - exact).mean().item())


@pytest.mark.slow
def test_ais_through_a_two_site_hierarchy():
    hierarchy = Hierarchy()
    x = hierarchy.marginal.sample((20,))
    r = ais(hierarchy.model, hierarchy.guide, x, num_chains=16, num_steps=100, leapfrog_steps=5)
    check_against_exact(r, hierarchy.marginal.log_prob(x))


def test_a_positive_latent_moves_through_its_bijection_with_the_log_det():
    sm = ScaleMixture()
    torch.manual_seed(3)
    x = sm.sample(20)
    r = ais(sm.model, sm.guide, x, num_chains=16, num_steps=100, leapfrog_steps=5)
    check_against_exact(r, sm.exact_log_likelihood(x))


def test_seeded_runs_repeat_and_different_seeds_differ():
    m, x = make_ppca(n=5)
    set_diagonal_guide(m, widen=1.5)
    runs = [ais(m.model, m.guide, x, num_chains=4, num_steps=10, seed=s) for s in (1, 1, 2)]
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)
    assert not torch.equal(runs[0].log_weights, runs[2].log_weights)


def test_no_graph_is_kept_and_no_parameter_gets_a_gradient():
    m, x = make_ppca(n=5)
    r = ais(m.model, m.guide, x, num_chains=4, num_steps=5)
    assert not r.log_px.requires_grad and not r.log_weights.requires_grad
    assert all(p.grad is None for p in m.parameters())


def test_pilot_adaptation_sets_a_step_size_per_point():
    m, x = make_ppca(n=8)
    set_diagonal_guide(m, widen=1.0)
    x = x * torch.linspace(0.2, 5, 8)[:, None]
    r = ais(m.model, m.guide, x, num_chains=4, num_steps=150, leapfrog_steps=3)
    assert 0.45 < r.acceptance.mean().item() < 0.9, r.acceptance
    assert r.step_size.unique().numel() > 1
    frame = r.to_frame()
    assert list(frame.columns) == ["ais", "ais_stderr", "ais_acceptance", "ais_step_size"]
    assert r.summary()["num_points"] == 8


def test_chunks_bound_the_tensor_of_chains_points_and_dims():
    for n, chains, d in [(500, 16, 784), (3, 10_000, 784), (10, 4, 2)]:
        points, group = _chunks(n, chains, d, None)
        assert points * group * d <= max(CHUNK_ELEMENTS // 8, d) and group <= chains
    m, x = make_ppca(n=7)
    whole = ais(m.model, m.guide, x, num_chains=6, num_steps=5, batch_size=3)
    assert whole.log_weights.shape == (6, 7)


def test_a_latent_outside_the_data_plate_is_named():
    import pyro
    import pyro.distributions as dist

    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(g, 1.0).expand([x.shape[0]]), obs=x[:, 0])

    def guide(x):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    with pytest.raises(ContractError, match="'g'"):
        ais(model, guide, torch.zeros(3, 1), num_chains=2, num_steps=2)


@pytest.mark.parametrize("bad", [dict(adapt="always"), dict(num_chains=0)])
def test_bad_settings_are_refused(bad):
    m, x = make_ppca(n=2)
    with pytest.raises(ConfigError):
        ais(m.model, m.guide, x, num_steps=2, **bad)


def test_public_names():
    assert pyrogen.ais is ais and callable(pyrogen.bdmc) and callable(pyrogen.inference_gaps)
    assert math.isfinite(Hierarchy().marginal.log_prob(torch.zeros(3, dtype=torch.float64)))
