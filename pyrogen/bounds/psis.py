r"""The Pareto k-hat of importance weights (PSIS), through whichever ArviZ generation is installed.

Pareto smoothed importance sampling fits a generalized Pareto distribution to the M largest of
the K importance ratios :math:`r_j = e^{w_j}` of one data point; its shape k-hat says how heavy
the tail is and so how far the importance-sampled estimate can be trusted:

- k-hat < 0.5: finite variance, the estimate converges quickly;
- 0.5 <= k-hat < 0.7: usable, slower convergence;
- k-hat >= 0.7: the estimate is unreliable (the variance is, in practice, infinite);
- k-hat >= 1: not even the mean exists.

The tail holds :math:`M = \lfloor 3 \sqrt{K} \rfloor` draws for K > 225, else
:math:`M = \lfloor K / 5 \rfloor` (ArviZ 1.x's rule; ArviZ 0.2x rounds up instead, so pyrogen
passes it the relative efficiency that makes it fit the same M). The fit itself is ArviZ's
(Zhang & Stephens' empirical Bayes estimate with a weak prior at 0.5), the same code in both
generations, so the numbers are the same on ArviZ 0.2x (Python 3.10+) and 1.x (Python 3.12+):

- ArviZ 1.x: ``arviz_stats.base.array_stats.psislw``, whose input is a log-likelihood
  (it smooths the tail of its negation), so it gets ``-w``;
- ArviZ 0.2x: ``arviz.psislw(w, reff)``.

Where no tail can be fit, pyrogen says so the same way on both: NaN with fewer than
``MIN_KHAT_DRAWS`` draws or a tail whose first quartile is its minimum (ties); ``-inf`` where
the tail spreads less than ``CONSTANT_SPREAD`` nats (no tail at all: a perfectly reliable
estimate).

References:
    | Pareto Smoothed Importance Sampling (Vehtari et al., 2024) | https://arxiv.org/abs/1507.02646
    | Yes, but Did It Work?: Evaluating Variational Inference (Yao et al., 2018)
    | https://arxiv.org/abs/1802.02538
"""

from __future__ import annotations

import functools
import importlib.metadata
import math

import numpy as np

from pyrogen.errors import ConfigError

__all__ = ["CONSTANT_SPREAD", "MIN_KHAT_DRAWS", "arviz_generation", "pareto_khat", "tail_length"]

#: a tail whose log-weights spread less than this (nats) is constant: k-hat is -inf
CONSTANT_SPREAD = 1e-9

#: fewer draws leave a tail too short to fit (M = K // 5 < 6): k-hat is reported as NaN
MIN_KHAT_DRAWS = 30


def tail_length(num_draws: int) -> int:
    """M, the number of largest draws the generalized Pareto distribution is fit to.

    Example:
        >>> tail_length(100), tail_length(1000), tail_length(5000)
        (20, 94, 212)
    """
    if num_draws > 225:
        return int(math.floor(3 * math.sqrt(num_draws)))
    return num_draws // 5


@functools.lru_cache(maxsize=1)
def arviz_generation() -> int:
    """0 for ArviZ 0.2x (``arviz.psislw``), 1 for ArviZ 1.x (``arviz_stats``).

    Read from the installed distributions' metadata, without importing ArviZ (slow).
    """
    try:
        major = int(importlib.metadata.version("arviz").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        major = None
    if major == 0:
        return 0
    try:
        importlib.metadata.version("arviz-stats")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "k-hat needs ArviZ: pip install 'arviz>=0.23' (ArviZ 1.x brings arviz-stats)"
        ) from None
    return 1


def _fit(lw: np.ndarray, m: int, generation: int) -> np.ndarray:
    """ArviZ's k-hat of each row of ``lw`` [N, rows], fit to its ``m`` largest draws.

    Each generation takes its tail length from the number of draws it is given and a relative
    efficiency r_eff; the r_eff passed makes that length ``m`` whether ``lw`` holds a whole pool
    of K draws (m = tail_length(K)) or only the largest rows of one (rows >= 6 (m + 1)).
    """
    rows = lw.shape[1]
    if generation == 0:
        import arviz as az

        # ArviZ 0.2x's tail is ceil(min(rows / 5, 3 sqrt(rows / reff))) = ceil(m - 1/2) = m
        reff = 9.0 * rows / (m - 0.5) ** 2
        with np.errstate(all="ignore"):
            _, khat = az.psislw(lw.copy(), reff)
    else:
        from arviz_stats.base import array_stats

        # ArviZ 1.x's tail is floor(3 sqrt(rows / r_eff)) = floor(m + 1/2) = m where
        # rows r_eff > 225, else floor(rows / 5) = m (a whole pool of K <= 225); its input is a
        # log-likelihood, so it gets -w
        r_eff = 9.0 * rows / (m + 0.5) ** 2
        with np.errstate(all="ignore"):
            _, khat = array_stats.psislw(-lw, r_eff=r_eff, axis=-1)
    return np.asarray(khat, dtype=float).reshape(-1)


def pareto_khat(
    lw: np.ndarray, generation: int | None = None, num_draws: int | None = None
) -> np.ndarray:
    """Pareto k-hat of each data point's K log-weights.

    Arguments:
        lw: log-weights [K, N] (K draws of N data points), as from ``pyrogen.log_weights``; or,
            with ``num_draws``, only the largest ``rows`` of each point's pool (at least
            :func:`~pyrogen.bounds.streaming.khat_buffer_size` (num_draws)): the fit needs the
            tail and its cutoff only, so the result is that of the whole pool.
        generation: the ArviZ generation to use, 0 or 1 (default: the installed one).
        num_draws: the pool's size K when ``lw`` holds only its largest weights.

    Returns:
        k-hat [N] (float64): NaN where no tail can be fit (fewer than ``MIN_KHAT_DRAWS`` draws,
        or ties in the tail), ``-inf`` where the tail is constant.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> khat = pareto_khat(rng.normal(0.0, 1.0, size=(1000, 2)))
        >>> bool(((khat > 0) & (khat < 0.5)).all())
        True
    """
    lw = np.asarray(lw, dtype=np.float64)
    if lw.ndim != 2:
        raise ValueError(f"lw must have shape [K, N], got {list(lw.shape)}")
    num, n = lw.shape
    khat = np.full(n, np.nan)
    if (num_draws or num) < MIN_KHAT_DRAWS or n == 0:
        return khat
    rows = lw.T  # [N, K]
    m = tail_length(num_draws or num)
    if num < m + 1:
        raise ValueError(f"k-hat of {num_draws} draws needs their {m + 1} largest, got {num}")
    ordered = np.sort(rows, axis=1)
    with np.errstate(all="ignore"):  # inf - inf where a row is unusable (masked below)
        tail = ordered[:, num - m :] - ordered[:, num - m - 1 : num - m]  # over the cutoff
        constant = (tail[:, -1] - tail[:, 0]) < CONSTANT_SPREAD
        # ArviZ 1.x returns NaN where the tail's first quartile is its minimum; 0.2x fits anyway
        ties = tail[:, int(m / 4 + 0.5) - 1] <= tail[:, 0]
    # a weight of 0 (w = -inf) is a draw like any other, unless it reaches the tail's cutoff
    usable = ~np.isnan(rows).any(axis=1) & ~np.isposinf(rows).any(axis=1)
    usable &= np.isfinite(ordered[:, num - m - 1])
    constant &= usable
    khat[constant] = -np.inf
    fit = usable & ~constant & ~ties
    if fit.any():
        khat[fit] = _fit(rows[fit], m, arviz_generation() if generation is None else generation)
    return khat
