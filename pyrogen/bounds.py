r"""Per-datapoint importance weights and the bounds built on them.

For a data point x and guide draws z_1..z_K ~ q_phi(. | x), the log-weights are

.. math:: w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x).

From one pool of K weights per point this module computes the ELBO (E[w]), the importance-weighted
bounds IWAE_k = E[log (1/k) sum_{j<=k} exp(w_j)] for several k (Burda et al., 2015), each from
disjoint groups of the pool so that each gets a Monte Carlo standard error, the estimate
log p^(x) = IWAE_K, the effective sample size and the Pareto k-hat of the weights
(Yao et al., 2018).

Pyro's ``Importance``, ``vectorized_importance_weights`` and ``psis_diagnostic`` sum the log-weights
over the batch and so estimate the joint log p(x_1..x_B); here every data point keeps its own
weights.

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
import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pyrogen import distributed
from pyrogen.errors import ConfigError, ContractError
from pyrogen.model import DATA_PLATE, latent_sites, observed_sites

__all__ = [
    "Evaluation",
    "estimate",
    "evaluate",
    "iwae",
    "log_weights",
    "parse_ks",
    "summarize",
]

PARTICLE_PLATE = "_pyrogen_particles"
#: fewer draws than this leave no tail to fit: k-hat is reported as NaN
MIN_KHAT_DRAWS = 20
#: elements of one [chunk, batch, D] tensor, the unit that bounds evaluation memory; 2**21 (8 MiB
#: of float32) keeps a chunk's tensors in cache: 1.3-1.8x the throughput of 2**24 on a 2-core CPU
CHUNK_ELEMENTS = 2**21


def _max_plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    nesting = 0
    for tr in (guide_tr, model_tr):
        for site in tr.nodes.values():
            if site["type"] == "sample":
                for f in site["cond_indep_stack"]:
                    if f.vectorized and f.dim is not None:
                        nesting = max(nesting, -f.dim)
    return nesting


def _in_particle_plate(fn: Callable, size: int, dim: int) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(PARTICLE_PLATE, size, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _site_log_prob(site: dict, nesting: int, who: str) -> torch.Tensor:
    """log_prob of one site summed to [particles, data] (raw: no subsample or annealing scale)."""
    data_frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_frames:
        kind = "observed" if site["is_observed"] else "latent"
        raise ContractError(
            f"{kind} site '{site['name']}' of the {who} is outside "
            f"pyro.plate('{DATA_PLATE}', ...): "
            "per-datapoint weights need every site inside the data plate"
        )
    lp = site["fn"].log_prob(site["value"])
    width = nesting + 1
    if lp.dim() > width:
        raise ContractError(
            f"site '{site['name']}' of the {who} has log_prob shape {list(lp.shape)} with dims "
            f"outside any plate; declare its event dims with .to_event(...)"
        )
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    data_pos = width + data_frames[0].dim
    others = [i for i in range(1, width) if i != data_pos]
    if others:
        lp = lp.sum(others)
    return lp


def log_density(
    trace: poutine.Trace, nesting: int, who: str, observed: bool = True
) -> torch.Tensor:
    """Sum of a trace's site log-densities per particle and data point: [particles, data]."""
    names = latent_sites(trace) + (observed_sites(trace) if observed else [])
    terms = [_site_log_prob(trace.nodes[name], nesting, who) for name in names]
    if not terms:
        raise ContractError(f"the {who} has no sample site")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def trace_pair(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    size: int,
    nesting: int,
    subsample: poutine.Trace | None = None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """Traces the guide under a vectorized plate of ``size`` particles; replays the model on it."""
    dim = -(nesting + 1)
    vguide = _in_particle_plate(guide, size, dim)
    if subsample is not None:
        vguide = poutine.replay(vguide, trace=subsample)
    guide_tr = poutine.trace(vguide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(
        poutine.replay(_in_particle_plate(model, size, dim), trace=guide_tr)
    ).get_trace(*args, **kwargs)
    if not observed_sites(model_tr):
        raise ContractError("the model has no observed site: pass the data with obs=x")
    return guide_tr, model_tr


class _SiteRecorder(Messenger):
    """A lean ``poutine.trace`` and ``poutine.replay`` in one, for the inner loops.

    It keeps the sample messages of one run in order (the messages, not copies, and no Trace
    graph) and, like ``poutine.replay``, gives every unobserved site named in ``replay`` that
    message's value. Training steps and evaluation chunks run through it; the numbers are those
    of ``poutine.trace(poutine.replay(...))``, with less Python per site.
    """

    def __init__(self, replay: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.replay = replay or {}
        self.sites: list[dict] = []

    def _pyro_sample(self, msg: dict) -> None:
        source = self.replay.get(msg["name"])
        if source is not None and not msg["is_observed"]:
            msg["value"] = source["value"]
            msg["infer"] = source["infer"]
            msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if not msg["infer"].get("_do_not_trace"):
            self.sites.append(msg)

    def latent(self) -> list[dict]:
        """Unobserved sample sites, plates' subsample sites excluded (as ``latent_sites``)."""
        return [
            m for m in self.sites if not m["is_observed"] and type(m["fn"]).__name__ != "_Subsample"
        ]

    def observed(self) -> list[dict]:
        return [m for m in self.sites if m["is_observed"]]

    def unobserved(self) -> dict[str, dict]:
        """Every unobserved message by name, subsample sites included: what to replay."""
        return {m["name"]: m for m in self.sites if not m["is_observed"]}


def _sum_log_probs(sites: list[dict], nesting: int, who: str) -> torch.Tensor:
    if not sites:
        raise ContractError(f"the {who} has no sample site")
    total = _site_log_prob(sites[0], nesting, who)
    for site in sites[1:]:
        total = total + _site_log_prob(site, nesting, who)
    return total


def _chunk_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    size: int,
    nesting: int,
    subsample: dict[str, dict] | None,
) -> tuple[torch.Tensor, _SiteRecorder]:
    # trace_pair and log_density with a _SiteRecorder: the same sites, values and sums
    dim = -(nesting + 1)
    guide_run = _SiteRecorder(subsample)
    with guide_run, pyro.plate(PARTICLE_PLATE, size, dim=dim):
        guide(*args, **kwargs)
    model_run = _SiteRecorder(guide_run.unobserved())
    with model_run, pyro.plate(PARTICLE_PLATE, size, dim=dim):
        model(*args, **kwargs)
    observed = model_run.observed()
    if not observed:
        raise ContractError("the model has no observed site: pass the data with obs=x")
    log_p = _sum_log_probs(model_run.latent() + observed, nesting, "model")
    latent = guide_run.latent()
    lw = log_p - _sum_log_probs(latent, nesting, "guide") if latent else log_p
    return lw.expand(size, lw.shape[-1]), guide_run


def log_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int,
    chunk_size: int | None = None,
    grad: bool = False,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Per-datapoint log importance weights w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n).

    The guide is traced under a vectorized plate of particles and the model replayed on its draws;
    each site's log-probability is summed over every dimension but the particle and the
    ``"data"`` plate dimensions. Subsampling and annealing scales left by training are ignored:
    these are the raw densities. Particles run in chunks, so memory stays bounded for any K.

    Arguments:
        model: the model callable, e.g. ``vae.model``.
        guide: the guide callable, e.g. ``vae.guide``.
        *args: arguments of both, usually the batch ``x`` (and labels ``y``).
        num_particles: K, the number of guide draws per data point.
        chunk_size: particles per vectorized pass; by default as many as keep one
            [chunk, N, D] tensor under ``CHUNK_ELEMENTS`` = 2**21 elements.
        grad: build the autograd graph (training objectives); off for evaluation.
        max_plate_nesting: the model's plate depth; guessed from one trace when omitted.
        **kwargs: keyword arguments of both.

    Returns:
        Tensor [K, N].

    Raises:
        ContractError: when a site lies outside the data plate or the model observes nothing.

    Example:
        >>> import sys; sys.path.insert(0, "models")
        >>> from ppca import PPCA
        >>> m = PPCA(4, 2)
        >>> log_weights(m.model, m.guide, torch.zeros(3, 4), num_particles=10).shape
        torch.Size([10, 3])
    """
    if num_particles < 1:
        raise ConfigError(f"num_particles must be a positive integer, got {num_particles}")
    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    if chunk_size is None:
        numel = max((a.numel() for a in args if isinstance(a, torch.Tensor)), default=1)
        chunk_size = max(1, CHUNK_ELEMENTS // max(numel, 1))
    chunk_size = min(chunk_size, num_particles)
    chunks: list[torch.Tensor] = []
    subsample: dict[str, dict] | None = None
    with torch.set_grad_enabled(grad), pyro.validation_enabled(False):
        done = 0
        while done < num_particles:
            size = min(chunk_size, num_particles - done)
            lw, guide_run = _chunk_weights(
                model, guide, args, kwargs, size, max_plate_nesting, subsample
            )
            if subsample is None:
                subsample = _subsample_sites(guide_run)
            chunks.append(lw)
            done += size
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)


def _subsample_sites(run: _SiteRecorder) -> dict[str, dict]:
    """The plates' subsample indices of a run, to replay so every chunk sees the same points."""
    return {
        m["name"]: m
        for m in run.sites
        if type(m["fn"]).__name__ == "_Subsample" and m["name"] != PARTICLE_PLATE
    }


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
    """
    ks = parse_ks(ks)
    n = len(points)
    elbo = points["elbo"].mean()
    rows = []
    for k in ks:
        name = "elbo" if k == 1 else f"iwae_{k}"
        est = points[name].mean()
        kh = points["khat"].to_numpy()
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
                "khat": float(np.median(kh)) if k == ks[-1] else np.nan,
                "khat_gt_0.7": float((kh > 0.7).mean()) if k == ks[-1] else np.nan,
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
