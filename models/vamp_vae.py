r"""A VAE with the VampPrior: the prior is the guide's mixture at K learned pseudo-inputs.

Generative story, with u_1..u_K pseudo-inputs in data space learnt with everything else:

.. math::
    z \sim r_\lambda(z) = \frac{1}{K} \sum_{k=1}^{K} q_\phi(z \mid u_k), \qquad
    x \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta(z))), \\
    q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2),
    \qquad u_k = \mathrm{sigmoid}(v_k) \in (0, 1)^D.

The prior r_lambda is the variational mixture of posteriors that approximates the aggregate
posterior (1/N) sum_n q(z | x_n), the prior that maximises the ELBO. Its log-density is that of a
uniform mixture of K diagonal Gaussians, evaluated exactly (Pyro's ``MixtureSameFamily`` of a
``Categorical`` and ``Independent(Normal)`` components, with a log_prob by matrix products), so
the per-datapoint weights log p(x, z) - log q(z | x) need no approximation. A sigmoid keeps the
pseudo-inputs in (0, 1), the range of the (binary) data. Evaluating r_lambda costs O(K d) per
draw.

References:
    | VAE with a VampPrior (Tomczak & Welling, 2018) | https://arxiv.org/abs/1705.07120
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen
from pyrogen.nn import MLP, GatedGaussianEncoder, GatedMLP, GaussianEncoder, he_init

__all__ = ["GaussianMixture", "VampVAE", "main"]


class GaussianMixture(dist.MixtureSameFamily):
    r"""A mixture of diagonal Gaussians whose log-density is computed by matrix products.

    ``MixtureSameFamily`` evaluates every component on every draw by broadcasting, a tensor of
    [draws, K, d] elements. With the squares expanded,

    .. math::
        \sum_i \frac{(z_i - \mu_{ki})^2}{\sigma_{ki}^2}
        = \sum_i \frac{z_i^2}{\sigma_{ki}^2} - 2 \sum_i \frac{z_i \mu_{ki}}{\sigma_{ki}^2}
        + \sum_i \frac{\mu_{ki}^2}{\sigma_{ki}^2},

    the same log-density needs two [draws, d] x [d, K] products; they run in float64, since the
    three terms can be large and nearly cancel. This applies when the components are
    ``Independent(Normal)`` with parameters shared by every batch element (the VampPrior expanded
    over a plate); otherwise the parent's log_prob is used.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        comp = self.component_distribution
        normal = getattr(comp, "base_dist", None)
        batch = len(self.batch_shape)
        if not isinstance(normal, dist.Normal) or comp.reinterpreted_batch_ndims != 1:
            return super().log_prob(value)
        loc, scale = normal.loc, normal.scale
        logits = self.mixture_distribution.logits
        params = (loc, scale, logits)
        if any(t.dim() != batch + 2 - (t is logits) for t in params) or any(
            st != 0 and n != 1 for t in params for st, n in zip(t.stride()[:batch], t.shape)
        ):
            return super().log_prob(value)  # parameters differ across the batch
        first = (0,) * batch
        loc, scale, logits = loc[first].double(), scale[first].double(), logits[first].double()
        precision = scale.pow(-2)  # [K, d]
        z = value.double()
        quad = (
            (z * z) @ precision.T - 2 * z @ (loc * precision).T + (loc * loc * precision).sum(-1)
        )  # [..., K]
        log_norm = -scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_mix = logits - logits.logsumexp(-1, keepdim=True)
        lp = torch.logsumexp(log_mix + log_norm - 0.5 * quad, dim=-1).to(value.dtype)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))


class VampVAE(pyrogen.GenerativeModel):
    """MLP VAE with a VampPrior of ``num_pseudo`` components.

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d, the dimension of z.
        hidden_dims: hidden widths of the encoder (the decoder mirrors them).
        num_pseudo: K, the number of pseudo-inputs (500 in the paper).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (a learned shared scale).
        activation: hidden activation; not used when ``gated``.
        gated: the VampPrior paper's networks: gated dense layers, He initialisation, a
            log-variance clipped to [-6, 2], and pseudo-inputs u_k = hardtanh(v_k, 0, 1) with
            v_k initialised at N(0.05, 0.01^2) (``latent_dim=40, hidden_dims=(300, 300),
            num_pseudo=500, gated=True``: 1,508,864 parameters).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 40,
        hidden_dims: Sequence[int] = (300, 300),
        num_pseudo: int = 500,
        likelihood: str = "bernoulli",
        activation: str = "relu",
        gated: bool = False,
    ) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        if num_pseudo < 1:
            raise ValueError(f"num_pseudo must be a positive integer, got {num_pseudo}")
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        self.num_pseudo = num_pseudo
        self.gated = gated
        if gated:
            self.encoder = he_init(GatedGaussianEncoder(data_dim, hidden_dims, latent_dim))
            self.decoder = he_init(GatedMLP(latent_dim, tuple(reversed(hidden_dims)), data_dim))
            self.pseudo_logits = nn.Parameter(0.05 + 0.01 * torch.randn(num_pseudo, data_dim))
        else:
            self.encoder = GaussianEncoder(data_dim, hidden_dims, latent_dim, activation)
            self.decoder = MLP(latent_dim, tuple(reversed(hidden_dims)), data_dim, activation)
            # pseudo-inputs start near grey (0.5); a small spread breaks the components' symmetry
            self.pseudo_logits = nn.Parameter(0.1 * torch.randn(num_pseudo, data_dim))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_1..u_K, shape [K, D]."""
        if self.gated:
            return nn.functional.hardtanh(self.pseudo_logits, 0.0, 1.0)
        return torch.sigmoid(self.pseudo_logits)

    def prior(self) -> GaussianMixture:
        """r_lambda(z) = (1/K) sum_k q_phi(z | u_k), event shape [d]."""
        loc, scale = self.encoder(self.pseudo_inputs)
        mix = dist.Categorical(logits=loc.new_zeros(self.num_pseudo))
        return GaussianMixture(mix, dist.Normal(loc, scale).to_event(1))

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z) with event shape [D]."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        prior = self.prior()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.observation(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the VAE with a VampPrior.

    ``python models/vamp_vae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "VampVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
