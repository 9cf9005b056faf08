r"""The two-level hierarchical VAE of the VampPrior paper, with a standard or a VampPrior on z_2.

Generative story (top-down) and guide (top latent first), every latent conditional a diagonal
Gaussian and the pixels Bernoulli:

.. math::
    z_2 \sim p_\lambda(z_2), \qquad
    z_1 \mid z_2 \sim \mathcal N(\mu_\theta(z_2), \mathrm{diag}\,\sigma_\theta(z_2)^2), \qquad
    x \mid z_1, z_2 \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta(z_1, z_2))), \\
    q_\phi(z_1, z_2 \mid x) = q_\phi(z_2 \mid x)\, q_\phi(z_1 \mid x, z_2), \qquad
    p_\lambda(z_2) = \mathcal N(0, I) \quad\text{or}\quad
    p_\lambda(z_2) = \frac{1}{K} \sum_{k=1}^{K} q_\phi(z_2 \mid u_k).

The networks are those of Tomczak's reference code (``models/HVAE_2level.py``), built from gated
dense layers :math:`h(a) = (W a + b) \odot \mathrm{sigmoid}(V a + c)` of ``hidden_dim`` units
(300 in the paper), with every log-variance clipped to [-6, 2] by a hardtanh:

* q(z_2 | x): x -> gated -> gated -> (mean: linear, log-variance: linear + hardtanh);
* q(z_1 | x, z_2): x -> gated and z_2 -> gated, the two joined (concatenated) -> gated ->
  (mean, log-variance);
* p(z_1 | z_2): z_2 -> gated -> gated -> (mean, log-variance);
* p(x | z_1, z_2): z_1 -> gated and z_2 -> gated, joined -> gated -> linear -> sigmoid mean
  (here the logits of a Bernoulli; the reference clips the mean to [1e-5, 1 - 1e-5] inside its
  log-likelihood, which only matters for pixels predicted beyond |logit| > 11.5).

With the VampPrior, the prior on the top latent is the guide's own q(z_2 | .) at K learned
pseudo-inputs u_k = hardtanh(v_k, 0, 1), v_k initialised at N(0.05, 0.01^2): a K x D table, the
reference's ``Linear(K, D, bias=False)`` applied to the K x K identity. All linear weights start
He-initialised (N(0, 2 / fan_in)), the biases at PyTorch's default. The mixture's log-density is
exact, computed per draw by matrix products (:class:`VampMixture`), so the importance weights
log p(x, z_1, z_2) - log q(z_1, z_2 | x) stay per data point; evaluating it costs O(K d_2) per
draw and each step encodes the K pseudo-inputs once.

With 784 inputs, ``latent_dim = top_latent_dim = 40`` and ``hidden_dim = 300``, the model has the
reference code's 2,431,024 parameters, and 2,823,024 with ``prior="vampprior", num_pseudo=500``.

References:
    | VAE with a VampPrior (Tomczak & Welling, 2018) | https://arxiv.org/abs/1705.07120
    | Reference code (Tomczak) | https://github.com/jmtomczak/vae_vampprior
    | Gated Convolutional Networks (Dauphin et al., 2017) | https://arxiv.org/abs/1612.08083
"""

from __future__ import annotations

import math
import sys

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

import pyrogen
from pyrogen.nn import GatedDense, GatedGaussianEncoder, GatedMLP, he_init

__all__ = ["HVAE", "VampMixture", "main"]

PRIORS = ("standard", "vampprior")


class VampMixture(dist.TorchDistribution):
    r"""The uniform mixture (1/K) sum_k N(loc_k, diag scale_k^2), event shape [d].

    ``loc`` and ``scale`` ([K, d]) are shared by every batch element, so expanding the
    distribution over plates only changes its batch shape. The log-density of a draw z is
    a log-sum-exp over the K components of

    .. math::
        -\sum_i \log \sigma_{ki} - \frac d2 \log 2\pi - \frac12 \Big(
        \sum_i \frac{z_i^2}{\sigma_{ki}^2} - 2 \sum_i \frac{z_i \mu_{ki}}{\sigma_{ki}^2}
        + \sum_i \frac{\mu_{ki}^2}{\sigma_{ki}^2} \Big),

    two [draws, d] x [d, K] matrix products in float64 (the three sums can be large and nearly
    cancel) instead of a [draws, K, d] tensor.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        batch_shape: torch.Size | tuple = (),
        validate_args: bool | None = None,
    ) -> None:
        if loc.dim() != 2 or loc.shape != scale.shape:
            raise ValueError(f"loc and scale must both be [K, d], got {loc.shape}, {scale.shape}")
        self.loc, self.scale = loc, scale
        super().__init__(torch.Size(batch_shape), loc.shape[-1:], validate_args=validate_args)

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    def expand(self, batch_shape: torch.Size | tuple, _instance: object = None) -> VampMixture:
        return VampMixture(self.loc, self.scale, batch_shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.mean(0).expand(self.batch_shape + self.event_shape)

    def sample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            k = torch.randint(self.num_components, shape, device=self.loc.device)
            return torch.normal(self.loc[k], self.scale[k])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        d = self.loc.shape[-1]
        z = value.reshape(-1, d).double()
        loc, scale = self.loc.double(), self.scale.double()
        precision = scale.pow(-2)  # [K, d]
        quad = (
            (z * z) @ precision.T - 2 * z @ (loc * precision).T + (loc * loc * precision).sum(-1)
        )  # [draws, K]
        log_norm = -scale.log().sum(-1) - 0.5 * d * math.log(2 * math.pi)  # [K]
        lp = torch.logsumexp(log_norm - 0.5 * quad, dim=-1) - math.log(self.num_components)
        lp = lp.to(value.dtype).reshape(value.shape[:-1])
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))


def _join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., m] and [..., n] -> [..., m + n], the leading dimensions broadcast (a guide draw of
    z_2 carries a particle dimension that the features of x do not)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat((a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])), dim=-1)


class HVAE(pyrogen.GenerativeModel):
    """Two-level VAE of the VampPrior paper: p(z_2) p(z_1 | z_2) p(x | z_1, z_2).

    Arguments:
        data_dim: D, the dimension of x.
        latent_dim: d_1, the dimension of the lower latent z_1 (40 in the paper).
        top_latent_dim: d_2, the dimension of the top latent z_2 (40 in the paper).
        hidden_dim: the width of every gated dense layer (300 in the paper).
        prior: ``"standard"`` (N(0, I) on z_2) or ``"vampprior"`` (the guide's q(z_2 | .) at
            ``num_pseudo`` learned pseudo-inputs).
        num_pseudo: K, the number of pseudo-inputs of the VampPrior (500 in the paper).
        likelihood: ``"bernoulli"`` (the paper's, for binary data) or ``"gaussian"`` (a learned
            shared scale: one more parameter; the reference code's discretized logistic for grey
            levels is not implemented).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 40,
        top_latent_dim: int = 40,
        hidden_dim: int = 300,
        prior: str = "standard",
        num_pseudo: int = 500,
        likelihood: str = "bernoulli",
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got '{prior}'")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        if num_pseudo < 1:
            raise ValueError(f"num_pseudo must be a positive integer, got {num_pseudo}")
        self.data_dim, self.likelihood, self.prior_name = data_dim, likelihood, prior
        self.latent_dim, self.top_latent_dim = latent_dim, top_latent_dim
        self.num_pseudo = num_pseudo
        h = hidden_dim
        # guide: q(z2 | x), then q(z1 | x, z2)
        self.q_z2 = GatedGaussianEncoder(data_dim, (h, h), top_latent_dim)
        self.q_z1_x = GatedDense(data_dim, h)
        self.q_z1_z2 = GatedDense(top_latent_dim, h)
        self.q_z1_joint = GatedGaussianEncoder(2 * h, (h,), latent_dim)
        # model: p(z1 | z2), then p(x | z1, z2)
        self.p_z1 = GatedGaussianEncoder(top_latent_dim, (h, h), latent_dim)
        self.p_x_z1 = GatedDense(latent_dim, h)
        self.p_x_z2 = GatedDense(top_latent_dim, h)
        self.p_x_joint = GatedMLP(2 * h, (h,), data_dim)
        he_init(self)
        if prior == "vampprior":
            self.pseudo_logits = nn.Parameter(0.05 + 0.01 * torch.randn(num_pseudo, data_dim))
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_1..u_K = hardtanh(v_k, 0, 1), shape [K, D] (VampPrior only)."""
        return nn.functional.hardtanh(self.pseudo_logits, 0.0, 1.0)

    def prior_z2(self, like: torch.Tensor) -> dist.Distribution:
        """p_lambda(z_2), event shape [d_2]; ``like`` gives the dtype and device."""
        if self.prior_name == "standard":
            return dist.Normal(like.new_zeros(self.top_latent_dim), 1.0).to_event(1)
        loc, scale = self.q_z2(self.pseudo_inputs)
        return VampMixture(loc, scale)

    def posterior_z1(self, x: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q_phi(z_1 | x, z_2)."""
        return self.q_z1_joint(_join(self.q_z1_x(x), self.q_z1_z2(z2)))

    def observation(self, z1: torch.Tensor, z2: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z_1, z_2) with event shape [D]."""
        out = self.p_x_joint(_join(self.p_x_z1(z1), self.p_x_z2(z2)))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        prior = self.prior_z2(x)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", prior)
            loc, scale = self.p_z1(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.observation(z1, z2), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.q_z2(x)
            z2 = pyro.sample("z2", dist.Normal(loc, scale).to_event(1))
            loc, scale = self.posterior_z1(x, z2)
            pyro.sample("z1", dist.Normal(loc, scale).to_event(1))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the two-level HVAE.

    ``python models/hvae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...; ``--model-option prior=vampprior`` for the VampPrior).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "HVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
