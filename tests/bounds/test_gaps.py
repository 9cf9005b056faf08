"""The inference-gap decomposition against exact answers on PPCA and the two-site hierarchy."""

import numpy as np
import pytest
import torch
from ground_truth import Hierarchy, make_ppca, set_diagonal_guide

from pyrogen.bounds.ais import ais
from pyrogen.bounds.gaps import inference_gaps
from pyrogen.errors import ConfigError


def test_with_the_exact_posterior_guide_both_gaps_vanish():
    # the full-covariance guide is exact: q* must be of the guide's own family (a mean-field q*
    # would leave an approximation gap of KL > 0.01 here) and start at its parameters
    m, x = make_ppca(diagonal=False, n=10)
    m.set_exact_guide()
    for steps, tol in ((0, 1e-9), (30, 5e-3)):
        p = inference_gaps(m.model, m.guide, x, steps=steps, eval_particles=200).points
        for col in ("approximation_gap", "amortization_gap"):
            assert p[col].abs().max() < tol, (steps, col, p[col].abs().max())
    assert np.allclose(p["elbo"], m.exact_log_likelihood(x).numpy(), atol=1e-9)


def test_the_two_gaps_sum_to_log_px_minus_elbo_exactly():
    m, x = make_ppca(n=10)
    set_diagonal_guide(m, widen=1.5, shift=0.5)
    p = inference_gaps(m.model, m.guide, x, steps=20, eval_particles=100).points
    total = p["approximation_gap"] + p["amortization_gap"]
    assert np.abs(total - (p["log_px"] - p["elbo"])).max() < 1e-12
    assert (p["gap"] == p["log_px"] - p["elbo"]).all()


def test_a_misplaced_encoder_is_an_amortization_gap_and_is_with_q_star_is_exact():
    m, x = make_ppca(n=30)
    set_diagonal_guide(m, widen=1.5, shift=0.5)
    exact = m.exact_log_likelihood(x).numpy()
    g = inference_gaps(m.model, m.guide, x, steps=200, eval_particles=500)
    p, s = g.points, g.summary.iloc[0]
    # q* fixes the encoder's shift and widening: the amortization gap is large and significant
    assert (
        s["amortization_gap"] > 0.5
        and s["amortization_gap"] > 10 * s["amortization_gap_data_stderr"]
    )
    # IS with q* agrees with the closed form, two-sided, with a calibrated standard error
    z = (p["is_star"] - exact) / p["is_star_stderr"]
    assert abs((p["is_star"] - exact).mean()) < 0.05
    assert (z.abs() < 4).all() and 0.5 < z.std() < 1.8, z.describe()
    # the approximation gap is KL(q* || p(z | x)) for a diagonal q*: small and not negative
    assert -0.01 < s["approximation_gap"] < 0.2, s["approximation_gap"]
    assert s["khat_star_gt_0.7"] <= s["khat_gt_0.7"]
    assert (p["khat_star"] < 0.5).mean() > 0.9


def test_no_optimization_leaves_q_star_at_the_amortized_guide():
    m, x = make_ppca(n=10)
    set_diagonal_guide(m, widen=1.5, shift=0.5)
    s = inference_gaps(m.model, m.guide, x, steps=0, eval_particles=2000).summary.iloc[0]
    se = np.hypot(s["elbo_stderr"], s["elbo_star_stderr"])
    assert abs(s["amortization_gap"]) < 4 * se, (s["amortization_gap"], se)


def test_a_two_site_hierarchy_with_ais_as_the_best_estimate():
    hierarchy = Hierarchy()
    x = hierarchy.marginal.sample((10,))
    r = ais(hierarchy.model, hierarchy.guide, x, num_chains=8, num_steps=50, leapfrog_steps=3)
    g = inference_gaps(hierarchy.model, hierarchy.guide, x, steps=150, eval_particles=300, ais=r)
    p, s = g.points, g.summary.iloc[0]
    assert s["best"] in ("iwae", "is_star", "ais") and "ais" in p
    assert s["amortization_gap"] > 0  # the prior as a guide is far from each posterior
    assert s["approximation_gap"] > -3 * s["approximation_gap_data_stderr"]
    exact = hierarchy.marginal.log_prob(x).numpy()
    assert abs((p["log_px"] - exact).mean()) < 0.05


def test_bad_settings_are_refused():
    m, x = make_ppca(n=3)
    with pytest.raises(ConfigError):
        inference_gaps(m.model, m.guide, x, eval_particles=1)
    r = ais(m.model, m.guide, x[:2], num_chains=2, num_steps=2)
    with pytest.raises(ConfigError):
        inference_gaps(m.model, m.guide, x, steps=1, eval_particles=10, ais=r)
    assert torch.is_tensor(r.log_px)
