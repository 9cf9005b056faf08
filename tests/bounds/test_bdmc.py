"""BDMC on data simulated from PPCA: the sandwich brackets the exact log p(x) and closes with T."""

import math

import pytest
import torch
from ground_truth import make_ppca, set_diagonal_guide

from pyrogen.bounds.bdmc import bdmc, simulate
from pyrogen.errors import ConfigError
from pyrogen.trace import as_pair


def test_simulate_gives_data_and_latents_in_the_chain_layout():
    m, _ = make_ppca(n=1)
    x, start = simulate(as_pair(m), 7, 5)
    assert x.shape == (7, 5) and x.dtype == torch.float64
    z, index = start["z"]
    assert z.shape == (1, 7, 2) and index == 1


@pytest.mark.slow
def test_sandwich_brackets_the_exact_value_and_closes_as_t_grows():
    m, _ = make_ppca(n=1)
    set_diagonal_guide(m, widen=2.0, shift=0.3)
    gaps, ses = {}, {}
    for steps in (2, 150):
        r = bdmc(m.model, m.guide, 20, num_chains=8, num_steps=steps, leapfrog_steps=5, seed=0)
        exact = m.exact_log_likelihood(r.x)
        lower_se = (r.lower_stderr**2).sum().sqrt().item() / 20
        upper_se = (r.upper_stderr**2).sum().sqrt().item() / 20
        # stochastic bounds: on average below and above the truth, up to Monte Carlo error
        assert (r.lower - exact).mean().item() < 3 * lower_se, steps
        assert (r.upper - exact).mean().item() > -3 * upper_se, steps
        gaps[steps], ses[steps] = r.gap, math.hypot(lower_se, upper_se)
        frame = r.to_frame()
        assert (frame["gap"] == frame["upper"] - frame["lower"]).all()
    # the sandwich closes: the drop from T=2 to T=150 exceeds 3 standard errors of the difference
    # (T=5 against T=150 is not resolvable on 20 points: its gap's standard error is 0.10 nats)
    assert gaps[2] - gaps[150] > 3 * math.hypot(ses[2], ses[150]), (gaps, ses)
    assert gaps[150] < 0.1, gaps


def test_reverse_chains_start_from_the_simulated_latents():
    # a guide far off: forward AIS with one step is poor, but reverse AIS starts at the truth
    # and a single weight is the exact log p(x, z) - log q(z | x) at the simulated z
    m, _ = make_ppca(n=1)
    set_diagonal_guide(m, widen=1.0, shift=2.0)
    r = bdmc(m.model, m.guide, 10, num_chains=3, num_steps=1, seed=4)
    torch.manual_seed(4)
    x, start = simulate(as_pair(m), 10, 5)
    assert torch.equal(x, r.x)
    z = start["z"][0][0]
    import pyro.distributions as dist

    log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(
        z @ m.weight.T + m.loc, m.sigma
    ).log_prob(x).sum(-1)
    with torch.no_grad():
        scale = torch.nn.functional.softplus(m.raw_scale_tril.diagonal()) + 1e-6
        log_q = dist.Normal(m.encoder(x), scale).log_prob(z).sum(-1)
    assert torch.allclose(r.upper, (log_p - log_q).detach(), atol=1e-9)


def test_bdmc_needs_the_data_dimension():
    def model(x):
        pass

    with pytest.raises(ConfigError):
        bdmc(model, model, 3)
