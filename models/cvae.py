r"""A conditional VAE: the class label y is observed and conditions the decoder and the guide.

Generative story for x given its label y (one-hot e_y), with an amortized guide that sees both:

.. math::
    z \sim \mathcal N(0, I_d), \qquad
    x \mid z, y \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(f_\theta([z, e_y]))), \\
    q_\phi(z \mid x, y) = \mathcal N(\mu_\phi([x, e_y]), \mathrm{diag}\,\sigma_\phi([x, e_y])^2).

The weights log p(x, z | y) - log q(z | x, y) bound log p(x | y), the class-conditional
likelihood, which is not the log p(x) of the unconditional models: for the true model,
log p(x | y) = log p(x) + log p(y | x) - log p(y), at most log C (2.3 nats for ten balanced
classes) above log p(x). Here the prior of z does not depend on y
(the simplest of the conditional models of Sohn et al., 2015, and the generative model of
Kingma et al., 2014, with y always observed); ``sample`` draws x for given classes.

References:
    | Learning Structured Output Representation using Deep Conditional Generative Models
    | (Sohn et al., 2015) | https://papers.nips.cc/paper/5775
    | Semi-Supervised Learning with Deep Generative Models (Kingma et al., 2014)
    | https://arxiv.org/abs/1406.5298
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

__all__ = ["CVAE", "main"]


class CVAE(pyrogen.GenerativeModel):
    """Conditional MLP VAE: ``model(x, y)`` and ``guide(x, y)`` with int64 labels y [N].

    Arguments:
        data_dim: D, the dimension of x.
        num_classes: C, the number of classes (labels 0..C-1).
        latent_dim: d, the dimension of z.
        hidden_dims: hidden widths of the encoder (the decoder mirrors them).
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (a learned shared scale).
        activation: hidden activation.
    """

    def __init__(
        self,
        data_dim: int,
        num_classes: int = 10,
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
        self.data_dim, self.num_classes = data_dim, num_classes
        self.latent_dim, self.likelihood = latent_dim, likelihood
        self.encoder = GaussianEncoder(data_dim + num_classes, hidden_dims, latent_dim, activation)
        self.decoder = MLP(
            latent_dim + num_classes, tuple(reversed(hidden_dims)), data_dim, activation
        )
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """e_y [..., C] in the dtype of ``like``, broadcast to its leading (particle) dims."""
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"labels y must be an integer tensor, got {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in 0..{self.num_classes - 1}, got {int(y.min())}..{int(y.max())}"
            )
        e = nn.functional.one_hot(y.long(), self.num_classes).to(like.dtype)
        return e.expand(*like.shape[:-1], self.num_classes)

    def observation(self, z: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z, y) with event shape [D]."""
        out = self.decoder(torch.cat([z, self.one_hot(y, z)], dim=-1))
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loc, scale = self.encoder(torch.cat([x, self.one_hot(y, x)], dim=-1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(
        self, num_samples: int, y: torch.Tensor | None = None, mean: bool = True
    ) -> torch.Tensor:
        """Draws x ~ p(x | z, y), z ~ N(0, I), for labels y (default: 0, 1, .., C-1, 0, 1, ..).

        Returns:
            Tensor [num_samples, data_dim]: the pixel means, or draws when ``mean=False``.
        """
        p = next(self.parameters())
        if y is None:
            y = torch.arange(num_samples, device=p.device) % self.num_classes
        y = y.to(p.device)
        if y.shape != (num_samples,):
            raise ValueError(f"y must have shape [{num_samples}], got {list(y.shape)}")
        z = torch.randn(num_samples, self.latent_dim, device=p.device, dtype=p.dtype)
        fn = self.observation(z, y)
        return fn.mean if mean else fn.sample()


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the conditional VAE.

    ``python models/cvae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "CVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
