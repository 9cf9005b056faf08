r"""A small VAE with two stochastic layers, the two-layer architecture of the IWAE paper.

Generative story (top-down) and guide (bottom-up), every conditional a diagonal Gaussian but the
pixels:

.. math::
    z_2 \sim \mathcal N(0, I_{d_2}), \qquad
    z_1 \mid z_2 \sim \mathcal N(\mu_\theta(z_2), \mathrm{diag}\,\sigma_\theta(z_2)^2), \qquad
    x \mid z_1 \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta(z_1))), \\
    q_\phi(z_1, z_2 \mid x) = q_\phi(z_1 \mid x)\, q_\phi(z_2 \mid z_1)
    = \mathcal N(z_1; \mu_\phi(x), \sigma_\phi(x)^2)\,
      \mathcal N(z_2; \mu_\phi(z_1), \sigma_\phi(z_1)^2).

Burda et al. (2015) use d_1 = 100 and d_2 = 50 latent units, deterministic layers of 200-200
between x and z_1 and 100-100 between z_1 and z_2, and tanh units; these are the defaults. Both
latent sites, ``z1`` and ``z2``, sit inside the data plate, so the importance weights
log p(x, z_1, z_2) - log q(z_1, z_2 | x) stay per data point.

This is the zoo's quick two-level model (``pyrogen run hvae_small --data digits``); ``hvae.py``
holds the larger two-level HVAE of the VampPrior paper, with gated layers, p(x | z_1, z_2),
q(z_1 | x, z_2) and an optional VampPrior on z_2.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Ladder Variational Autoencoders (Sønderby et al., 2016) | https://arxiv.org/abs/1602.02282
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen
from pyrogen.nn import MLP, GaussianEncoder

__all__ = ["SmallHVAE", "main"]


class SmallHVAE(pyrogen.GenerativeModel):
    """Two-stochastic-layer VAE: x <-> z_1 <-> z_2.

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d_1, the dimension of the lower latent z_1.
        hidden_dims: deterministic layers between x and z_1 (both directions).
        top_latent_dim: d_2, the dimension of the top latent z_2.
        top_hidden_dims: deterministic layers between z_1 and z_2 (both directions).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (a learned shared scale).
        activation: hidden activation (tanh in the IWAE paper).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 100,
        hidden_dims: Sequence[int] = (200, 200),
        top_latent_dim: int = 50,
        top_hidden_dims: Sequence[int] = (100, 100),
        likelihood: str = "bernoulli",
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        self.data_dim, self.likelihood = data_dim, likelihood
        self.latent_dim, self.top_latent_dim = latent_dim, top_latent_dim
        # guide, bottom-up: q(z1 | x) q(z2 | z1)
        self.encoder_z1 = GaussianEncoder(data_dim, hidden_dims, latent_dim, activation)
        self.encoder_z2 = GaussianEncoder(latent_dim, top_hidden_dims, top_latent_dim, activation)
        # model, top-down: p(z1 | z2) p(x | z1)
        self.prior_z1 = GaussianEncoder(
            top_latent_dim, tuple(reversed(top_hidden_dims)), latent_dim, activation
        )
        self.decoder = MLP(latent_dim, tuple(reversed(hidden_dims)), data_dim, activation)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def observation(self, z1: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z_1) with event shape [D]."""
        out = self.decoder(z1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.top_latent_dim), 1.0).to_event(1))
            loc, scale = self.prior_z1(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.observation(z1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder_z1(x)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            loc, scale = self.encoder_z2(z1)
            pyro.sample("z2", dist.Normal(loc, scale).to_event(1))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the two-stochastic-layer VAE.

    ``python models/hvae_small.py --data digits`` takes the options of ``pyrogen run``
    (``--epochs``, ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "SmallHVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
