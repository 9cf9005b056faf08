r"""What a report asks of a trained model: samples, reconstructions, latent codes, decodings.

All of it runs the user's ``model``/``guide`` through :mod:`pyrogen.trace` (Pyro's effect
handlers, in the pair's parameter scope), so it works for any pair whose observation site has a
``mean``:

- reconstruction: z ~ q_phi(z | x) from a trace of the guide, the model replayed at that z, and the
  mean of p_theta(x | z) read off the observed site, E[x | z];
- decoding a chosen z: the model conditioned on its latent site, ``pyrogen.trace.run_model(pair,
  condition={name: z})``, and the same mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch

from pyrogen.model import GenerativeModel, latent_sites, observed_sites
from pyrogen.trace import as_pair, run_model, trace_pair

__all__ = ["LatentCodes", "decode", "latent_codes", "model_samples", "reconstruct"]


class LatentCodes(NamedTuple):
    """Guide means (``values``) and one guide draw each (``draws``) of one latent site, [N, d]."""

    name: str
    values: torch.Tensor
    draws: torch.Tensor
    num_sites: int  # latent sites of the model; a traversal needs exactly one


def _mean(fn: Any, value: torch.Tensor) -> torch.Tensor:
    try:
        return fn.mean
    except (NotImplementedError, AttributeError):
        return value


def _observed_mean(tr: Any, exclude: str = "") -> torch.Tensor:
    name = [n for n in observed_sites(tr) if n != exclude][0]
    site = tr.nodes[name]
    return _mean(site["fn"], site["value"]).reshape(site["value"].shape[0], -1)


@torch.no_grad()
def reconstruct(model: GenerativeModel, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
    """E_{p_theta}[x | z] at one draw z ~ q_phi(z | x) per row; [N, D]. Needs a latent site."""
    _, tr = trace_pair(as_pair(model), (x, *extra))
    return _observed_mean(tr)


@torch.no_grad()
def latent_codes(
    model: GenerativeModel, x: torch.Tensor, *extra: torch.Tensor
) -> LatentCodes | None:
    """The guide's mean (or, without one, its draw) of the model's first latent site; None when
    the model has no latent site (a flow)."""
    guide_tr, model_tr = trace_pair(as_pair(model), (x, *extra))
    names = latent_sites(model_tr)
    if not names or names[0] not in guide_tr.nodes:
        return None
    site = guide_tr.nodes[names[0]]
    values = _mean(site["fn"], site["value"])
    return LatentCodes(
        names[0], values.reshape(x.shape[0], -1), site["value"].reshape(x.shape[0], -1), len(names)
    )


@torch.no_grad()
def decode(
    model: GenerativeModel, name: str, z: torch.Tensor, data_dim: int, *extra: torch.Tensor
) -> torch.Tensor:
    """E[x | z] for given values ``z`` [G, d] of the latent site ``name``; [G, D]."""
    placeholder = z.new_zeros(z.shape[0], data_dim)
    tr = run_model(as_pair(model), (placeholder, *extra), condition={name: z})
    return _observed_mean(tr, exclude=name)


def _call_sample(sample: Callable, num: int, y: torch.Tensor | None, mean: bool) -> torch.Tensor:
    kwargs: dict[str, Any] = {} if y is None else {"y": y}
    try:
        return sample(num, mean=mean, **kwargs)
    except TypeError:  # a model's own sample() without the mean option
        return sample(num, **kwargs)


@torch.no_grad()
def model_samples(
    model: GenerativeModel, num: int, y: torch.Tensor | None = None, mean: bool = True
) -> torch.Tensor:
    """x from the model with z ~ r(z): the mean of p_theta(x | z), or a draw with ``mean=False``.

    Returns:
        Tensor [num, D] on the CPU.
    """
    with pyro.validation_enabled(False):
        x = _call_sample(model.sample, num, y, mean)
    return x.reshape(num, -1).cpu()
