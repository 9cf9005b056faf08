"""Building blocks for encoders and decoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "MLP",
    "GatedDense",
    "GatedGaussianEncoder",
    "GatedMLP",
    "GaussianEncoder",
    "activation",
    "he_init",
]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """Returns the activation module called ``name`` (relu, tanh, elu, softplus, gelu, silu)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation '{name}'; choose one of {', '.join(_ACTIVATIONS)}"
        ) from None


class MLP(nn.Sequential):
    """A multilayer perceptron in_dim -> hidden_dims... -> out_dim, no activation on the output.

    Example:
        >>> MLP(784, (400,), 40)(torch.zeros(3, 784)).shape
        torch.Size([3, 40])
    """

    def __init__(
        self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, act: str = "relu"
    ) -> None:
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class GaussianEncoder(nn.Module):
    """x -> (loc, scale) of a diagonal Gaussian q(z | x), the scale through a softplus.

    Example:
        >>> loc, scale = GaussianEncoder(64, (32,), 2)(torch.zeros(5, 64))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 2]), True)
    """

    def __init__(
        self, in_dim: int, hidden_dims: Sequence[int], latent_dim: int, act: str = "relu"
    ) -> None:
        super().__init__()
        self.net = MLP(in_dim, hidden_dims, 2 * latent_dim, act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + 1e-5


def he_init(module: nn.Module) -> nn.Module:
    """Draws every ``nn.Linear`` weight in ``module`` from N(0, 2 / fan_in) (He et al., 2015).

    Biases keep PyTorch's default initialisation. Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / m.in_features) ** 0.5)
    return module


class GatedDense(nn.Module):
    r"""A gated dense layer (Dauphin et al., 2017): :math:`h(x) \odot \mathrm{sigmoid}(g(x))`.

    ``h`` and ``g`` are two affine maps in_dim -> out_dim, so the layer has
    2 (in_dim + 1) out_dim parameters.

    Example:
        >>> GatedDense(784, 300)(torch.zeros(2, 784)).shape
        torch.Size([2, 300])
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedMLP(nn.Sequential):
    """in_dim -> hidden_dims... through gated dense layers; ``out_dim`` adds an affine output.

    Example:
        >>> GatedMLP(40, (300, 300), 784)(torch.zeros(3, 40)).shape
        torch.Size([3, 784])
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int | None = None) -> None:
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = [GatedDense(a, b) for a, b in zip(dims[:-1], dims[1:])]
        if out_dim is not None:
            layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class GatedGaussianEncoder(nn.Module):
    """x -> (loc, scale) through gated dense layers, as in the VampPrior paper's MLP encoder.

    The log-variance head is clipped to [-6, 2] by a hardtanh, so the scale
    exp(logvar / 2) lies in [0.05, 2.72].

    Example:
        >>> loc, scale = GatedGaussianEncoder(784, (300, 300), 40)(torch.zeros(2, 784))
        >>> loc.shape, bool((scale >= 0.049).all())
        (torch.Size([2, 40]), True)
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.body = GatedMLP(in_dim, hidden_dims)
        self.loc = nn.Linear(hidden_dims[-1], latent_dim)
        self.logvar = nn.Linear(hidden_dims[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        logvar = nn.functional.hardtanh(self.logvar(h), -6.0, 2.0)
        return self.loc(h), (0.5 * logvar).exp()
