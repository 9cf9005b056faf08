r"""The bounds of a pool of log-weights, reduced chunk by chunk so memory does not grow with K.

A pool of K weights per point w_1..w_K arrives in chunks of particles [c, N] (in draw order).
Every estimator of :mod:`pyrogen.bounds.estimators` is a function of running sums:

- IWAE_k from the G = K // k disjoint groups of consecutive draws: for each group the log-sum-exp
  of w and of 2w (a streaming log-sum-exp carries the group that a chunk leaves unfinished), then
  the group value g = logsumexp(w) - log k enters a running mean and sum of squares (Chan et al.'s
  pairwise update), so its standard error is std(g) / sqrt(G). With one group (G = 1) the standard
  error is the delta-method one, sqrt((k sum_j w~_j^2 - 1) / k), from the same two sums.
- The effective sample size of a group, 1 / sum_j w~_j^2 = exp(2 logsumexp(w) - logsumexp(2w)).
- The Pareto k-hat of PSIS fits the M ~ 3 sqrt(K) largest weights above the (M+1)-th as cutoff
  (Vehtari et al., 2024), so a buffer of the largest weights of each point is enough:
  :func:`khat_buffer_size` rows of it give the same k-hat as the whole pool.

So the peak memory of an evaluation is one chunk of particles plus that buffer, for any K.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Pareto Smoothed Importance Sampling (Vehtari et al., 2024) | https://arxiv.org/abs/1507.02646
    | Updating Formulae and a Pairwise Algorithm for Computing Sample Variances (Chan, Golub &
    | LeVeque, 1979)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from pyrogen.bounds.psis import pareto_khat, tail_length

__all__ = ["PoolReducer", "khat_buffer_size"]


def khat_buffer_size(num_draws: int) -> int:
    """Rows of largest weights that determine the k-hat of a pool of ``num_draws``.

    PSIS fits the M = :func:`~pyrogen.bounds.psis.tail_length` (K) largest draws above the
    (M+1)-th as cutoff; :func:`~pyrogen.bounds.psis.pareto_khat` given the B = 6 (M + 1) largest
    and K fits the same tail (B leaves ArviZ room to choose M from B draws). Up to K = 225 the
    whole pool is kept (at most 225 rows).
    """
    if num_draws <= 225:
        return num_draws
    return min(num_draws, 6 * (tail_length(num_draws) + 1))


class _Welford:
    """Running count, mean and sum of squared deviations per point (float64)."""

    def __init__(self, num_points: int, device: torch.device) -> None:
        self.count = 0
        self.mean = torch.zeros(num_points, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(num_points, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        m = values.shape[0]
        if m == 0:
            return
        mean_b = values.mean(0)
        m2_b = ((values - mean_b) ** 2).sum(0)
        total = self.count + m
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (m / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * m / total)
        self.count = total

    def stderr(self) -> torch.Tensor:
        return (self.m2 / (self.count - 1)).sqrt() / math.sqrt(self.count)


def _segment_logsumexp(values: torch.Tensor, ids: torch.Tensor, groups: int) -> torch.Tensor:
    """log-sum-exp over the rows of ``values`` [R, N] that share a group id (``ids`` [R])."""
    idx = ids[:, None].expand_as(values)
    top = torch.full((groups, values.shape[1]), -math.inf, dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(0, idx, values, reduce="amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros_like(top).index_add_(0, ids, torch.exp(values - top[ids]))
    return total.log() + top


class _GroupStream:
    """IWAE_k and the ESS of disjoint groups of k consecutive draws of a pool of K."""

    def __init__(self, k: int, num_draws: int, num_points: int, device: torch.device) -> None:
        self.k = k
        self.groups = num_draws // k
        self.used = self.groups * k  # draws past the last full group are not used
        self.seen = 0
        self.carry_lse = torch.full((num_points,), -math.inf, dtype=torch.float64, device=device)
        self.carry_lse2 = self.carry_lse.clone()
        self.values = _Welford(num_points, device)
        self.ess_sum = torch.zeros(num_points, dtype=torch.float64, device=device)
        self.last_lse = self.last_lse2 = self.carry_lse  # the final group's sums (for G = 1)

    def update(self, lw: torch.Tensor) -> None:
        rows = min(lw.shape[0], max(0, self.used - self.seen))
        if rows == 0:
            self.seen += lw.shape[0]
            return
        lw = lw[:rows]
        first = self.seen // self.k
        ids = (torch.arange(self.seen, self.seen + rows, device=lw.device) // self.k) - first
        # the unfinished group of the previous chunk enters as one row holding its sums
        ids = torch.cat([ids.new_zeros(1), ids])
        n_ids = int(ids[-1]) + 1
        lse = _segment_logsumexp(torch.cat([self.carry_lse[None], lw]), ids, n_ids)
        lse2 = _segment_logsumexp(torch.cat([self.carry_lse2[None], 2 * lw]), ids, n_ids)
        self.seen += rows
        complete = n_ids if self.seen % self.k == 0 else n_ids - 1
        if complete:
            done_lse, done_lse2 = lse[:complete], lse2[:complete]
            self.values.update(done_lse - math.log(self.k))
            self.ess_sum += torch.exp(2 * done_lse - done_lse2).sum(0)
            self.last_lse, self.last_lse2 = done_lse[-1], done_lse2[-1]
        if complete < n_ids:
            self.carry_lse, self.carry_lse2 = lse[-1], lse2[-1]
        else:
            self.carry_lse = torch.full_like(self.carry_lse, -math.inf)
            self.carry_lse2 = self.carry_lse.clone()

    def estimate(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.groups > 1:
            return self.values.mean, self.values.stderr()
        sum_w2 = torch.exp(self.last_lse2 - 2 * self.last_lse)
        return self.values.mean, ((self.k * sum_w2 - 1).clamp_min(0) / self.k).sqrt()

    def ess(self) -> torch.Tensor:
        return self.ess_sum / self.groups


class PoolReducer:
    """Reduces a pool of K log-weights per point, fed in chunks [c, N], to the per-point table.

    ``update`` takes the chunks in draw order (their sizes may differ); after all K rows,
    ``table()`` gives the same columns and, up to rounding, the same values as
    :func:`pyrogen.bounds.estimate` on the whole pool. Memory: a few running sums per (k, point)
    and the k-hat buffer of :func:`khat_buffer_size` rows.
    """

    def __init__(
        self, ks: Sequence[int], num_draws: int, num_points: int, device: torch.device | str = "cpu"
    ) -> None:
        self.ks = sorted(set(ks) | {1})
        self.asked = sorted(set(ks))
        if self.ks[-1] > num_draws:
            raise ValueError(f"the largest k={self.ks[-1]} exceeds the pool of {num_draws} draws")
        self.num_draws = num_draws
        device = torch.device(device)
        self.streams = {k: _GroupStream(k, num_draws, num_points, device) for k in self.ks}
        self.all_draws = _GroupStream(num_draws, num_draws, num_points, device)
        self.buffer_rows = khat_buffer_size(num_draws)
        self.top = torch.empty(0, num_points, dtype=torch.float64, device=device)
        self.seen = 0

    def update(self, lw: torch.Tensor) -> None:
        """Adds the next chunk of log-weights [c, N]."""
        lw = lw.detach().double()
        if self.seen + lw.shape[0] > self.num_draws:
            raise ValueError(f"more than the pool's {self.num_draws} draws were fed")
        self.seen += lw.shape[0]
        for stream in self.streams.values():
            stream.update(lw)
        self.all_draws.update(lw)
        pool = torch.cat([self.top, lw])
        if pool.shape[0] > self.buffer_rows:
            pool = pool.topk(self.buffer_rows, dim=0).values
        self.top = pool

    def table(self) -> pd.DataFrame:
        """The per-point table of :func:`pyrogen.bounds.estimate` (columns in the same order)."""
        if self.seen != self.num_draws:
            raise ValueError(f"{self.seen} of the pool's {self.num_draws} draws were fed")
        cols: dict[str, np.ndarray] = {}
        for k in self.asked if 1 in self.asked else [*self.asked, 1]:
            est, se = self.streams[k].estimate()
            name = "elbo" if k == 1 else f"iwae_{k}"
            cols[name] = est.cpu().numpy()
            cols[f"{name}_stderr"] = se.cpu().numpy()
        top = "elbo" if self.asked[-1] == 1 else f"iwae_{self.asked[-1]}"
        cols["log_px"] = cols[top]
        cols["log_px_stderr"] = cols[f"{top}_stderr"]
        cols["gap"] = cols["log_px"] - cols["elbo"]
        for k in self.asked:
            cols[f"ess_{k}"] = self.streams[k].ess().cpu().numpy()
        cols["ess"] = self.all_draws.ess().cpu().numpy()
        cols["khat"] = pareto_khat(self.top.cpu().numpy(), num_draws=self.num_draws)
        return pd.DataFrame(cols)
