r"""Probabilistic PCA: the latent-variable model whose likelihood is known exactly.

Generative story (Tipping & Bishop, 1999):

.. math::
    z \sim \mathcal N(0, I_d), \qquad x \mid z \sim \mathcal N(W z + \mu, \sigma^2 I_D),
    \qquad\text{so}\qquad x \sim \mathcal N(\mu, W W^\top + \sigma^2 I_D).

The posterior is Gaussian, p(z | x) = N(M^{-1} W^T (x - mu), sigma^2 M^{-1}) with
M = W^T W + sigma^2 I. The amortized guide q(z | x) = N(A x + b, L L^T) has a mean linear in x
and a full covariance, so its family contains the exact posterior: at the optimum the ELBO equals
log p(x) and every importance weight is the same. ``diagonal=True`` restricts L to a diagonal,
which leaves a gap KL(q || p(z | x)) > 0 whenever the posterior covariance is not diagonal.

References:
    | Probabilistic Principal Component Analysis (Tipping & Bishop, 1999)
    | https://doi.org/10.1111/1467-9868.00196
"""

from __future__ import annotations

import sys

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen

__all__ = ["PPCA", "main"]


class PPCA(pyrogen.GenerativeModel):
    """PPCA with an amortized Gaussian guide.

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d, the dimension of z.
        diagonal: restrict the guide's covariance to a diagonal (keeps a gap).
    """

    def __init__(self, data_dim: int, latent_dim: int = 2, diagonal: bool = False) -> None:
        super().__init__()
        self.data_dim, self.latent_dim, self.diagonal = data_dim, latent_dim, diagonal
        self.weight = nn.Parameter(torch.randn(data_dim, latent_dim) / latent_dim**0.5)
        self.loc = nn.Parameter(torch.zeros(data_dim))
        self.log_sigma = nn.Parameter(torch.tensor(0.0))
        self.encoder = nn.Linear(data_dim, latent_dim)
        self.raw_scale_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def scale_tril(self) -> torch.Tensor:
        diag = nn.functional.softplus(self.raw_scale_tril.diagonal()) + 1e-6
        if self.diagonal:
            return torch.diag_embed(diag)
        return self.raw_scale_tril.tril(-1) + torch.diag_embed(diag)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample(
                "x", dist.Normal(z @ self.weight.T + self.loc, self.sigma).to_event(1), obs=x
            )

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            if self.diagonal:
                scale = nn.functional.softplus(self.raw_scale_tril.diagonal()) + 1e-6
                pyro.sample("z", dist.Normal(self.encoder(x), scale).to_event(1))
            else:
                pyro.sample(
                    "z", dist.MultivariateNormal(self.encoder(x), scale_tril=self.scale_tril())
                )

    def marginal_covariance(self) -> torch.Tensor:
        """W W^T + sigma^2 I, the covariance of x."""
        eye = torch.eye(self.data_dim, dtype=self.weight.dtype)
        return self.weight @ self.weight.T + self.sigma**2 * eye

    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(x; mu, W W^T + sigma^2 I) per row, in nats. Returns [N]."""
        with torch.no_grad():
            return dist.MultivariateNormal(self.loc, self.marginal_covariance()).log_prob(x)

    @torch.no_grad()
    def set_exact_guide(self) -> None:
        """Sets the guide to the exact posterior (full-covariance guide only)."""
        if self.diagonal:
            raise ValueError("the diagonal guide cannot represent the exact posterior")
        w, s2 = self.weight, self.sigma**2
        m = w.T @ w + s2 * torch.eye(self.latent_dim, dtype=w.dtype)
        a = torch.linalg.solve(m, w.T)
        self.encoder.weight.copy_(a)
        self.encoder.bias.copy_(-a @ self.loc)
        chol = torch.linalg.cholesky(s2 * torch.linalg.inv(m))
        diag = chol.diagonal() - 1e-6  # scale_tril adds 1e-6 to the softplus
        raw = chol.clone()
        raw.diagonal().copy_(diag + torch.log(-torch.expm1(-diag)))  # softplus^{-1}
        self.raw_scale_tril.copy_(raw)


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports PPCA on grey levels (a Gaussian likelihood).

    ``python models/ppca.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    defaults = ("--binarize", "none", "--latent-dim", "2", "--epochs", "20")
    raise SystemExit(run_model_file(__file__, "PPCA", args, defaults=defaults))


if __name__ == "__main__":
    main(sys.argv[1:])
