"""Building blocks for encoders and decoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "GaussianEncoder", "activation"]

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
