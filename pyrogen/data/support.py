"""What to tell a user whose data fall outside the support of the model's observation.

The check itself is Pyro's: ``fn.support.check(x)`` for the observed site (see
:func:`pyrogen.check_model`). This module turns a failed check into advice that fits the kind of
data and the kind of support: pixels (binarize or rescale), real values (pick a real-valued
likelihood), counts (integers, not negative).
"""

from __future__ import annotations

__all__ = ["support_hint"]

from typing import Any

import torch
from torch.distributions import constraints

_REAL_LIKELIHOODS = "--likelihood gaussian or studentt"


def _base(support: Any) -> Any:
    while hasattr(support, "base_constraint"):  # .to_event(): element by element
        support = support.base_constraint
    return support


def _kind(values: torch.Tensor) -> str:
    """'binary', 'grey' (in [0, 1]), 'pixels' (integers 0..255), 'counts' or 'real'."""
    v = values.detach()
    lo, hi = float(v.min()), float(v.max())
    integers = bool((v == v.round()).all())
    if integers and lo >= 0 and hi <= 1:
        return "binary"
    if lo >= 0 and hi <= 1:
        return "grey"
    if integers and lo >= 0:
        return "pixels" if hi <= 255 else "counts"
    return "real"


def support_hint(support: Any, values: torch.Tensor) -> str:
    """A sentence on how to make ``values`` fit ``support`` (empty when there is nothing to say).

    Example:
        >>> support_hint(constraints.boolean, torch.tensor([0.2, 0.9]))
        'grey levels need binarizing (--binarize dynamic or static)'
    """
    if values.numel() == 0 or not bool(torch.isfinite(values).all()):
        return ""
    base = _base(support)
    kind = _kind(values)
    if base is constraints.boolean:
        return {
            "grey": "grey levels need binarizing (--binarize dynamic or static)",
            "pixels": "these look like 8-bit pixels: --scale 255 --binarize dynamic makes them "
            "binary draws of grey levels; or model them as counts (--likelihood poisson)",
            "counts": "counts need a count likelihood (--likelihood poisson)",
            "real": f"real values need a real-valued likelihood ({_REAL_LIKELIHOODS})",
        }.get(kind, "")
    if base is constraints.nonnegative_integer or isinstance(base, constraints.integer_interval):
        if kind in ("grey", "real") and not bool((values == values.round()).all()):
            return (
                "counts must be whole numbers; real values need a real-valued likelihood "
                f"({_REAL_LIKELIHOODS})"
            )
        if bool((values < 0).any()):
            return f"counts cannot be negative; signed values need {_REAL_LIKELIHOODS}"
        return ""
    if base is constraints.unit_interval or isinstance(
        base, (constraints.interval, constraints.half_open_interval)
    ):
        if kind == "pixels":
            return "8-bit pixel values: divide them by 255 with --scale 255"
        return (
            "rescale the data (--scale minmax), or pick a likelihood for their range "
            f"({_REAL_LIKELIHOODS} for real values)"
        )
    if base is constraints.positive or isinstance(base, constraints.greater_than):
        return f"values must be positive; signed values need {_REAL_LIKELIHOODS}"
    return ""
