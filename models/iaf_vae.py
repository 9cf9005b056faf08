r"""A VAE whose guide is a diagonal Gaussian pushed through inverse autoregressive flows.

Generative story as the MLP VAE; the guide draws from an amortized Gaussian and transforms the
draw with T inverse autoregressive flow (IAF) steps whose parameters are global:

.. math::
    z \sim \mathcal N(0, I_d), \qquad
    x \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta(z))), \\
    z_0 = \mu_\phi(x) + \sigma_\phi(x) \odot \epsilon, \quad \epsilon \sim \mathcal N(0, I), \qquad
    z_t = s_t \odot z_{t-1} + (1 - s_t) \odot m_t, \quad
    (m_t, s_t) = (m_t(z_{t-1}), \mathrm{sigmoid}(l_t(z_{t-1}))),
    \\
    \log q_\phi(z_T \mid x) = \log \mathcal N(z_0; \mu_\phi(x), \sigma_\phi(x)^2)
    - \sum_{t=1}^{T} \sum_i \log s_{t,i},

where (m_t, l_t) is a MADE network, so that m_{t,i} and l_{t,i} depend on z_{t-1} only through the
coordinates before i in the step's order (a random permutation per step). This is the numerically
stable update of Kingma et al. (2016, eq. 14); the draw z_T is still reparametrized, and the
Jacobian is triangular, so log q is exact. Pyro's
``AffineAutoregressive(AutoRegressiveNN(...), stable=True)`` implements each step; the guide is
``TransformedDistribution(Normal(loc, scale).to_event(1), flows)``.

References:
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
    | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
    | https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn

import pyrogen
from pyrogen.nn import MLP, GaussianEncoder

__all__ = ["IAFVAE", "main"]


class IAFVAE(pyrogen.GenerativeModel):
    """MLP VAE with an IAF guide.

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d, the dimension of z.
        hidden_dims: hidden widths of the encoder (the decoder mirrors them).
        num_flows: T, the number of IAF steps.
        flow_hidden_dims: hidden widths of each step's MADE (default: (2 d,)).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (a learned shared scale).
        activation: hidden activation of encoder and decoder.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        num_flows: int = 2,
        flow_hidden_dims: Sequence[int] | None = None,
        likelihood: str = "bernoulli",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        if latent_dim < 2:
            raise ValueError(f"an autoregressive flow needs latent_dim >= 2, got {latent_dim}")
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        self.encoder = GaussianEncoder(data_dim, hidden_dims, latent_dim, activation)
        self.decoder = MLP(latent_dim, tuple(reversed(hidden_dims)), data_dim, activation)
        flow_hidden = list(flow_hidden_dims or (2 * latent_dim,))
        # a ModuleList registers the steps: their MADE weights, masks and permutations are trained
        # and written to the checkpoint with the rest of the model
        self.flows = nn.ModuleList(
            AffineAutoregressive(AutoRegressiveNN(latent_dim, flow_hidden), stable=True)
            for _ in range(num_flows)
        )
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z) with event shape [D]."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def posterior(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """q_phi(z | x): the amortized Gaussian pushed through the flows, event shape [d]."""
        loc, scale = self.encoder(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), list(self.flows))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the VAE with an IAF guide.

    ``python models/iaf_vae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "IAFVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
