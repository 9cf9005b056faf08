"""Models with a closed-form log p(x) for the tests beyond importance sampling."""

import math

import pyro
import pyro.distributions as dist
import torch
from ppca import PPCA


def make_ppca(diagonal=True, seed=0, data_dim=5, latent_dim=2, n=20):
    """PPCA in float64 with data drawn from it (the exact log p(x) is closed form)."""
    torch.manual_seed(seed)
    m = PPCA(data_dim, latent_dim, diagonal=diagonal).double()
    with torch.no_grad():
        m.weight.mul_(1.5)
        m.loc.copy_(torch.randn(data_dim))
        m.log_sigma.fill_(math.log(0.7))
    x = dist.MultivariateNormal(m.loc, m.marginal_covariance()).sample((n,))
    return m, x


def set_diagonal_guide(m, widen=1.3, shift=0.0):
    """A diagonal guide with the posterior mean (plus ``shift``) and widened marginal scales."""
    w, s2 = m.weight, m.sigma**2
    prec = w.T @ w + s2 * torch.eye(m.latent_dim, dtype=w.dtype)
    a = torch.linalg.solve(prec, w.T)
    cov = s2 * torch.linalg.inv(prec)
    with torch.no_grad():
        m.encoder.weight.copy_(a)
        m.encoder.bias.copy_(-a @ m.loc + shift)
        scale = widen * cov.diagonal().sqrt() - 1e-6
        m.raw_scale_tril.diagonal().copy_(scale + torch.log(-torch.expm1(-scale)))


class Hierarchy:
    """z1 ~ N(0, 1), z2 | z1 ~ N(a z1, s^2 I), x | z2 ~ N(W z2, sigma^2 I): two latent sites with
    event dims; the guide is the prior (z2 depends on z1 there too)."""

    def __init__(self, seed=1):
        torch.manual_seed(seed)
        self.a = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
        self.s, self.sigma = 0.6, 0.5
        self.w = torch.randn(3, 2, dtype=torch.float64)
        cov = self.w @ (self.a @ self.a.T + self.s**2 * torch.eye(2, dtype=torch.float64))
        cov = cov @ self.w.T + self.sigma**2 * torch.eye(3, dtype=torch.float64)
        self.marginal = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(z1 @ self.a.T, self.s).to_event(1))
            pyro.sample("x", dist.Normal(z2 @ self.w.T, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("z2", dist.Normal(z1 @ self.a.T, self.s).to_event(1))


class ScaleMixture:
    """A positive latent: lam ~ Gamma(a, b), x | lam ~ N(0, I / lam); x is multivariate Student-t.

    The guide is a Gamma per point that is not the posterior, so AIS has to move lam through
    its log bijection (and the log-det term) to get log p(x) right.
    """

    data_dim = 4

    def __init__(self, a=3.0, b=2.0):
        self.a, self.b = a, b

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            lam = pyro.sample("lam", dist.Gamma(x.new_tensor(self.a), x.new_tensor(self.b)))
            pyro.sample("x", dist.Normal(0.0, lam.rsqrt().unsqueeze(-1)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            rate = self.b + 0.3 * (x**2).sum(-1)  # too sharp and off-centre on purpose
            pyro.sample("lam", dist.Gamma(x.new_tensor(self.a) + 4.0, rate))

    def exact_log_likelihood(self, x):
        d, a, b = x.shape[-1], self.a, self.b
        return (
            torch.lgamma(torch.tensor(a + d / 2, dtype=x.dtype))
            - math.lgamma(a)
            + a * math.log(b)
            - (a + d / 2) * torch.log(b + 0.5 * (x**2).sum(-1))
            - 0.5 * d * math.log(2 * math.pi)
        )

    def sample(self, n):
        lam = dist.Gamma(self.a, self.b).sample((n, 1)).double()
        return torch.randn(n, self.data_dim, dtype=torch.float64) * lam.rsqrt()
