r"""The inference-gap decomposition: how much of log p(x) - ELBO is the encoder's fault.

For one data point, with q_phi the amortized guide and q* the best member of a variational family
for that point alone,

.. math::
    \log p(x) - \mathrm{ELBO}[q_\phi]
    = \underbrace{\log p(x) - \mathrm{ELBO}[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathrm{ELBO}[q^*] - \mathrm{ELBO}[q_\phi]}_{\text{amortization gap}}.

The approximation gap says the family is too poor; the amortization gap says the encoder does not
find the family's best member (Cremer et al., 2018). q* has its own parameters per point and per
latent site: the guide's own Gaussian family where the site's distribution is a Normal (diagonal)
or a MultivariateNormal (full covariance) on the real line, otherwise a mean-field Gaussian in the
site's unconstrained space. It starts at the amortized guide and is fitted for all points at
once by Adam on the reparametrized ELBO with the "sticking the landing" gradient (Roeder et al.,
2017), which is exactly zero when q* is the posterior. log p(x) is the best estimate available:
the largest on average of IWAE_K with q_phi, IS with q* as the proposal, and AIS when given.

References:
    | Inference Suboptimality in Variational Autoencoders (Cremer et al., 2018)
    | https://arxiv.org/abs/1801.03558
    | Sticking the Landing (Roeder et al., 2017) | https://arxiv.org/abs/1703.09194
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

from pyrogen.bounds.ais import AISResult, _Site, _Target, pair_log_densities
from pyrogen.bounds.estimators import iwae, pareto_khat
from pyrogen.bounds.weights import CHUNK_ELEMENTS, layout_of, log_weights
from pyrogen.errors import ConfigError
from pyrogen.trace import Layout, Pair, data_rows, data_tensor, split_pair, take_rows

__all__ = ["Gaps", "LocalGaussian", "inference_gaps"]


class LocalGaussian:
    """q*: a Gaussian per data point for one latent site, in the site's unconstrained space.

    ``full`` uses a lower-triangular scale over the event (the family of a MultivariateNormal
    guide); otherwise a diagonal one. Parameters have the site's shape without the chain dim.
    """

    def __init__(self, site: _Site, msg_fn: Any, draws: torch.Tensor) -> None:
        self.site = site
        fn = msg_fn
        base = fn.base_dist if isinstance(fn, dist.Independent) else fn
        self.full = isinstance(base, dist.MultivariateNormal) and site.identity
        shape = draws.shape[1:]
        if self.full:
            loc = base.loc.expand(draws.shape).mean(0)
            tril = base.scale_tril.expand(draws.shape + draws.shape[-1:]).mean(0)
            self.loc = loc.detach().clone()
            self.raw_diag = tril.diagonal(dim1=-2, dim2=-1).log().detach().clone()
            self.off = tril.tril(-1).detach().clone()
        else:
            if isinstance(base, dist.Normal) and site.identity:
                loc = base.loc.expand(draws.shape).mean(0)
                scale = base.scale.expand(draws.shape).mean(0)
            else:  # moments of the guide's draws in unconstrained space
                u = site.transform.inv(draws)
                loc, scale = u.mean(0), u.std(0).clamp_min(1e-3)
            self.loc = loc.detach().clone().reshape(shape)
            self.raw_diag = scale.log().detach().clone().reshape(shape)
            self.off = None

    def parameters(self) -> list[torch.Tensor]:
        return [p for p in (self.loc, self.raw_diag, self.off) if p is not None]

    def tril(self) -> torch.Tensor:
        return self.off.tril(-1) + torch.diag_embed(self.raw_diag.exp())

    def sample(self, size: int) -> torch.Tensor:
        """u = loc + scale eps, reparametrized: [size, ...]."""
        eps = torch.randn((size, *self.loc.shape), dtype=self.loc.dtype, device=self.loc.device)
        if self.full:
            return self.loc + (self.tril() @ eps.unsqueeze(-1)).squeeze(-1)
        return self.loc + self.raw_diag.exp() * eps

    def log_prob(self, u: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """log q*(u) summed to [size, N]; ``detach`` stops the gradient to the parameters."""
        loc = self.loc.detach() if detach else self.loc
        if self.full:
            tril = self.tril().detach() if detach else self.tril()
            lp = dist.MultivariateNormal(loc, scale_tril=tril).log_prob(u)
            return self.site.per_point(lp, event=False)
        scale = (self.raw_diag.detach() if detach else self.raw_diag).exp()
        return self.site.per_point(dist.Normal(loc, scale).log_prob(u))


def _local_weights(
    target: _Target,
    q: list[LocalGaussian],
    size: int,
    detach: bool = False,
) -> torch.Tensor:
    """log p(x, T(u)) + log det - log q*(u) for ``size`` draws u ~ q*, per point: [size, N]."""
    u = {g.site.name: g.sample(size) for g in q}
    z = {g.site.name: g.site.transform(u[g.site.name]) for g in q}
    log_p, _ = pair_log_densities(
        target.pair, target.layout, target.args, target.kwargs, z, size, with_guide=False
    )
    total = log_p
    for g in q:
        total = total + g.site.log_det(u[g.site.name], z[g.site.name])
        total = total - g.log_prob(u[g.site.name], detach=detach)
    return total


def fit_local(
    pair: Pair,
    layout: Layout,
    batch: tuple,
    batch_kw: dict,
    steps: int,
    num_particles: int,
    lr: float,
) -> tuple[_Target, list[LocalGaussian]]:
    """Fits q* for one chunk of points: Adam on the sum over points of their ELBOs, cosine lr."""
    init_draws = 32
    target = _Target(pair, layout, batch, batch_kw, init_draws)
    fns = {m["name"]: m["fn"] for m in target.latent_msgs}
    q = [LocalGaussian(s, fns[s.name], target.first_draw[s.name]) for s in target.sites]
    target.size = num_particles
    params = [p.requires_grad_(True) for g in q for p in g.parameters()]
    if steps > 0:
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            with torch.enable_grad():
                loss = -_local_weights(target, q, num_particles, detach=True).mean(0).sum()
                grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = torch.nan_to_num(g)
            opt.step()
            sched.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return target, q


class Gaps(NamedTuple):
    """Per-point table and one-row summary of the decomposition.

    ``points`` columns: ``elbo`` (ELBO[q_phi]), ``elbo_star`` (ELBO[q*]), ``iwae`` (IWAE_K with
    q_phi), ``is_star`` (IS with q* as proposal, K draws), ``ais`` (when given), each with
    ``_stderr``; ``khat`` and ``khat_star`` (Pareto k-hat of the K weights of q_phi and of q*);
    ``log_px`` (the best estimate, named in the summary's ``best``), ``approximation_gap``,
    ``amortization_gap`` and their ``_stderr``, and ``gap`` (= log_px - elbo, their sum).
    """

    points: pd.DataFrame
    summary: pd.DataFrame


def _khat_share(khat: np.ndarray) -> float:
    done = khat[~np.isnan(khat)]
    return float((done > 0.7).mean()) if len(done) else math.nan


@torch.no_grad()
def inference_gaps(
    model: Any,
    *args: Any,
    steps: int = 300,
    num_particles: int = 8,
    eval_particles: int = 1000,
    lr: float = 0.01,
    ais: AISResult | None = None,
    batch_size: int | None = None,
    seed: int | None = 0,
    **kwargs: Any,
) -> Gaps:
    r"""Approximation and amortization gaps per data point (Cremer et al., 2018).

    .. math::
        \log \hat p(x) - \mathrm{ELBO}[q_\phi] = (\log \hat p(x) - \mathrm{ELBO}[q^*])
        + (\mathrm{ELBO}[q^*] - \mathrm{ELBO}[q_\phi])

    Arguments:
        model: the model callable followed by the guide, or a pair (an object with ``model``
            and ``guide`` methods, a ``(model, guide)`` tuple).
        *args: the data x [N, D] and the pair's other arguments (tensors whose first dimension
            is N are batched alongside, anything else passes unchanged); ``**kwargs`` likewise.
        steps: Adam steps fitting q* (0 keeps q* at its start, the amortized guide's parameters).
        num_particles: draws of q* per point per step.
        eval_particles: K, draws per point for ELBO[q_phi], ELBO[q*], IWAE_K and IS with q*.
        lr: Adam's initial learning rate (cosine decay to 0 over ``steps``).
        ais: an :class:`~pyrogen.bounds.ais.AISResult` on the same points, a candidate for the
            best log p(x).
        batch_size: points per chunk (default: a [num_particles, points, D] tensor under the
            memory budget).
        seed: reseeds torch before each chunk.

    Returns:
        :class:`Gaps`.

    References:
        | Inference Suboptimality in Variational Autoencoders (Cremer et al., 2018)
        | https://arxiv.org/abs/1801.03558
    """
    started = time.perf_counter()
    pair, args = split_pair(model, args)
    n = data_rows(args, kwargs)
    if n == 0:
        raise ConfigError("nothing to evaluate: the data have no rows")
    x = data_tensor(args, kwargs)
    if eval_particles < 2 or steps < 0 or num_particles < 1:
        raise ConfigError("eval_particles >= 2, steps >= 0 and num_particles >= 1 are needed")
    d = int(x[0].numel())
    points = batch_size or max(1, min(n, CHUNK_ELEMENTS // (8 * max(num_particles, 32) * d)))
    layout = layout_of(pair, *take_rows(args, kwargs, n, slice(0, points)))
    cols: dict[str, list] = {}

    def put(name: str, v: Any) -> None:
        cols.setdefault(name, []).append(np.asarray(v.cpu() if torch.is_tensor(v) else v))

    with pyro.validation_enabled(False), pair.scope.active():
        for s in range(0, n, points):
            batch, batch_kw = take_rows(args, kwargs, n, slice(s, s + points))
            if seed is not None:
                torch.manual_seed(seed * 1_000_003 + s)
            lw = log_weights(pair, *batch, num_particles=eval_particles, layout=layout, **batch_kw)
            target, q = fit_local(pair, layout, batch, batch_kw, steps, num_particles, lr)
            chunk = max(1, CHUNK_ELEMENTS // (min(points, n - s) * d))
            pieces, done = [], 0
            while done < eval_particles:
                size = min(chunk, eval_particles - done)
                target.size = size
                pieces.append(_local_weights(target, q, size))
                done += size
            lw_star = torch.cat(pieces, 0)
            for name, w in (("", lw), ("_star", lw_star)):
                e, se = iwae(w, 1)
                put(f"elbo{name}", e)
                put(f"elbo{name}_stderr", se)
                e, se = iwae(w, w.shape[0])
                put("iwae" if not name else "is_star", e)
                put("iwae_stderr" if not name else "is_star_stderr", se)
                put(f"khat{name}", pareto_khat(w))
    table = pd.DataFrame({k: np.concatenate(v) for k, v in cols.items()})
    candidates = ["iwae", "is_star"]
    if ais is not None:
        if len(ais.log_px) != n:
            raise ConfigError(f"the AIS result has {len(ais.log_px)} points, the data {n}")
        table["ais"] = ais.log_px.double().cpu().numpy()
        table["ais_stderr"] = ais.stderr.double().cpu().numpy()
        candidates.append("ais")
    best = max(candidates, key=lambda c: table[c].mean())
    table["log_px"] = table[best]
    table["log_px_stderr"] = table[f"{best}_stderr"]
    table["approximation_gap"] = table["log_px"] - table["elbo_star"]
    table["approximation_gap_stderr"] = np.hypot(table["log_px_stderr"], table["elbo_star_stderr"])
    table["amortization_gap"] = table["elbo_star"] - table["elbo"]
    table["amortization_gap_stderr"] = np.hypot(table["elbo_star_stderr"], table["elbo_stderr"])
    table["gap"] = table["log_px"] - table["elbo"]
    table.index.name = "point"
    return Gaps(table, summarize_gaps(table, best, steps, eval_particles, started))


def summarize_gaps(
    table: pd.DataFrame, best: str, steps: int, eval_particles: int, started: float
) -> pd.DataFrame:
    """One row: means over points, Monte Carlo (``_stderr``) and test-set (``_data_stderr``)
    standard errors, the k-hat shares of q_phi and q*, and the settings."""
    n = len(table)
    row: dict[str, Any] = {"best": best, "num_points": n, "steps": steps, "K": eval_particles}
    for c in ("elbo", "elbo_star", "iwae", "is_star", "ais", "log_px") + (
        "approximation_gap",
        "amortization_gap",
        "gap",
    ):
        if c not in table:
            continue
        row[c] = float(table[c].mean())
        if f"{c}_stderr" in table:
            row[f"{c}_stderr"] = float(np.sqrt((table[f"{c}_stderr"] ** 2).sum())) / n
        row[f"{c}_data_stderr"] = float(table[c].std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    row["khat_gt_0.7"] = _khat_share(table["khat"].to_numpy())
    row["khat_star_gt_0.7"] = _khat_share(table["khat_star"].to_numpy())
    row["seconds"] = time.perf_counter() - started
    return pd.DataFrame([row])
