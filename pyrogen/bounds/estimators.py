r"""Bounds and diagnostics from a pool of per-datapoint log-weights w [K, N].

From one pool of K weights per point: the ELBO (E[w]), the importance-weighted bounds

.. math:: \mathrm{IWAE}_k = \mathbb{E}\Big[\log \frac{1}{k} \sum_{j \le k} e^{w_j}\Big]

for several k (Burda et al., 2015), each from disjoint groups of the pool so that each gets a Monte
Carlo standard error, the estimate log p^(x) = IWAE_K, the effective sample size and the Pareto
k-hat of the weights (Yao et al., 2018).

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Yes, but Did It Work?: Evaluating Variational Inference (Yao et al., 2018)
    | https://arxiv.org/abs/1802.02538
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from pyrogen import distributed
from pyrogen.bounds.weights import _max_plate_nesting, log_weights
from pyrogen.errors import ConfigError

__all__ = [
    "Evaluation",
    "estimate",
    "evaluate",
    "iwae",
    "pareto_khat",
    "parse_ks",
    "summarize",
]

#: fewer draws than this leave no tail to fit: k-hat is reported as NaN
MIN_KHAT_DRAWS = 20


def iwae(lw: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""IWAE_k per data point from disjoint groups of k weights of the pool ``lw`` [K, N].

    With G = K // k groups, each group gives log (1/k) sum_j exp(w_j); the estimate is the mean over
    groups and its standard error the groups' standard deviation over sqrt(G). With a single group
    (k = K) the standard error is the delta-method one of log of a mean,
    sqrt((K sum_j w~_j^2 - 1) / K), with w~ the self-normalized weights.

    Returns:
        (estimate [N], stderr [N]).

    Example:
        >>> lw = torch.zeros(100, 3)      # exact weights: every bound equals 0
        >>> iwae(lw, 10)[0]
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    lw = lw.double()
    num, n = lw.shape
    if not 1 <= k <= num:
        raise ConfigError(f"k={k} needs 1 <= k <= num_particles={num}")
    groups = num // k
    g = torch.logsumexp(lw[: groups * k].reshape(groups, k, n), dim=1) - math.log(k)
    est = g.mean(0)
    if groups > 1:
        se = g.std(0, unbiased=True) / math.sqrt(groups)
    else:
        w = torch.softmax(lw, dim=0)
        se = ((num * (w**2).sum(0) - 1).clamp_min(0) / num).sqrt()
    return est, se


def _group_ess(lw: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over disjoint groups of k of the effective sample size 1 / sum w~^2, per point."""
    num, n = lw.shape
    groups = num // k
    w = torch.softmax(lw[: groups * k].double().reshape(groups, k, n), dim=1)
    return (1.0 / (w**2).sum(1)).mean(0)


def pareto_khat(lw: torch.Tensor) -> np.ndarray:
    """Pareto k-hat of each point's K weights (PSIS, ArviZ): < 0.5 good, > 0.7 unreliable.

    Identical weights have no tail; ArviZ's fit returns -inf or nan for them, reported here as
    ``-inf`` (a perfectly reliable estimate). With fewer than ``MIN_KHAT_DRAWS`` draws: NaN.
    """
    import arviz as az  # slow to import: only where k-hat is computed

    if lw.shape[0] < MIN_KHAT_DRAWS:  # too few draws for a tail: no estimate, not +inf
        return np.full(lw.shape[1], np.nan)
    arr = lw.double().T.cpu().numpy()
    constant = np.ptp(arr, axis=1) < 1e-9
    with np.errstate(all="ignore"):
        _, khat = az.psislw(arr.copy())
    khat = np.asarray(khat, dtype=float).reshape(-1)
    khat[constant] = -np.inf
    return khat


class Evaluation(NamedTuple):
    """Bounds of one model on one data set: a per-datapoint table and a one-row-per-k summary."""

    points: pd.DataFrame
    summary: pd.DataFrame


def parse_ks(ks: str | Iterable[int]) -> list[int]:
    """Parses "1,10,100" (or an iterable) into a sorted list of distinct positive integers."""
    if isinstance(ks, str):
        parts = [p.strip() for p in ks.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--ks must be comma-separated integers, got '{ks}'") from None
    else:
        values = [int(v) for v in ks]
    if not values:
        raise ConfigError("the list of k is empty; give e.g. --ks 1,10,100")
    bad = [v for v in values if v < 1]
    if bad:
        raise ConfigError(f"every k must be a positive integer, got {bad}")
    return sorted(set(values))


def estimate(lw: torch.Tensor, ks: Sequence[int]) -> pd.DataFrame:
    """Per-datapoint table from a pool of weights [K, N]: ELBO, IWAE_k with errors, ESS, k-hat.

    Columns: ``elbo``, ``elbo_stderr``, ``iwae_{k}`` and ``iwae_{k}_stderr`` for each k > 1,
    ``log_px`` (IWAE at the largest k) and ``log_px_stderr``, ``gap`` (log_px - elbo, the KL from
    the guide to the posterior plus estimator bias), ``ess`` (of all K draws) and ``khat``.
    """
    ks = parse_ks(ks)
    cols: dict[str, np.ndarray] = {}
    for k in ks:
        est, se = iwae(lw, k)
        name = "elbo" if k == 1 else f"iwae_{k}"
        cols[name] = est.cpu().numpy()
        cols[f"{name}_stderr"] = se.cpu().numpy()
    if 1 not in ks:
        est, se = iwae(lw, 1)
        cols["elbo"], cols["elbo_stderr"] = est.cpu().numpy(), se.cpu().numpy()
    top = "elbo" if ks[-1] == 1 else f"iwae_{ks[-1]}"
    cols["log_px"] = cols[top]
    cols["log_px_stderr"] = cols[f"{top}_stderr"]
    cols["gap"] = cols["log_px"] - cols["elbo"]
    for k in ks:
        cols[f"ess_{k}"] = _group_ess(lw, k).cpu().numpy()
    cols["ess"] = _group_ess(lw, lw.shape[0]).cpu().numpy()
    cols["khat"] = pareto_khat(lw)
    return pd.DataFrame(cols)


def summarize(points: pd.DataFrame, ks: Sequence[int], data_dim: int | None = None) -> pd.DataFrame:
    """One row per k from a per-datapoint table (see :func:`estimate`).

    Columns: ``k``, ``bound`` (ELBO, IWAE_k; the largest k is the log p(x) estimate), ``estimate``
    (mean over points, nats), ``stderr`` (Monte Carlo standard error of that mean),
    ``data_stderr`` (standard error from the finite set of points), ``nll`` (-estimate, nats),
    ``bits_per_dim``, ``gap`` (estimate - ELBO), ``ess`` (median per-point ESS of groups of k),
    ``khat`` (median per-point k-hat of all K draws) and ``khat_gt_0.7`` (share of points above).
    k-hat is NaN where it was not computed (fewer than ``MIN_KHAT_DRAWS`` draws): those points
    are left out of the median and the share, and with none computed both are NaN, never 0.
    """
    ks = parse_ks(ks)
    n = len(points)
    elbo = points["elbo"].mean()
    rows = []
    for k in ks:
        name = "elbo" if k == 1 else f"iwae_{k}"
        est = points[name].mean()
        kh = points["khat"].to_numpy(dtype=float)
        kh = kh[~np.isnan(kh)]  # not computed: no evidence either way
        rows.append(
            {
                "k": k,
                "bound": "ELBO" if k == 1 else f"IWAE_{k}",
                "estimate": est,
                "stderr": float(np.sqrt((points[f"{name}_stderr"] ** 2).sum())) / n,
                "data_stderr": float(points[name].std(ddof=1) / math.sqrt(n)) if n > 1 else np.nan,
                "nll": -est,
                "bits_per_dim": -est / (data_dim * math.log(2)) if data_dim else np.nan,
                "gap": est - elbo,
                "ess": float(points[f"ess_{k}"].median()),
                "khat": float(np.median(kh)) if k == ks[-1] and len(kh) else np.nan,
                "khat_gt_0.7": float((kh > 0.7).mean()) if k == ks[-1] and len(kh) else np.nan,
                "num_points": n,
            }
        )
    return pd.DataFrame(rows)


@torch.no_grad()
def evaluate(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *args: Any,
    ks: Sequence[int] = (1, 10, 100, 1000),
    num_particles: int | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    seed: int | None = None,
) -> Evaluation:
    """Evaluates the bounds of a model/guide pair on every row of ``x``.

    Data points are processed in batches; for each batch a pool of K = max(ks) (or
    ``num_particles``) weights per point is drawn by :func:`log_weights` and reduced at once, so
    memory stays bounded by one batch's pool.

    Arguments:
        model, guide: the pair's callables.
        x: data [N, D]; further positional ``args`` (e.g. labels [N]) are batched alongside.
        ks: the k of the IWAE bounds; 1 is the ELBO, the largest the log p(x) estimate.
        num_particles: the pool size K (default max(ks)); must be >= max(ks).
        batch_size: data points per pool (default: at most 256, and a [K, batch] pool of at most
            2**20 entries; the guide runs once per chunk of particles, so a smaller batch means
            larger chunks and fewer repeated encoder passes).
        chunk_size: particles per vectorized pass (see :func:`log_weights`).
        progress: show a tqdm progress bar over batches.
        seed: reseed torch before each batch with ``seed * 1_000_003 + start`` (its first row), so
            a point's draws depend on the seed and the batch size alone, not on the order or the
            process that evaluates the batch. Under torch.distributed the batches are shared
            round-robin across ranks and every rank returns the whole gathered result.

    Returns:
        :class:`Evaluation` with ``points`` (one row per data point) and ``summary`` (one row
        per k).
    """
    ks = parse_ks(ks)
    num = num_particles or ks[-1]
    if num < ks[-1]:
        raise ConfigError(f"num_particles={num} is smaller than the largest k={ks[-1]}")
    n = x.shape[0]
    if n == 0:
        raise ConfigError("nothing to evaluate: the data have no rows")
    if batch_size is None:
        batch_size = max(1, min(n, 2**20 // num, 256))
    nesting = _max_plate_nesting(model, guide, (x[:2], *(a[:2] for a in args)), {})
    tables = []
    starts = distributed.shard(range(0, n, batch_size))
    if progress and distributed.is_main():
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"evaluating K={num}", unit="batch", leave=False)
    for s in starts:
        if seed is not None:
            torch.manual_seed(seed * 1_000_003 + s)
        batch = (x[s : s + batch_size], *(a[s : s + batch_size] for a in args))
        lw = log_weights(
            model,
            guide,
            *batch,
            num_particles=num,
            chunk_size=chunk_size,
            max_plate_nesting=nesting,
        )
        tables.append((s, estimate(lw, ks)))
    points = pd.concat(distributed.gather_in_order(tables), ignore_index=True)
    points.index.name = "point"
    return Evaluation(points, summarize(points, ks, data_dim=int(x[0].numel())))
