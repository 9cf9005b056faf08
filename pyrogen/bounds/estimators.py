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
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from pyrogen import distributed
from pyrogen.bounds import psis
from pyrogen.bounds.streaming import PoolReducer, khat_buffer_size
from pyrogen.bounds.weights import iter_log_weights, layout_of
from pyrogen.errors import ConfigError
from pyrogen.trace import Layout, data_tensor, split_pair, take_rows

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
MIN_KHAT_DRAWS = psis.MIN_KHAT_DRAWS


def iwae(lw: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""IWAE_k per data point from disjoint groups of k weights of the pool ``lw`` [K, N].

    With G = K // k groups, each group gives log (1/k) sum_j exp(w_j); the estimate is the mean over
    groups and its standard error the groups' standard deviation over sqrt(G). With a single group
    (K < 2k) the standard error is the delta-method one of log of a mean,
    sqrt((k sum_j w~_j^2 - 1) / k), with w~ the self-normalized weights of the group's k draws.

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
        w = torch.softmax(lw[:k], dim=0)  # the group's own k draws (k <= K < 2k)
        se = ((k * (w**2).sum(0) - 1).clamp_min(0) / k).sqrt()
    return est, se


def _group_ess(lw: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over disjoint groups of k of the effective sample size 1 / sum w~^2, per point."""
    num, n = lw.shape
    groups = num // k
    w = torch.softmax(lw[: groups * k].double().reshape(groups, k, n), dim=1)
    return (1.0 / (w**2).sum(1)).mean(0)


def pareto_khat(lw: torch.Tensor, num_draws: int | None = None) -> np.ndarray:
    """Pareto k-hat of each point's K weights (PSIS, ArviZ): < 0.5 good, > 0.7 unreliable.

    Identical weights have no tail: ``-inf`` (a perfectly reliable estimate). With fewer than
    ``MIN_KHAT_DRAWS`` draws: NaN. See :mod:`pyrogen.bounds.psis` (ArviZ 0.2x and 1.x alike).

    Arguments:
        lw: log-weights [rows, N]: the whole pool, or its largest ``rows`` >=
            :func:`~pyrogen.bounds.streaming.khat_buffer_size` (num_draws) per point.
        num_draws: the pool's size K when ``lw`` holds only its largest weights.
    """
    return psis.pareto_khat(lw.detach().double().cpu().numpy(), num_draws=num_draws)


class Evaluation(NamedTuple):
    """Bounds of one model on one data set: a per-datapoint table and a one-row-per-k summary.

    In a notebook it shows as the bounds table (one row per k).
    """

    points: pd.DataFrame
    summary: pd.DataFrame

    def _repr_html_(self) -> str:
        """The bounds table as HTML (Jupyter's rich display)."""
        s = self.summary
        cols = [c for c in _TABLE_COLUMNS if c in s.columns]
        n = (
            int(s["num_points"].iloc[0])
            if "num_points" in s.columns and len(s)
            else len(self.points)
        )
        k = int(s["k"].max()) if "k" in s.columns and len(s) else 0
        table = s[cols].to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)
        return (
            f"<p>bounds on {n} points (K={k} draws per point; nats, higher is better; "
            "k-hat above 0.7: unreliable)</p>" + table
        )


#: the columns of the bounds table, as ``pyrogen evaluate`` prints it
_TABLE_COLUMNS = (
    "bound",
    "estimate",
    "stderr",
    "nll",
    "bits_per_dim",
    "gap",
    "ess",
    "khat",
    "khat_gt_0.7",
)


def parse_ks(ks: str | Iterable[int]) -> list[int]:
    """Parses "1,10,100" (or an iterable) into a sorted list of distinct positive integers."""
    if isinstance(ks, str):
        parts = [p.strip() for p in ks.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--ks must be comma-separated integers, got '{ks}'") from None
    else:
        if not isinstance(ks, Iterable):  # ks = 5 in a TOML file: which list was meant?
            raise ConfigError(f"ks must be a list of integers such as '1,10,100', got {ks!r}")
        values = list(ks)
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"ks must be integers such as '1,10,100' or [1, 10, 100], got {ks!r}")
        values = [int(v) for v in values]
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
    from pyrogen.bounds.streaming import PoolReducer

    reducer = PoolReducer(parse_ks(ks), lw.shape[0], lw.shape[1], lw.device)
    reducer.update(lw)
    return reducer.table()


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


def _available_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _check_buffer_fits(num_draws: int, batch: int) -> None:
    """Refuses up front a K whose k-hat buffer (x3 while it is merged) cannot fit in memory."""
    need = 3 * khat_buffer_size(num_draws) * batch * 8
    free = _available_bytes()
    if free is not None and need > free // 2:
        raise ConfigError(
            f"K={num_draws} needs {need / 2**30:.1f} GiB for the largest weights of {batch} "
            f"point(s) (Pareto k-hat), more than half of the {free / 2**30:.1f} GiB available; "
            "use a smaller K or --batch-size"
        )


@torch.no_grad()
def evaluate(
    model: Any,
    *args: Any,
    ks: Sequence[int] = (1, 10, 100, 1000),
    num_particles: int | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    seed: int | None = None,
    data_plate: str | None = None,
    layout: Layout | None = None,
    **kwargs: Any,
) -> Evaluation:
    """Evaluates the bounds of a model/guide pair on every row of the data.

    Data points are processed in batches; for each batch a pool of K = max(ks) (or
    ``num_particles``) weights per point is drawn chunk by chunk and reduced as it arrives
    (:class:`~pyrogen.bounds.streaming.PoolReducer`), so memory is one chunk of particles plus
    the largest weights that k-hat needs (:func:`~pyrogen.bounds.streaming.khat_buffer_size`),
    not the pool: it does not grow with K beyond that buffer.

    Arguments:
        model: the model callable followed by the guide (``evaluate(model, guide, x)``), or a
            pair (``evaluate(vae, x)``: an object with ``model`` and ``guide`` methods or a
            ``(model, guide)`` tuple).
        *args: the data x [N, D] and the pair's other arguments: tensors whose first dimension
            is N (labels [N]) are batched alongside, anything else passes unchanged.
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
        data_plate: the data plate's name, where two plates have the batch's size.
        layout: the pair's :class:`~pyrogen.trace.Layout`, where a check already probed it
            (:func:`pyrogen.check_model`'s ``SiteInfo.layout``); else probed on the first batch.
        **kwargs: keyword arguments of model and guide (batched like ``args``).

    Returns:
        :class:`Evaluation` with ``points`` (one row per data point) and ``summary`` (one row
        per k).
    """
    ks = parse_ks(ks)
    num = num_particles or ks[-1]
    if num < ks[-1]:
        raise ConfigError(f"num_particles={num} is smaller than the largest k={ks[-1]}")
    pair, args = split_pair(model, args)
    x = data_tensor(args, kwargs)
    if x is None or x.shape[0] == 0:
        raise ConfigError("nothing to evaluate: the data have no rows")
    n = x.shape[0]
    if batch_size is None:
        batch_size = max(1, min(n, 2**20 // num, 256))
    _check_buffer_fits(num, min(batch_size, n))
    if layout is None:
        first, first_kw = take_rows(args, kwargs, n, slice(0, batch_size))
        layout = layout_of(pair, first, first_kw, data_plate)
    tables = []
    starts = distributed.shard(range(0, n, batch_size))
    if progress and distributed.is_main():
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"evaluating K={num}", unit="batch", leave=False)
    for s in starts:
        if seed is not None:
            torch.manual_seed(seed * 1_000_003 + s)
        batch, batch_kw = take_rows(args, kwargs, n, slice(s, s + batch_size))
        reducer = PoolReducer(ks, num, min(batch_size, n - s), x.device)
        for lw in iter_log_weights(
            pair,
            *batch,
            num_particles=num,
            chunk_size=chunk_size,
            layout=layout,
            **batch_kw,
        ):
            reducer.update(lw)
        tables.append((s, reducer.table()))
    points = pd.concat(distributed.gather_in_order(tables), ignore_index=True)
    points.index.name = "point"
    return Evaluation(points, summarize(points, ks, data_dim=int(x[0].numel())))
