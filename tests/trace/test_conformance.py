"""Conformance: pyrogen's per-datapoint log-weights follow Pyro's own site rules.

For each construct a Pyro user writes (masks, ``obs_mask``, ``poutine.scale``, ``pyro.factor``,
``pyro.deterministic``, enumerated and guide-sampled discrete sites, nested plates, a data plate
under any name, arguments that are not the batch, ``pyro.module`` / ``pyro.param`` pairs and a
decoder that cannot broadcast over particles) a small model/guide pair is run two ways:

1. the batch sum of pyrogen's per-point ELBOs, N * mean_{k, n} lw[k, n], against Pyro's own
   ``-Trace_ELBO().loss`` (``-TraceEnum_ELBO().loss`` for the enumerated site), within 4 Monte
   Carlo standard errors: pyrogen's from the spread of its per-particle batch sums ``lw.sum(1)``,
   Pyro's from the spread of independent ``.loss`` calls, combined in quadrature. Each pair is
   chosen so that ignoring the construct moves the value by tens of standard errors (asserted:
   the "power" checks), and Pyro's number is itself checked against a closed form or a brute
   force computation (the "reference" checks), so a red test points at pyrogen;
2. IWAE_k = E[logsumexp(lw[:k]) - log k] rises with k (1, 10, 100) by more than 3 standard
   errors, each k estimated from its own disjoint draws (on one pool Jensen makes it rise anyway).

With a Delta guide the weights are deterministic: there pyrogen's weights are compared exactly,
per data point, with a closed form and with Pyro's loss.

Convention documented here: Pyro's Trace_ELBO applies ``poutine.scale``; pyrogen's bounds are
the raw, unscaled densities, so a scaled pair is compared with Pyro on the same pair unscaled.

Everything runs in float64 (the module's default dtype while these tests run).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn
from torch.distributions import constraints

import pyrogen
from pyrogen.errors import ContractError

N, D, L = 30, 3, 2  # data points, data dim, latent dim
SIGMA = 0.5  # observation noise of the linear-Gaussian pair
POOLS = (1000, 2000, 2000)  # disjoint draws for IWAE_1, IWAE_10, IWAE_100
KS = (1, 10, 100)
K_ALL = sum(POOLS)
LOG_2PI = math.log(2 * math.pi)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# -- statistics ------------------------------------------------------------------------------------


def assert_close_mc(a, se_a, b, se_b, n_se=4, what=""):
    """|a - b| within ``n_se`` standard errors of the difference (independent estimates, their
    standard errors combined in quadrature); 1e-8 absolute for exact values."""
    a, se_a, b, se_b = float(a), float(se_a), float(b), float(se_b)
    tol = n_se * math.hypot(se_a, se_b) + 1e-8 * max(1.0, abs(a), abs(b))
    assert abs(a - b) <= tol, (
        f"{what}: {a:.4f} (s.e. {se_a:.4f}) vs {b:.4f} (s.e. {se_b:.4f}): "
        f"|diff| {abs(a - b):.4f} > {n_se} s.e. = {tol:.4f}"
    )


def assert_far(a, b, se, n_se=20, what=""):
    """The power check: mishandling the construct would move the value by > ``n_se`` s.e."""
    assert abs(float(a) - float(b)) > n_se * float(se), (
        f"{what}: {float(a):.3f} vs {float(b):.3f} differ by less than {n_se} x {float(se):.4f}"
    )


def batch_elbo(lw):
    """N * mean_{k,n} lw (the batch sum of per-point ELBOs) and its s.e. over particles."""
    s = lw.double().sum(1)
    return s.mean().item(), (s.std() / math.sqrt(len(s))).item()


def pyro_elbo(model, guide, *args, enum=False, groups=40, particles=100, vectorize=True, **kw):
    """Pyro's ELBO of the batch, -loss, averaged over ``groups`` independent ``.loss`` calls of
    ``particles`` particles each, and its s.e. from their spread."""
    losses = []
    for _ in range(groups):
        if enum:
            elbo = TraceEnum_ELBO(
                max_plate_nesting=1, num_particles=particles, vectorize_particles=vectorize
            )
        else:
            elbo = Trace_ELBO(num_particles=particles, vectorize_particles=vectorize)
        losses.append(-elbo.loss(model, guide, *args, **kw))
    t = torch.tensor(losses)
    return t.mean().item(), (t.std() / math.sqrt(groups)).item()


def iwae_by_k(lw, ks=KS, pools=POOLS):
    """[(k, IWAE_k of the batch, s.e.)], each k from its own disjoint block of draws."""
    out, start = [], 0
    for k, size in zip(ks, pools):
        block = lw[start : start + size].double()
        start += size
        groups = block.reshape(size // k, k, block.shape[1])
        est = (torch.logsumexp(groups, 1) - math.log(k)).sum(-1)  # [groups]: batch sums
        out.append((k, est.mean().item(), (est.std() / math.sqrt(len(est))).item()))
    return out


def assert_iwae_rises(lw, n_se=3, ks=KS, pools=POOLS):
    rows = iwae_by_k(lw, ks, pools)
    for (k0, v0, s0), (k1, v1, s1) in zip(rows, rows[1:]):
        assert v1 - v0 > n_se * math.hypot(s0, s1), (
            f"IWAE_{k1} = {v1:.3f} (s.e. {s1:.3f}) does not exceed "
            f"IWAE_{k0} = {v0:.3f} (s.e. {s0:.3f}) by {n_se} s.e."
        )
    return rows


def weights(*args, k=K_ALL, **kw):
    lw = pyrogen.log_weights(*args, num_particles=k, **kw)
    assert lw.shape == (k, N), f"log_weights shape {tuple(lw.shape)}, expected {(k, N)}"
    assert torch.isfinite(lw).all()
    return lw.double()


# -- closed forms ----------------------------------------------------------------------------------


def e_log_normal(mx, vx, ml, vl, scale):
    """E log N(X; M, scale^2) for independent X ~ (mx, vx) and M ~ (ml, vl), elementwise."""
    scale = torch.as_tensor(scale)
    return -0.5 * (LOG_2PI + 2 * scale.log()) - ((mx - ml) ** 2 + vx + vl) / (2 * scale**2)


def normal_entropy(s):
    return 0.5 * (LOG_2PI + 1) + torch.as_tensor(s).log()


class LinearGaussian:
    """z ~ N(0, I_L), x | z ~ N(z W + b, SIGMA^2 I_D); the guide N(x A + c, diag s^2) is the
    exact posterior shrunk and widened (not exact: IWAE_k rises with k)."""

    def __init__(self, seed=0, n=N, sigma=SIGMA):
        g = torch.Generator().manual_seed(seed)
        self.sigma = sigma
        self.W = torch.randn(L, D, generator=g)
        self.b = torch.randn(D, generator=g)
        z = torch.randn(n, L, generator=g)
        self.x = z @ self.W + self.b + sigma * torch.randn(n, D, generator=g)
        prec = torch.eye(L) + self.W @ self.W.T / sigma**2
        cov = torch.linalg.inv(prec)
        a = self.W.T @ cov / sigma**2  # exact posterior mean: (x - b) a
        self.A = 0.7 * a
        self.c = -0.7 * self.b @ a + 0.1
        self.s = 1.6 * cov.diagonal().sqrt()

    def guide_loc(self, x):
        return x @ self.A + self.c

    def prior(self):
        return dist.Normal(torch.zeros(L), 1.0).to_event(1)

    def likelihood(self, z, sigma=None):
        return dist.Normal(z @ self.W + self.b, self.sigma if sigma is None else sigma).to_event(1)

    def posterior(self, x):
        return dist.Normal(self.guide_loc(x), self.s).to_event(1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # per-point expectations under the guide, [N]
    def e_log_prior(self, x):
        m, v = self.guide_loc(x), self.s**2
        return e_log_normal(m, v, 0.0, 0.0, 1.0).sum(-1)

    def e_log_lik(self, x, sigma=None, W=None, b=None, m=None, v=None):
        W = self.W if W is None else W
        b = self.b if b is None else b
        m = self.guide_loc(x) if m is None else m
        v = self.s**2 if v is None else v
        sigma = self.sigma if sigma is None else sigma
        return e_log_normal(x, 0.0, m @ W + b, v @ W**2, sigma).sum(-1)

    def entropy(self):
        return normal_entropy(self.s).sum(-1)

    def elbo(self, x, lik_weight=1.0):
        """Batch sum of the per-point ELBOs, the likelihood term weighted (a mask or a scale)."""
        per_point = self.e_log_prior(x) + lik_weight * self.e_log_lik(x) + self.entropy()
        return per_point.sum().item()

    def log_px(self, x):
        cov = self.W.T @ self.W + self.sigma**2 * torch.eye(D)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


def reference(model, guide, *args, expected=None, enum=False, vectorize=True, **kw):
    """Pyro's ELBO of the batch and its s.e., checked first against ``expected`` (a closed
    form) where there is one, so that a red test says which side is wrong."""
    ref, ref_se = pyro_elbo(model, guide, *args, enum=enum, vectorize=vectorize, **kw)
    if expected is not None:
        assert_close_mc(ref, ref_se, expected, 0.0, what="reference: Pyro vs closed form")
    return ref, ref_se


def conform(lw, ref, ref_se, pools=POOLS):
    """The two checks of every construct: pyrogen's batch ELBO against Pyro's; IWAE_k rising.
    Returns the s.e. of the difference."""
    val, se = batch_elbo(lw)
    assert_close_mc(val, se, ref, ref_se, what="pyrogen vs Pyro")
    assert_iwae_rises(lw, pools=pools)
    return math.hypot(se, ref_se)


# -- masks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["poutine.mask", "Distribution.mask"])
def test_masked_observation_rows_drop_out(how):
    lg = LinearGaussian()
    keep = torch.arange(N) % 2 == 0
    x = lg.x.clone()
    x[~keep] += 4.0  # outliers in the masked rows: counted, they would cost ~2000 nats

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            if how == "poutine.mask":
                with poutine.mask(mask=keep):
                    pyro.sample("x", lg.likelihood(z), obs=x)
            else:
                pyro.sample("x", lg.likelihood(z).mask(keep), obs=x)

    expected = lg.elbo(x, lik_weight=keep.double())
    ref, ref_se = reference(model, lg.guide, x, expected=expected)
    lw = weights(model, lg.guide, x)
    se = conform(lw, ref, ref_se)
    assert_far(ref, lg.elbo(x), se, what="power: the mask ignored")


# -- obs_mask --------------------------------------------------------------------------------------


def _obs_mask_pair(lg, observed, guide_masks):
    q_loc, q_scale = lg.b, 0.7  # the guide's imputation of x: N(b, 0.7^2), independent of z

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x, obs_mask=observed)

    def guide(x):
        filled = torch.where(observed[:, None], x, lg.b)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", lg.posterior(filled))
            imputed = dist.Normal(q_loc.expand(x.shape), q_scale).to_event(1)
            if guide_masks:
                with poutine.mask(mask=~observed):
                    pyro.sample("x_unobserved", imputed)
            else:
                pyro.sample("x_unobserved", imputed)

    return model, guide, q_loc, q_scale


@pytest.mark.parametrize("guide_masks", [True, False], ids=["guide-masked", "guide-unmasked"])
def test_obs_mask_imputes_through_the_guide_site(guide_masks):
    lg = LinearGaussian(seed=1)
    observed = torch.arange(N) % 3 != 0  # 20 observed rows, 10 imputed
    x = lg.x.clone()
    x[~observed] = 50.0  # garbage where the data are missing: read, they cost ~1e5 nats
    model, guide, q_loc, q_scale = _obs_mask_pair(lg, observed, guide_masks)

    # closed form: observed rows as usual; imputed rows E log N(x_u; z W + b, SIGMA) with
    # x_u ~ N(q_loc, q_scale^2) and the entropy of x_u's guide
    filled = torch.where(observed[:, None], x, lg.b)
    m = lg.guide_loc(filled)
    v = lg.s**2
    lik_obs = lg.e_log_lik(filled, m=m)
    mean_u, var_u = q_loc.expand(N, D), torch.full((N, D), q_scale**2)
    lik_imp = e_log_normal(mean_u, var_u, m @ lg.W + lg.b, v @ lg.W**2, lg.sigma).sum(-1)
    h_u = normal_entropy(torch.full((D,), q_scale)).sum()
    per_point = e_log_normal(m, v, 0.0, 0.0, 1.0).sum(-1) + lg.entropy()
    per_point = per_point + torch.where(observed, lik_obs, lik_imp + h_u)
    if not guide_masks:
        # Pyro scores the guide's x_unobserved at every row; the model's only where imputed:
        # the observed rows gain the guide's entropy (the "ELBO" is no bound on log p(x_obs))
        per_point = per_point + torch.where(observed, h_u, 0.0)
    expected = per_point.sum().item()

    ref, ref_se = reference(model, guide, x, expected=expected)
    lw = weights(model, guide, x)
    se = conform(lw, ref, ref_se)
    garbage = e_log_normal(x, 0.0, m @ lg.W + lg.b, v @ lg.W**2, lg.sigma).sum(-1)
    assert_far(ref, ref + garbage[~observed].sum(), se, what="power: obs_mask ignored")


def test_obs_mask_without_the_unobserved_guide_site_is_refused():
    lg = LinearGaussian(seed=1)
    observed = torch.arange(N) % 3 != 0

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x, obs_mask=observed)

    # Pyro only warns, and then scores the imputed entries drawn from the model's own prior
    with pytest.warns(UserWarning, match="x_unobserved"):
        Trace_ELBO().loss(model, lg.guide, lg.x)
    with pytest.raises(ContractError, match="x_unobserved"):
        pyrogen.log_weights(model, lg.guide, lg.x, num_particles=10)


# -- scale -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["scalar", "per-row"])
def test_scale_is_not_applied_to_the_weights(kind):
    lg = LinearGaussian(seed=2)
    scale = 3.0 if kind == "scalar" else torch.linspace(0.5, 4.0, N)

    def scaled_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            with poutine.scale(scale=scale):
                pyro.sample("x", lg.likelihood(z), obs=x)

    x = lg.x
    # pyrogen's bounds are unscaled: the reference is Pyro on the same pair without the scale
    ref, ref_se = reference(lg.model, lg.guide, x, expected=lg.elbo(x))
    # ...while Pyro's own ELBO of the scaled pair applies the scale (the convention)
    scaled, scaled_se = reference(
        scaled_model, lg.guide, x, expected=lg.elbo(x, lik_weight=torch.as_tensor(scale))
    )
    lw = weights(scaled_model, lg.guide, x)
    se = conform(lw, ref, ref_se)
    assert_far(scaled, ref, math.hypot(se, scaled_se), what="power: Pyro's scaled ELBO")


# -- factor ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["model", "guide"])
def test_factor_adds_its_log_factor(where):
    lg = LinearGaussian(seed=3)
    x = lg.x

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)
            if where == "model":
                pyro.factor("f", -0.5 * x.pow(2).sum(-1) - 0.5 * z.pow(2).sum(-1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.posterior(x))
            if where == "guide":  # adds to log q (Pyro asks for has_rsample in a guide)
                pyro.factor("g", 0.3 * z.pow(2).sum(-1), has_rsample=True)

    m, v = lg.guide_loc(x), lg.s**2
    e_z2 = (m**2 + v).sum(-1)
    if where == "model":
        shift = (-0.5 * x.pow(2).sum(-1) - 0.5 * e_z2).sum().item()
    else:
        shift = -0.3 * e_z2.sum().item()
    ref, ref_se = reference(model, guide, x, expected=lg.elbo(x) + shift)
    lw = weights(model, guide, x)
    se = conform(lw, ref, ref_se)
    assert_far(ref, ref - shift, se, what="power: the factor ignored")


# -- deterministic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["inside", "outside", "both"])
def test_deterministic_contributes_nothing(where):
    lg = LinearGaussian(seed=4)
    x = lg.x

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            if where in ("inside", "both"):
                pyro.deterministic("loc", z @ lg.W + lg.b, event_dim=1)
            pyro.sample("x", lg.likelihood(z), obs=x)
        if where in ("outside", "both"):  # outside the data plate: allowed, and no density
            pyro.deterministic("z_bar", z.mean(-2, keepdim=True), event_dim=1)
            pyro.deterministic("w_norm", lg.W.norm())

    # Pyro: the same loss with and without the deterministic sites, draw for draw
    pyro.set_rng_seed(3)
    with_det = Trace_ELBO(num_particles=50, vectorize_particles=True).loss(model, lg.guide, x)
    pyro.set_rng_seed(3)
    without = Trace_ELBO(num_particles=50, vectorize_particles=True).loss(lg.model, lg.guide, x)
    assert with_det == without
    ref, ref_se = reference(model, lg.guide, x, expected=lg.elbo(x))
    # pyrogen: the same weights with and without them, draw for draw
    pyro.set_rng_seed(7)
    lw = weights(model, lg.guide, x)
    pyro.set_rng_seed(7)
    plain = weights(lg.model, lg.guide, x)
    assert torch.equal(lw, plain), "a deterministic site changed the weights"
    conform(lw, ref, ref_se)


# -- an enumerated discrete model site -------------------------------------------------------------


class Mixture:
    """c ~ Categorical(pi) (enumerated in the model), z | c ~ N(mu_c, I), x | z ~ N(z, 0.5^2 I);
    the guide N(0.8 x, 0.6^2) samples z only. log p(x) = logsumexp_c log pi_c N(x; mu_c, 1.25 I)."""

    def __init__(self, seed=5):
        g = torch.Generator().manual_seed(seed)
        self.pi = torch.tensor([0.5, 0.3, 0.2])
        self.mu = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
        c = torch.multinomial(self.pi, N, replacement=True, generator=g)
        z = self.mu[c] + torch.randn(N, 2, generator=g)
        self.x = z + 0.5 * torch.randn(N, 2, generator=g)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(self.pi), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(self.mu[c], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.8 * x, 0.6).to_event(1))

    def log_px(self, x):
        comp = dist.Normal(self.mu, math.sqrt(1.25)).to_event(1)  # batch [C]
        return torch.logsumexp(self.pi.log() + comp.log_prob(x[:, None, :]), -1)

    def brute_force(self, x, draws=20000):
        """Own Monte Carlo of E_q[log sum_c p(c, z, x) - log q(z)] (the enumerated ELBO) and of
        E_q[log p(c, z, x) - log q(z)] with c drawn from its prior (the site not summed out)."""
        g = torch.Generator().manual_seed(11)
        q = dist.Normal(0.8 * x, 0.6).to_event(1)
        z = 0.8 * x + 0.6 * torch.randn(draws, *x.shape, generator=g)  # [S, N, 2]
        log_pz_c = dist.Normal(self.mu, 1.0).to_event(1).log_prob(z[..., None, :])  # [S, N, C]
        rest = dist.Normal(z, 0.5).to_event(1).log_prob(x) - q.log_prob(z)
        summed = (torch.logsumexp(self.pi.log() + log_pz_c, -1) + rest).sum(-1)
        c = torch.multinomial(self.pi, draws * N, replacement=True, generator=g).reshape(draws, N)
        picked = (self.pi.log()[c] + log_pz_c.gather(-1, c[..., None])[..., 0] + rest).sum(-1)
        se = lambda t: (t.std() / math.sqrt(draws)).item()  # noqa: E731
        return summed.mean().item(), se(summed), picked.mean().item(), se(picked)


def test_enumerated_model_site_is_summed_out_per_point():
    mix = Mixture()
    x = mix.x
    exact = mix.log_px(x)
    brute, brute_se, sampled, sampled_se = mix.brute_force(x)
    ref, ref_se = reference(mix.model, mix.guide, x, enum=True)
    assert_close_mc(ref, ref_se, brute, brute_se, what="reference: TraceEnum vs brute force")
    assert_far(ref, sampled, math.hypot(ref_se, sampled_se), what="power: c sampled, not summed")
    lw = weights(mix.model, mix.guide, x, k=K_ALL + 5000)
    conform(lw[:K_ALL], ref, ref_se)
    # the weights are those of the marginal model: IWAE_1000 reaches the exact log p(x)
    ((_, iwae_1000, iwae_se),) = iwae_by_k(lw[K_ALL:], ks=(1000,), pools=(5000,))
    gap = exact.sum().item() - iwae_1000
    elbo_gap = exact.sum().item() - batch_elbo(lw)[0]
    assert elbo_gap > 2.0, f"the guide is too good for the test: ELBO gap {elbo_gap:.3f}"
    assert -4 * iwae_se < gap < max(4 * iwae_se, 0.02 * elbo_gap), (
        f"IWAE_1000 {iwae_1000:.3f} (s.e. {iwae_se:.3f}) vs exact {exact.sum().item():.3f}"
    )


# -- a discrete guide site -------------------------------------------------------------------------


def test_discrete_guide_site_is_sampled_and_scored():
    g = torch.Generator().manual_seed(6)
    pi = torch.tensor([0.2, 0.5, 0.3])
    mu = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, -2.0, -1.0]])
    obs_scale = 0.8
    c_true = torch.multinomial(pi, N, replacement=True, generator=g)
    x = mu[c_true] + obs_scale * torch.randn(N, D, generator=g)
    # the exact posterior logits x mu^T / s^2 + log pi - |mu|^2 / 2s^2, tempered to a tenth:
    # a guide poor enough that IWAE_100 still gains on IWAE_10
    B = 0.1 * mu.T / obs_scale**2
    b0 = 0.1 * (pi.log() - mu.pow(2).sum(-1) / (2 * obs_scale**2))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(pi))
            pyro.sample("x", dist.Normal(mu[c], obs_scale).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=x @ B + b0))

    log_joint = pi.log() + dist.Normal(mu, obs_scale).to_event(1).log_prob(x[:, None, :])
    log_q = torch.log_softmax(x @ B + b0, -1)
    expected = (log_q.exp() * (log_joint - log_q)).sum().item()
    ref, ref_se = reference(model, guide, x, expected=expected)
    lw = weights(model, guide, x)
    conform(lw, ref, ref_se)
    # IWAE_100 of three categories reaches log p(x)
    ((_, iwae_100, iwae_se),) = iwae_by_k(lw[-2000:], ks=(100,), pools=(2000,))
    exact = torch.logsumexp(log_joint, -1).sum().item()
    assert abs(iwae_100 - exact) < max(4 * iwae_se, 0.01 * abs(exact - expected))


# -- nested plates ---------------------------------------------------------------------------------


def test_nested_plates_data_plate_at_dim_minus_two():
    lg = LinearGaussian(seed=7)
    x = lg.x
    a, su, bw, sw = 0.6, 0.8, 0.8, 0.6

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            u = pyro.sample("u", dist.Normal(0.0, 1.0))  # [N, 1]: per point
            with pyro.plate("feat", x.shape[1], dim=-1):
                w = pyro.sample("w", dist.Normal(u, 1.0))  # [N, D]: per point and feature
                pyro.sample("x", dist.Normal(w, SIGMA), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("u", dist.Normal(a * x.mean(-1, keepdim=True), su))
            with pyro.plate("feat", x.shape[1], dim=-1):
                pyro.sample("w", dist.Normal(bw * x, sw))

    mu_u = a * x.mean(-1, keepdim=True)
    expected = (
        e_log_normal(mu_u, su**2, 0.0, 0.0, 1.0).sum(-1)
        + e_log_normal(bw * x, sw**2, mu_u, su**2, 1.0).sum(-1)
        + e_log_normal(x, 0.0, bw * x, sw**2, SIGMA).sum(-1)
        + normal_entropy(torch.tensor(su))
        + D * normal_entropy(torch.tensor(sw))
    ).sum()
    ref, ref_se = reference(model, guide, x, expected=expected)
    lw = weights(model, guide, x)
    conform(lw, ref, ref_se)


# -- the data plate: any name, or named where two qualify ------------------------------------------


@pytest.mark.parametrize("name", ["z_minibatch", "documents", "batch"])
def test_data_plate_under_any_name(name):
    lg = LinearGaussian(seed=8)
    x = lg.x

    def model(x):
        with pyro.plate(name, x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)

    def guide(x):
        with pyro.plate(name, x.shape[0]):
            pyro.sample("z", lg.posterior(x))

    ref, ref_se = reference(model, guide, x, expected=lg.elbo(x))
    pyro.set_rng_seed(9)
    lw = weights(model, guide, x)
    pyro.set_rng_seed(9)
    assert torch.allclose(lw, weights(lg.model, lg.guide, x), rtol=0, atol=1e-10)
    conform(lw, ref, ref_se)


def test_two_plates_of_the_batch_size_need_data_plate():
    # x is N x N: the plates "rows" and "cols" both have the batch's size and both hold x
    g = torch.Generator().manual_seed(10)
    u_true = 2.0 * torch.randn(N, 1, generator=g)
    x = u_true + torch.randn(N, N, generator=g)
    a, su = 0.9, 0.4

    def model(x):
        with pyro.plate("rows", x.shape[0], dim=-2):
            u = pyro.sample("u", dist.Normal(0.0, 2.0))
            with pyro.plate("cols", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(u, 1.0), obs=x)

    def guide(x):
        with pyro.plate("rows", x.shape[0], dim=-2):
            pyro.sample("u", dist.Normal(a * x.mean(-1, keepdim=True), su))

    mu_u = a * x.mean(-1, keepdim=True)
    per_row = (
        e_log_normal(mu_u, su**2, 0.0, 0.0, 2.0).sum(-1)
        + e_log_normal(x, 0.0, mu_u, su**2, 1.0).sum(-1)
        + normal_entropy(torch.tensor(su))
    )
    ref, ref_se = reference(model, guide, x, expected=per_row.sum())

    with pytest.raises(ContractError) as err:
        pyrogen.log_weights(model, guide, x, num_particles=10)
    assert "rows" in str(err.value) and "cols" in str(err.value), str(err.value)
    lw = weights(model, guide, x, data_plate="rows")
    conform(lw, ref, ref_se)
    # and per row: each point's mean weight is its own ELBO
    se_rows = lw.std(0) / math.sqrt(K_ALL)
    z = (lw.mean(0) - per_row) / se_rows
    assert z.abs().max() < 4.5, f"per-row z-scores {z}"


# -- arguments that are not the batch --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float", "matrix", "keyword"])
def test_unbatched_arguments_pass_through_unchanged(kind):
    temperature = 0.8  # the observation noise, not the default SIGMA
    # the data and the guide of the noise the model is given
    lg = LinearGaussian(seed=12, sigma=SIGMA if kind == "matrix" else temperature)
    x = lg.x
    Wt = lg.W.T.contiguous()  # [3, 2]: a tensor whose first dim is not the batch's

    if kind == "matrix":

        def model(x, Wt):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", lg.prior())
                pyro.sample("x", dist.Normal(z @ Wt.T + lg.b, SIGMA).to_event(1), obs=x)

        def guide(x, Wt):
            assert Wt.shape == (D, L)
            lg.guide(x)

        args, kwargs, expected, wrong = (x, Wt), {}, lg.elbo(x), None
    else:

        def model(x, temperature=SIGMA):
            assert isinstance(temperature, float)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", lg.prior())
                pyro.sample("x", lg.likelihood(z, sigma=temperature), obs=x)

        def guide(x, temperature=SIGMA):
            assert isinstance(temperature, float)
            lg.guide(x)

        if kind == "float":
            args, kwargs = (x, temperature), {}
        else:
            args, kwargs = (x,), {"temperature": temperature}
        expected = lg.elbo(x)
        per_point = lg.e_log_prior(x) + lg.e_log_lik(x, sigma=SIGMA) + lg.entropy()
        wrong = per_point.sum().item()  # the default temperature

    ref, ref_se = reference(model, guide, *args, expected=expected, **kwargs)
    lw = weights(model, guide, *args, **kwargs)
    se = conform(lw, ref, ref_se)
    if wrong is not None:
        assert_far(ref, wrong, se, what="power: the default temperature")


# -- parameters: pyro.module and pyro.param --------------------------------------------------------


class ModuleVAE(nn.Module):
    """The pyro.module idiom of Pyro's vae.py: encoder and decoder submodules, each registered
    by the method that uses it."""

    def __init__(self, lg):
        super().__init__()
        self.encoder = nn.Linear(D, 2 * L)
        self.decoder = nn.Linear(L, D)
        with torch.no_grad():
            self.decoder.weight.copy_(lg.W.T)
            self.decoder.bias.copy_(lg.b)
            self.encoder.weight.zero_()
            self.encoder.weight[:L].copy_(lg.A.T)
            self.encoder.bias[:L].copy_(lg.c)
            self.encoder.weight[L:].normal_(0.0, 0.1)  # a per-point guide scale
            self.encoder.bias[L:].copy_(lg.s.log())

    def encode(self, x):
        h = self.encoder(x)
        return h[..., :L], h[..., L:].exp()

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), SIGMA).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encode(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_pyro_module_pair():
    lg = LinearGaussian(seed=13)
    x = lg.x
    vae = ModuleVAE(lg)
    with torch.no_grad():
        m, s = vae.encode(x)
        per_point = (
            e_log_normal(m, s**2, 0.0, 0.0, 1.0).sum(-1)
            + lg.e_log_lik(x, m=m, v=s**2)
            + normal_entropy(s).sum(-1)
        )
    ref, ref_se = reference(vae.model, vae.guide, x, expected=per_point.sum().item())
    lw = weights(vae, x)
    conform(lw, ref, ref_se)


def test_pyro_param_pair_uses_the_stored_values():
    lg = LinearGaussian(seed=14)
    loc_value = torch.tensor([3.0, -2.0, 1.5])
    scale_value = torch.tensor([0.4, 0.6, 0.5])
    x = lg.x - lg.b + loc_value  # data centred at loc_value, not at the initial zeros

    def model(x):
        loc = pyro.param("loc", torch.zeros(D))
        scale = pyro.param("scale", torch.ones(D), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", dist.Normal(z @ lg.W + loc, scale).to_event(1), obs=x)

    def guide(x):
        A = pyro.param("A", torch.zeros(D, L))
        c = pyro.param("c", torch.zeros(L))
        s = pyro.param("s", torch.ones(L), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ A + c, s).to_event(1))

    # the values, set in Pyro's param store before anything runs (as after a user's SVI loop)
    c_value = -loc_value @ lg.A + 0.1
    pyro.param("loc", loc_value)
    pyro.param("scale", scale_value, constraint=constraints.positive)
    pyro.param("A", lg.A.clone())
    pyro.param("c", c_value)
    pyro.param("s", lg.s.clone(), constraint=constraints.positive)

    m, v = x @ lg.A + c_value, lg.s**2
    lik = e_log_normal(x, 0.0, m @ lg.W + loc_value, v @ lg.W**2, scale_value).sum(-1)
    expected = (e_log_normal(m, v, 0.0, 0.0, 1.0).sum(-1) + lik + lg.entropy()).sum().item()
    ref, ref_se = reference(model, guide, x, expected=expected)
    lw = weights(model, guide, x)
    se = conform(lw, ref, ref_se)
    m0 = torch.zeros(N, L)  # the initial values: A = 0, c = 0, s = 1, loc = 0, scale = 1
    init = (
        e_log_normal(m0, 1.0, 0.0, 0.0, 1.0).sum(-1)
        + e_log_normal(x, 0.0, 0.0, torch.ones(L) @ lg.W**2, 1.0).sum(-1)
        + normal_entropy(torch.ones(L)).sum(-1)
    ).sum()
    assert_far(ref, init, se, what="power: the initial values")


# -- a decoder that cannot broadcast over particles ------------------------------------------------


class BatchNormVAE(nn.Module):
    """A Linear + BatchNorm1d decoder in eval mode: a [K, N, L] input makes BatchNorm1d read N
    as its channels, so particles cannot run in a plate; evaluation must run them one by one."""

    def __init__(self, lg):
        super().__init__()
        self.lg = lg
        self.decoder = nn.Sequential(nn.Linear(L, D), nn.BatchNorm1d(D))
        with torch.no_grad():
            self.decoder[0].weight.copy_(lg.W.T)
            self.decoder[0].bias.copy_(lg.b)
            bn = self.decoder[1]
            bn.running_mean.copy_(torch.tensor([0.5, -0.3, 0.2]))
            bn.running_var.copy_(torch.tensor([1.5, 0.8, 2.0]))
            bn.weight.copy_(torch.tensor([1.2, 0.9, 1.1]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        self.eval()

    def affine(self):
        """The decoder as z W' + b' (BatchNorm1d in eval mode is affine)."""
        bn = self.decoder[1]
        g = bn.weight / (bn.running_var + bn.eps).sqrt()
        W = self.decoder[0].weight.T * g
        b = (self.decoder[0].bias - bn.running_mean) * g + bn.bias
        return W.detach(), b.detach()

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), SIGMA).to_event(1), obs=x)

    def guide(self, x):
        self.lg.guide(x)


def test_batchnorm_decoder_runs_particles_one_by_one():
    lg = LinearGaussian(seed=15)
    vae = BatchNormVAE(lg)
    W, b = vae.affine()
    with torch.no_grad():
        x = torch.randn(N, L) @ W + b + SIGMA * torch.randn(N, D)
    with pytest.raises(RuntimeError):  # the premise: no broadcasting over a particle dim
        vae.decoder(torch.zeros(4, N, L))
    expected = (lg.e_log_prior(x) + lg.e_log_lik(x, W=W, b=b) + lg.entropy()).sum().item()
    # Pyro's own particles one after another (vectorize_particles=False)
    ref, ref_se = reference(
        vae.model, vae.guide, x, expected=expected, vectorize=False, groups=20, particles=20
    )
    pools = (200, 500, 1000)
    lw = weights(vae, x, k=sum(pools))
    conform(lw, ref, ref_se, pools=pools)


# -- Delta guides: deterministic weights, compared exactly per data point --------------------------


EXACT_CASES = [
    "plain",
    "poutine.mask",
    "Distribution.mask",
    "obs_mask",
    "scale",
    "factor",
    "deterministic",
    "plate-name",
    "enumerated",
]


@pytest.mark.parametrize("case", EXACT_CASES)
def test_delta_guide_weights_are_exact_per_point(case):
    """With z fixed by a Delta guide, lw[k, n] = log p(x_n, z_n) for every k, computed here by
    hand per point, and its batch sum is -Trace_ELBO().loss exactly."""
    lg = LinearGaussian(seed=16)
    x = lg.x
    z0 = lg.guide_loc(x)  # the guide's point value per data point
    keep = torch.arange(N) % 2 == 0
    scale = torch.linspace(0.5, 4.0, N)
    plate = "documents" if case == "plate-name" else "data"
    mix = Mixture() if case == "enumerated" else None
    imputed = torch.full((N, D), 0.25)

    def model(x):
        with pyro.plate(plate, x.shape[0]):
            if case == "enumerated":
                c = pyro.sample("c", dist.Categorical(mix.pi), infer={"enumerate": "parallel"})
                z = pyro.sample("z", dist.Normal(mix.mu[c], 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
                return
            z = pyro.sample("z", lg.prior())
            lik = lg.likelihood(z)
            if case == "poutine.mask":
                with poutine.mask(mask=keep):
                    pyro.sample("x", lik, obs=x)
            elif case == "Distribution.mask":
                pyro.sample("x", lik.mask(keep), obs=x)
            elif case == "obs_mask":
                pyro.sample("x", lik, obs=x, obs_mask=keep)
            elif case == "scale":
                with poutine.scale(scale=scale):
                    pyro.sample("x", lik, obs=x)
            else:
                pyro.sample("x", lik, obs=x)
            if case == "factor":
                pyro.factor("f", -0.5 * x.pow(2).sum(-1) - z.pow(2).sum(-1))
            if case == "deterministic":
                pyro.deterministic("loc", z @ lg.W, event_dim=1)
        if case == "deterministic":
            pyro.deterministic("z_bar", z.mean(-2, keepdim=True), event_dim=1)

    def guide(x):
        with pyro.plate(plate, x.shape[0]):
            if case == "enumerated":
                pyro.sample("z", dist.Delta(0.8 * x, event_dim=1))
                return
            pyro.sample("z", dist.Delta(z0, event_dim=1))
            if case == "obs_mask":
                with poutine.mask(mask=~keep):
                    pyro.sample("x_unobserved", dist.Delta(imputed, event_dim=1))

    if case == "enumerated":
        zm = 0.8 * mix.x
        x = mix.x
        comp = dist.Normal(mix.mu, 1.0).to_event(1).log_prob(zm[:, None, :])
        per_point = torch.logsumexp(mix.pi.log() + comp, -1)
        per_point = per_point + dist.Normal(zm, 0.5).to_event(1).log_prob(x)
    else:
        per_point = lg.prior().log_prob(z0)
        lik = lg.likelihood(z0).log_prob(x)
        if case in ("poutine.mask", "Distribution.mask"):
            lik = torch.where(keep, lik, 0.0)
        elif case == "obs_mask":
            lik = torch.where(keep, lik, lg.likelihood(z0).log_prob(imputed))
        per_point = per_point + lik  # "scale": unscaled
        if case == "factor":
            per_point = per_point - 0.5 * x.pow(2).sum(-1) - z0.pow(2).sum(-1)

    lw = pyrogen.log_weights(model, guide, x, num_particles=3).double()
    assert lw.shape == (3, N)
    assert torch.allclose(lw, per_point.expand(3, N), rtol=1e-10, atol=1e-9), (
        f"max |lw - log p(x_n, z_n)| = {(lw - per_point).abs().max().item():.3g}"
    )
    elbo = TraceEnum_ELBO(max_plate_nesting=1) if case == "enumerated" else Trace_ELBO()
    pyro_value = -elbo.loss(model, guide, x)
    if case == "scale":  # Pyro's ELBO applies the scale, the weights do not
        scaled = lg.prior().log_prob(z0) + scale * lg.likelihood(z0).log_prob(x)
        assert math.isclose(pyro_value, scaled.sum().item(), rel_tol=1e-10)
        assert not math.isclose(pyro_value, lw[0].sum().item(), rel_tol=1e-3)
    else:
        assert math.isclose(pyro_value, lw[0].sum().item(), rel_tol=1e-10), (
            f"Pyro {pyro_value:.6f} vs pyrogen {lw[0].sum().item():.6f}"
        )


# -- refusals --------------------------------------------------------------------------------------


def test_global_latent_is_refused_naming_the_site():
    lg = LinearGaussian(seed=17)

    def model(x):
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", dist.Normal(z @ lg.W + theta, SIGMA).to_event(1), obs=x)

    def guide(x):
        pyro.sample("theta", dist.Normal(0.1, 0.5))
        lg.guide(x)

    with pytest.raises(ContractError, match="theta"):
        pyrogen.log_weights(model, guide, lg.x, num_particles=10)


def test_subsampled_plate_is_refused():
    lg = LinearGaussian(seed=18)

    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=10) as idx:
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x[idx])

    def guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=10) as idx:
            pyro.sample("z", lg.posterior(x[idx]))

    with pytest.raises(ContractError, match="(?i)subsampl"):
        pyrogen.log_weights(model, guide, lg.x, num_particles=10)


# -- the forms of a pair ---------------------------------------------------------------------------


class PairModule(nn.Module):
    def __init__(self, model, guide):
        super().__init__()
        self._model, self._guide = model, guide

    def model(self, x):
        return self._model(x)

    def guide(self, x):
        return self._guide(x)


def test_pair_forms_give_identical_weights():
    lg = LinearGaussian(seed=19)
    x = lg.x

    def model_fn(x):
        lg.model(x)

    def guide_fn(x):
        lg.guide(x)

    vae = ModuleVAE(lg)
    forms = {
        "functions": [
            (model_fn, guide_fn),
            ((model_fn, guide_fn),),
            (PairModule(model_fn, guide_fn),),
        ],
        "module": [(vae.model, vae.guide), ((vae.model, vae.guide),), (vae,)],
    }
    for name, calls in forms.items():
        out = []
        for first in calls:
            pyro.set_rng_seed(21)
            out.append(pyrogen.log_weights(*first, x, num_particles=50))
        for lw in out[1:]:
            assert lw.shape == (50, N)
            assert torch.equal(lw, out[0]), f"{name}: the pair forms differ"
