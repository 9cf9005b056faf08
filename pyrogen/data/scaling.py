"""Rescaling the user's data, only when asked (``--scale`` or ``scale = ...`` in a TOML file).

pyrogen never rescales a user's file on its own: the values a model sees are the values stored,
so a likelihood is fit to the data the user has. Where a rescaling is wanted, it is one of
:data:`SCALES`, recorded in the run's config.json and applied the same way to every split:

* ``"255"``: x / 255, 8-bit pixel values to grey levels in [0, 1] (then ``--binarize`` them for a
  Bernoulli likelihood);
* ``"minmax"``: each column to [0, 1] by its minimum and maximum;
* ``"standardize"``: each column to mean 0 and standard deviation 1.

The minimum, maximum, mean and standard deviation come from the rows outside the fixed test
split (train and validation), so the test rows never shape their own scaling; constant columns
are shifted but not divided.
"""

from __future__ import annotations

__all__ = ["SCALES", "check_scale", "rescale", "scale_of_run"]

import numpy as np

from pyrogen.errors import DataError

SCALES: tuple[str, ...] = ("none", "255", "minmax", "standardize")


def check_scale(scale: str | None) -> str | None:
    """``None`` for no rescaling, else the name of one of :data:`SCALES`."""
    if scale is None:
        return None
    name = str(scale).strip().lower()
    if name not in SCALES:
        raise DataError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    return None if name == "none" else name


def rescale(x: np.ndarray, scale: str | None, reference: np.ndarray) -> np.ndarray:
    """x [N, D] rescaled by ``scale`` with statistics of ``reference`` [M, D] (float32).

    Example:
        >>> x = np.array([[0.0, 10.0], [2.0, 30.0]], dtype=np.float32)
        >>> rescale(x, "minmax", x).tolist()
        [[0.0, 0.0], [1.0, 1.0]]
    """
    scale = check_scale(scale)
    if scale is None:
        return x
    ref = reference.astype(np.float64)
    if scale == "255":
        shift, factor = 0.0, np.float64(255.0)
    elif scale == "minmax":
        shift, factor = ref.min(axis=0), ref.max(axis=0) - ref.min(axis=0)
    else:
        shift, factor = ref.mean(axis=0), ref.std(axis=0)
    factor = np.where(factor > 0, factor, 1.0)
    return ((x.astype(np.float64) - shift) / factor).astype(np.float32)


def scale_of_run(config: dict) -> str | None:
    """The ``scale`` a run's data were loaded with, from its config.json.

    Runs written before pyrogen recorded ``scale`` divided a user's uint8 file by 255 on their
    own: for them, a uint8 file means ``"255"``.
    """
    if "scale" in config:
        return check_scale(config["scale"])
    from pathlib import Path

    from pyrogen.data.files import USER_SUFFIXES, _read_user_file

    path = Path(str(config.get("data", ""))).expanduser()
    if path.suffix.lower() not in USER_SUFFIXES or not path.is_file():
        return None
    try:
        x, _ = _read_user_file(path)
    except DataError:
        return None
    return "255" if np.asarray(x).dtype == np.uint8 else None
