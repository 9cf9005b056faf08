r"""A convolutional variational autoencoder for square grey-level images.

Generative story, with a diagonal Gaussian amortized guide whose encoder is a convolutional
network:

.. math::
    z \sim \mathcal N(0, I_d), \qquad
    x \mid z \sim \mathrm{Bernoulli}(\mathrm{sigmoid}(g_\theta(z)))
    \;\text{or}\; \mathcal N(g_\theta(z), \sigma^2 I_D), \\
    q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2).

The encoder is two stride-2 convolutions (kernel 4, padding 1; each halves the image side) and a
dense layer; the decoder mirrors it with transposed convolutions, so that g_theta(z) gives the
logits of every pixel. The image side s = sqrt(D) must be a multiple of 4: 28 (MNIST,
Fashion-MNIST: 28 -> 14 -> 7) and 8 (scikit-learn digits: 8 -> 4 -> 2) both work.

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2013) | https://arxiv.org/abs/1312.6114
    | Deep Convolutional Inverse Graphics Network (Kulkarni et al., 2015)
    | https://arxiv.org/abs/1503.03167
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
from pyrogen.nn import MLP
from pyrogen.nn import activation as make_activation

__all__ = ["ConvVAE", "image_side", "main"]


def image_side(data_dim: int) -> int:
    """The side s of a square image with s * s = data_dim pixels, s a multiple of 4.

    Raises:
        ValueError: naming ``data_dim`` when it is not such a square.
    """
    side = math.isqrt(data_dim)
    if side * side != data_dim or side % 4 != 0:
        raise ValueError(
            f"ConvVAE needs square images whose side is a multiple of 4 (e.g. 8x8 = 64 or "
            f"28x28 = 784 pixels), got data_dim={data_dim}"
        )
    return side


class ConvVAE(pyrogen.GenerativeModel):
    """Convolutional VAE on s x s images, s = sqrt(data_dim) a multiple of 4.

    Arguments:
        data_dim: D = s * s, the number of pixels.
        latent_dim: d, the dimension of z.
        hidden_dims: widths of the dense layers between the convolutions and z.
        channels: the channels of the two convolutions of the encoder (the decoder mirrors them).
        likelihood: ``"bernoulli"`` (binary pixels) or ``"gaussian"`` (a learned shared scale).
        activation: hidden activation.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 32,
        hidden_dims: Sequence[int] = (256,),
        channels: Sequence[int] = (32, 64),
        likelihood: str = "bernoulli",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got '{likelihood}'")
        if len(channels) != 2:
            raise ValueError(f"channels must give two convolutions, got {tuple(channels)}")
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        self.side = image_side(data_dim)
        c1, c2 = channels
        self.feature_shape = (c2, self.side // 4, self.side // 4)
        features = c2 * (self.side // 4) ** 2
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 4, 2, 1),
            make_activation(activation),
            nn.Conv2d(c1, c2, 4, 2, 1),
            make_activation(activation),
            nn.Flatten(),
        )
        self.encoder_head = MLP(features, hidden_dims, 2 * latent_dim, activation)
        self.decoder_head = nn.Sequential(
            MLP(latent_dim, tuple(reversed(hidden_dims)), features, activation),
            make_activation(activation),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            make_activation(activation),
            nn.ConvTranspose2d(c1, 1, 4, 2, 1),
        )
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q_phi(z | x) for x of shape [..., D]."""
        batch = x.shape[:-1]
        h = self.conv(x.reshape(-1, 1, self.side, self.side))
        loc, raw_scale = self.encoder_head(h).chunk(2, dim=-1)
        scale = nn.functional.softplus(raw_scale) + 1e-5
        return loc.reshape(*batch, -1), scale.reshape(*batch, -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """g_theta(z), shape [..., D], for z of shape [..., d] (any leading particle/data dims)."""
        batch = z.shape[:-1]
        h = self.decoder_head(z.reshape(-1, self.latent_dim)).reshape(-1, *self.feature_shape)
        return self.deconv(h).reshape(*batch, self.data_dim)

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z) with event shape [D]."""
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        return dist.Normal(out, self.log_sigma.exp()).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.observation(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def main(args: list[str] | None = None) -> None:
    """Trains, evaluates and reports the convolutional VAE.

    ``python models/conv_vae.py --data digits`` takes the options of ``pyrogen run`` (``--epochs``,
    ``--latent-dim``, ``--out``, ...).
    """
    from pyrogen.cli import run_model_file  # the command line is not imported by `import pyrogen`

    raise SystemExit(run_model_file(__file__, "ConvVAE", args))


if __name__ == "__main__":
    main(sys.argv[1:])
