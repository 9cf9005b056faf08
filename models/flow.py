r"""A normalizing flow: the push-forward model with no latent variable and an exact density.

The model is mu_theta = (T_theta)_# nu_0, a standard normal pushed through a bijection, here T
masked autoregressive steps followed by a fixed squashing onto an interval that contains [0, 1]:

.. math::
    u_0 \sim \nu_0 = \mathcal N(0, I_D), \qquad u_t = h_t^{-1}(u_{t-1}),\; t = 1..T, \qquad
    x = \frac{\mathrm{sigmoid}(u_T) - a}{1 - 2a}, \\
    \log p_\theta(x) = \log \mathcal N(h_1 \circ \dots \circ h_T(v); 0, I)
    + \sum_{t=1}^{T} \log \lvert \det J_{h_t} \rvert
    + \sum_{i=1}^{D} \log \frac{1 - 2a}{s_i (1 - s_i)},
    \qquad s = a + (1 - 2a)\, x,\; v = \mathrm{logit}(s),

with each h_t an affine autoregressive map h_t(u)_i = m_{t,i}(u_{<i}) + exp(l_{t,i}(u_{<i})) u_i
(a MADE network, a random variable order per step), so log p(x) is one pass of every network.
This is the logit pre-processing of RealNVP made part of the model, its Jacobian included: the
density is over x in the open interval (-a / (1 - 2a), 1 + a / (1 - 2a))^D, which contains
[0, 1]^D, so data in [0, 1] are used as given, with no clamping.

There is no latent site: the guide is empty and every importance weight is log p(x) exactly, so
the ELBO, every IWAE_k and the log p(x) estimate coincide (gap 0, ESS = K), and SVI on the
"ELBO" is maximum likelihood.

Units. log p(x) here is a density of continuous x (nats per image, with respect to Lebesgue
measure), not a probability of binary pixels: it is NOT comparable with the log-probabilities of
the Bernoulli models of the zoo, and on binary or few-level grey data (digits has 17 levels) it is
unbounded above as the flow concentrates mass on the grid. Train it on grey levels
(``--binarize none``, what ``main`` passes), ideally dequantized by the user (x + u,
u ~ U(0, 1/levels), rescaled), and compare it only with other continuous densities on the same
data.

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015)
    | https://arxiv.org/abs/1505.05770
    | Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017)
    | https://arxiv.org/abs/1705.07057
    | Density Estimation Using Real NVP (Dinh et al., 2016) | https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive, AffineTransform, SigmoidTransform
from pyro.nn import AutoRegressiveNN
from torch import nn

import pyrogen

__all__ = ["Flow", "main"]


class Flow(pyrogen.GenerativeModel):
    """Masked autoregressive flow on [0, 1]^D with a logit squashing layer.

    Arguments:
        data_dim: D, the dimension of x.
        num_flows: T, the number of autoregressive steps.
        hidden_dims: hidden widths of each step's MADE (default: (2 D,)).
        alpha: a, the margin of the squashing: x in [0, 1] maps to logit(a + (1 - 2a) x).
    """

    def __init__(
        self,
        data_dim: int,
        num_flows: int = 5,
        hidden_dims: Sequence[int] | None = None,
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        if data_dim < 2:
            raise ValueError(f"an autoregressive flow needs data_dim >= 2, got {data_dim}")
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.data_dim, self.alpha = data_dim, alpha
        hidden = list(hidden_dims or (2 * data_dim,))
        # registered in a ModuleList so the steps (weights, masks, orders) are trained and saved
        self.steps = nn.ModuleList(
            AffineAutoregressive(AutoRegressiveNN(data_dim, hidden)) for _ in range(num_flows)
        )

    def density(self, like: torch.Tensor) -> dist.TransformedDistribution:
        """p_theta(x) with event shape [D]; ``like`` gives the dtype and device."""
        base = dist.Normal(like.new_zeros(self.data_dim), 1.0).to_event(1)
        a = self.alpha
        # sampling runs each step's inverse (D sequential passes); the density its forward (one)
        transforms = [step.inv for step in self.steps]
        transforms += [SigmoidTransform(), AffineTransform(-a / (1 - 2 * a), 1 / (1 - 2 * a))]
        return dist.TransformedDistribution(base, transforms)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.density(x), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """No latent variable: the guide is empty and the weights are log p(x) exactly."""


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the masked autoregressive flow (a continuous density).

    ``python models/flow.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    defaults = ("--binarize", "none")
    raise SystemExit(run_model_file(__file__, "Flow", args, defaults=defaults))


if __name__ == "__main__":
    main(sys.argv[1:])
