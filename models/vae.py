r"""The variational autoencoder of Kingma & Welling (2013).

Generative story, with a diagonal Gaussian amortized guide:

.. math::
    z \sim \mathcal N(0, I_d), \qquad
    x \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta(z)))
    \;\text{or}\; \mathcal N(f_\theta(z), \sigma^2 I_D)
    \;\text{or}\; \mathrm{StudentT}_\nu(f_\theta(z), \sigma)
    \;\text{or}\; \mathrm{Poisson}(\mathrm{softplus}(f_\theta(z))), \\
    q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2),
    \qquad z = \mu_\phi(x) + \sigma_\phi(x) \odot \epsilon,\; \epsilon \sim \mathcal N(0, I).

Trained by maximising the ELBO E_q[log p(x, z) - log q(z | x)] <= log p(x) with reparametrized
gradients.

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2013) | https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen
from pyrogen.nn import MLP, GatedGaussianEncoder, GatedMLP, GaussianEncoder, he_init

__all__ = ["LIKELIHOODS", "VAE", "main"]

#: p_theta(x | z) by the kind of data: binary, real (light or heavy tails), counts
LIKELIHOODS = ("bernoulli", "gaussian", "studentt", "poisson")


class VAE(pyrogen.GenerativeModel):
    """MLP VAE: D -> hidden_dims -> d encoder, d -> reversed(hidden_dims) -> D decoder.

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d, the dimension of z.
        hidden_dims: hidden layer widths of the encoder (the decoder mirrors them).
        likelihood: ``"bernoulli"`` for binary data, ``"gaussian"`` for real values (a learned
            scale shared by all dimensions), ``"studentt"`` for real values with heavy tails
            (learned scale and degrees of freedom, shared) or ``"poisson"`` for counts (rate
            softplus(f(z))).
        activation: hidden activation (relu, tanh, ...); not used when ``gated``.
        gated: gated dense layers in encoder and decoder, He initialisation and a log-variance
            clipped to [-6, 2]: the MLP VAE of the VampPrior and Exemplar VAE papers
            (``latent_dim=40, hidden_dims=(300, 300), gated=True``: 1,116,864 parameters).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        activation: str = "relu",
        gated: bool = False,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(
                f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}"
            )
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        if gated:
            self.encoder = he_init(GatedGaussianEncoder(data_dim, hidden_dims, latent_dim))
            self.decoder = he_init(GatedMLP(latent_dim, tuple(reversed(hidden_dims)), data_dim))
        else:
            self.encoder = GaussianEncoder(data_dim, hidden_dims, latent_dim, activation)
            self.decoder = MLP(latent_dim, tuple(reversed(hidden_dims)), data_dim, activation)
        if likelihood in ("gaussian", "studentt"):
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))
        if likelihood == "studentt":
            self.log_df = nn.Parameter(torch.tensor(1.5))  # nu = e^1.5 ~ 4.5 to start

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z) as a distribution with event shape [D]."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        if self.likelihood == "poisson":
            return dist.Poisson(nn.functional.softplus(out) + 1e-6).to_event(1)
        if self.likelihood == "studentt":
            return dist.StudentT(self.log_df.exp(), out, self.log_sigma.exp()).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the MLP VAE (Kingma & Welling, 2013).

    ``python models/vae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "VAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
