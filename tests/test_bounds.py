"""The comparison layer against ground truth: PPCA's exact log p(x), a linear-Gaussian hierarchy."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from ppca import PPCA
from pyro.infer import Trace_ELBO
from pyro.infer.importance import vectorized_importance_weights

import pyrogen
from pyrogen.bounds import estimate, evaluate, iwae, log_weights, parse_ks, summarize
from pyrogen.errors import ConfigError, ContractError


def ppca(diagonal=False, seed=0, data_dim=5, latent_dim=2, n=40):
    torch.manual_seed(seed)
    m = PPCA(data_dim, latent_dim, diagonal=diagonal).double()
    with torch.no_grad():
        m.weight.mul_(1.5)
        m.loc.copy_(torch.randn(data_dim))
        m.log_sigma.fill_(math.log(0.7))
    x = dist.MultivariateNormal(m.loc, m.marginal_covariance()).sample((n,))
    return m, x


def set_diagonal_guide_near_posterior(m, widen=1.3):
    """A diagonal guide with the exact posterior mean and widened marginal scales."""
    w, s2 = m.weight, m.sigma**2
    prec = w.T @ w + s2 * torch.eye(m.latent_dim, dtype=w.dtype)
    a = torch.linalg.solve(prec, w.T)
    cov = s2 * torch.linalg.inv(prec)
    with torch.no_grad():
        m.encoder.weight.copy_(a)
        m.encoder.bias.copy_(-a @ m.loc)
        scale = widen * cov.diagonal().sqrt() - 1e-6
        m.raw_scale_tril.diagonal().copy_(scale + torch.log(-torch.expm1(-scale)))


def test_exact_posterior_guide_gives_every_weight_equal_to_log_px():
    m, x = ppca()
    m.set_exact_guide()
    lw = log_weights(m.model, m.guide, x, num_particles=50)
    exact = m.exact_log_likelihood(x)
    assert lw.shape == (50, 40)
    err = (lw - exact).abs().max().item()
    assert err < 1e-9, f"max |w - log p(x)| = {err:.3g} nats"
    table = estimate(lw, [1, 10, 50])
    assert (table["ess"] - 50).abs().max() < 1e-6
    assert (table["khat"] == -math.inf).all()  # no tail at all
    assert table["gap"].abs().max() < 1e-9


def test_diagonal_guide_keeps_a_gap_and_importance_sampling_closes_it():
    m, x = ppca(diagonal=True, n=20)
    set_diagonal_guide_near_posterior(m)
    exact = m.exact_log_likelihood(x)
    ev = evaluate(m.model, m.guide, x, ks=[1, 10, 100, 2000])
    pts, s = ev.points, ev.summary.set_index("k")
    # ELBO is below log p(x) by KL(q || p(z|x)) > 0, far beyond its Monte Carlo error
    elbo_gap = (exact.numpy() - pts["elbo"]).mean()
    assert elbo_gap > 5 * s.loc[1, "stderr"], f"gap {elbo_gap:.4f} vs se {s.loc[1, 'stderr']:.4f}"
    # IWAE_k rises with k, each step beyond the combined standard errors
    for lo, hi in [(1, 10), (10, 100), (100, 2000)]:
        rise = s.loc[hi, "estimate"] - s.loc[lo, "estimate"]
        se = math.hypot(s.loc[hi, "stderr"], s.loc[lo, "stderr"])
        assert rise > -3 * se, f"IWAE_{hi} below IWAE_{lo}: {rise:.4f} (se {se:.4f})"
    assert s.loc[10, "estimate"] - s.loc[1, "estimate"] > 3 * math.hypot(
        s.loc[10, "stderr"], s.loc[1, "stderr"]
    )
    # the IS estimate is within a few standard errors of the exact value
    err = s.loc[2000, "estimate"] - exact.mean().item()
    se = s.loc[2000, "stderr"]
    assert abs(err) < 4 * se + 1e-3, f"log p^(x) - log p(x) = {err:.4f} nats, se {se:.4f}"
    per_point = (pts["log_px"] - exact.numpy()).abs() / pts["log_px_stderr"]
    assert (per_point < 5).mean() > 0.9
    assert (pts["khat"] < 0.7).mean() > 0.9


def test_a_too_narrow_guide_is_flagged_by_khat():
    m, x = ppca(diagonal=True, n=10)
    set_diagonal_guide_near_posterior(m, widen=0.3)
    pts = evaluate(m.model, m.guide, x, ks=[1, 1000]).points
    assert pts["khat"].median() > 0.7, pts["khat"].describe()
    assert pts["ess"].median() < 100


def test_hierarchy_with_two_latent_sites_and_event_dims_matches_exact_likelihood():
    """z1 ~ N(0, 1), z2 | z1 ~ N(a z1, s^2 I), x | z2 ~ N(W z2, sigma^2 I), guide = prior."""
    torch.manual_seed(1)
    a, s, sigma = torch.tensor([[1.0], [-0.5]], dtype=torch.float64), 0.6, 0.8
    w = torch.randn(3, 2, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1 @ a.T, s).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ w.T, sigma).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ a.T, s).to_event(1))

    cov = w @ (a @ a.T + s**2 * torch.eye(2, dtype=torch.float64)) @ w.T
    cov = cov + sigma**2 * torch.eye(3, dtype=torch.float64)
    x = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov).sample((10,))
    exact = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov).log_prob(x)
    pts = evaluate(model, guide, x, ks=[1, 20000]).points
    z = ((pts["log_px"] - exact.numpy()) / pts["log_px_stderr"]).abs()
    assert (z < 4).all(), z.tolist()
    assert (pts["elbo"] < exact.numpy()).all()


def test_a_points_weights_do_not_depend_on_the_rest_of_the_batch():
    m, x = ppca()
    m.set_exact_guide()
    other = x.clone()
    other[1:] = 100.0 * torch.randn_like(other[1:])
    lw_a = log_weights(m.model, m.guide, x, num_particles=5)
    lw_b = log_weights(m.model, m.guide, other, num_particles=5)
    assert torch.allclose(lw_a[:, 0], lw_b[:, 0], atol=1e-10)
    # and with a guide that is not exact: same distribution of the point's estimate
    m2, x2 = ppca(diagonal=True)
    set_diagonal_guide_near_posterior(m2)
    alone = evaluate(m2.model, m2.guide, x2[:1], ks=[1, 4000]).points.iloc[0]
    crowd = evaluate(m2.model, m2.guide, x2, ks=[1, 4000]).points.iloc[0]
    se = math.hypot(alone["log_px_stderr"], crowd["log_px_stderr"])
    assert abs(alone["log_px"] - crowd["log_px"]) < 4 * se + 1e-6


def test_per_datapoint_weights_sum_to_pyros_joint_weight_for_the_same_draws():
    m, x = ppca(diagonal=True)
    pyro.set_rng_seed(3)
    ours = log_weights(m.model, m.guide, x, num_particles=16, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    joint, _, _ = vectorized_importance_weights(
        m.model, m.guide, x, num_samples=16, max_plate_nesting=1
    )
    assert torch.allclose(ours.sum(1), joint, rtol=1e-10, atol=1e-8)


def test_chunked_and_unchunked_agree_for_the_same_draws():
    m, x = ppca(diagonal=True, n=16)  # 16 points x 2 latent dims: whole blocks of draws
    pyro.set_rng_seed(7)
    whole = log_weights(m.model, m.guide, x, num_particles=64, max_plate_nesting=1)
    pyro.set_rng_seed(7)
    chunked = log_weights(m.model, m.guide, x, num_particles=64, chunk_size=16, max_plate_nesting=1)
    pyro.set_rng_seed(7)
    ragged = log_weights(m.model, m.guide, x, num_particles=64, chunk_size=24, max_plate_nesting=1)
    assert torch.allclose(whole, chunked, rtol=1e-12, atol=1e-10)
    assert ragged.shape == whole.shape
    assert torch.allclose(whole, ragged, rtol=1e-12, atol=1e-10)


def test_k1_agrees_with_pyros_trace_elbo():
    m, x = ppca(diagonal=True)
    pyro.set_rng_seed(11)
    lw = log_weights(m.model, m.guide, x, num_particles=1, max_plate_nesting=1)
    pyro.set_rng_seed(11)
    loss = Trace_ELBO().loss(m.model, m.guide, x)
    assert lw.shape == (1, 40)
    assert abs(-lw.sum().item() - loss) < 1e-8 * abs(loss)


def test_annealing_and_subsample_scales_are_ignored():
    m, x = ppca(diagonal=True)
    pyro.set_rng_seed(5)
    plain = log_weights(m.model, m.guide, x, num_particles=8, max_plate_nesting=1)
    pyro.set_rng_seed(5)
    scaled = log_weights(
        poutine.scale(m.model, scale=0.1),
        poutine.scale(m.guide, scale=0.1),
        x,
        num_particles=8,
        max_plate_nesting=1,
    )
    assert torch.allclose(plain, scaled)


def test_a_subsampled_data_plate_is_refused_naming_the_plate():
    """Weights of rows drawn at random by the plate would not say which rows they are."""
    m, x = ppca()

    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=7) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc = z @ m.weight.T + m.loc
            pyro.sample("x", dist.Normal(loc, m.sigma).to_event(1), obs=x[idx])

    def guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=7) as idx:
            pyro.sample("z", dist.MultivariateNormal(m.encoder(x[idx]), scale_tril=m.scale_tril()))

    with pytest.raises(ContractError, match=r"plate 'data' .* subsamples 7 of its 40"):
        log_weights(model, guide, x, num_particles=12, chunk_size=3)


def test_latent_outside_the_data_plate_and_a_model_without_one_are_errors():
    def model(x):
        z = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    with pytest.raises(ContractError, match="latent site 'g' .* outside the data plate 'data'"):
        log_weights(model, guide, torch.zeros(4), num_particles=3)

    def no_plate(x):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([4]).to_event(1), obs=x)

    with pytest.raises(ContractError, match="observed site 'x' is in no plate"):
        log_weights(no_plate, lambda x: None, torch.zeros(4), num_particles=3)


def test_no_graph_unless_asked():
    m, x = ppca(diagonal=True)
    assert not log_weights(m.model, m.guide, x, num_particles=4).requires_grad
    assert log_weights(m.model, m.guide, x, num_particles=4, grad=True).requires_grad


def test_iwae_standard_error_matches_the_spread_of_repeated_estimates():
    m, x = ppca(diagonal=True, n=1)
    set_diagonal_guide_near_posterior(m, widen=1.6)
    estimates, ses = [], []
    for _ in range(40):
        est, se = iwae(log_weights(m.model, m.guide, x, num_particles=200), 10)
        estimates.append(est.item())
        ses.append(se.item())
    spread = torch.tensor(estimates).std().item()
    mean_se = sum(ses) / len(ses)
    # with 40 repeats the sample std is within about +-25% of the truth at 2 sigma
    assert 0.6 < spread / mean_se < 1.6, f"spread {spread:.4g} vs reported se {mean_se:.4g}"


def test_summary_is_one_row_per_k_in_nats_and_bits():
    m, x = ppca(diagonal=True, n=10)
    pts = estimate(log_weights(m.model, m.guide, x, num_particles=100), [1, 10, 100])
    s = summarize(pts, [1, 10, 100], data_dim=5)
    assert list(s["k"]) == [1, 10, 100]
    assert list(s["bound"]) == ["ELBO", "IWAE_10", "IWAE_100"]
    assert (s["nll"] == -s["estimate"]).all()
    assert torch.allclose(
        torch.tensor(s["bits_per_dim"].to_numpy()),
        torch.tensor((s["nll"] / (5 * math.log(2))).to_numpy()),
    )
    assert s.loc[0, "gap"] == 0


@pytest.mark.parametrize("bad", ["", "1,x", "0,10", "-5", []])
def test_bad_k_lists_are_refused(bad):
    with pytest.raises(ConfigError):
        parse_ks(bad)


def test_public_names():
    for name in ["log_weights", "evaluate", "estimate", "summarize", "iwae"]:
        assert hasattr(pyrogen, name)
