r"""Annealed importance sampling (AIS) of log p(x), per data point, from the amortized guide.

AIS moves each chain through a sequence of unnormalized densities that bridge the guide and the
posterior,

.. math::
    f_t(z) = q_\phi(z \mid x)^{1 - \beta_t}\, p_\theta(x, z)^{\beta_t},
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

starting from z_0 ~ q(z | x) and applying at step t a Markov transition that leaves f_t invariant
(here Hamiltonian Monte Carlo). With h(z) = log p(x, z) - log q(z | x), each chain's log-weight

.. math:: \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1})\, h(z_{t-1})

has E[w] = p(x), so log of the mean of C chains' weights is a stochastic lower bound on log p(x)
that tightens as T grows (Neal, 2001). Run backwards from an exact posterior draw, the same
sum estimates 1 / p(x), which gives an upper bound (:mod:`pyrogen.bounds.bdmc`).

HMC runs in the unconstrained space of every latent site of the data plate: a constrained latent
z = T(u) contributes log |det dT/du| to the target, which cancels in the weights. The mass matrix
is diagonal, taken from the guide's standard deviation where a site's support is the real line.
Each data point has its own leapfrog step size, adapted toward a target acceptance rate. With
``adapt="pilot"`` (the default) the step sizes come from a separate pilot run of a few chains and
are then fixed per step, so every transition of the estimating chains is a fixed f_t-invariant
kernel and the weights stay unbiased; ``adapt="online"`` adapts on the estimating chains
themselves (as the published reference code does), which is cheaper but makes each kernel depend
on the chains' own past, a small bias of unknown sign; ``adapt="none"`` keeps ``step_size``.

References:
    | Annealed Importance Sampling (Neal, 2001) | https://arxiv.org/abs/physics/9803008
    | On the Quantitative Analysis of Decoder-Based Generative Models (Wu et al., 2017)
    | https://arxiv.org/abs/1611.04273
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import pandas as pd
import pyro
import torch
from torch.distributions import biject_to, constraints

from pyrogen import distributed
from pyrogen.bounds.estimators import iwae
from pyrogen.bounds.weights import CHUNK_ELEMENTS, layout_of
from pyrogen.errors import ConfigError, ContractError
from pyrogen.trace import (
    Layout,
    Pair,
    data_rows,
    data_tensor,
    densities,
    draw,
    split_pair,
    take_rows,
)

__all__ = ["AISResult", "ais", "annealing_schedule", "hmc_transition", "pair_log_densities"]

#: the acceptance rate the step sizes are adapted toward (Neal 2011 suggests 0.65 for HMC)
TARGET_ACCEPTANCE = 0.65


def annealing_schedule(num_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    r"""The inverse temperatures beta_0 = 0 < ... < beta_T = 1, a float64 tensor [T + 1].

    ``"sigmoid"`` (Grosse et al., 2015) spaces the steps densely at both ends,
    beta_t proportional to sigmoid(delta (2t / T - 1)) rescaled to [0, 1]; ``"linear"`` evenly;
    ``"geometric"`` as 10^(-4 (1 - t / T)) rescaled to start at 0.

    Example:
        >>> annealing_schedule(4, "linear")
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps}")
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        b = t
    elif kind == "sigmoid":
        b = torch.sigmoid(delta * (2 * t - 1))
    elif kind == "geometric":
        b = 10.0 ** (-4.0 * (1 - t))
    else:
        raise ConfigError(f"unknown schedule '{kind}': use sigmoid, linear or geometric")
    b = (b - b[0]) / (b[-1] - b[0])
    return b


class AISResult(NamedTuple):
    """AIS estimates of log p(x), one per data point.

    Attributes:
        log_px: log of the mean of the chains' weights [N] (a stochastic lower bound; for a
            reverse run, the upper bound -log mean exp(-w)).
        stderr: delta-method standard error of ``log_px`` over the chains [N].
        acceptance: mean HMC acceptance rate over chains and steps [N].
        step_size: the leapfrog step size of the last transition [N].
        log_weights: the chains' log-weights [C, N].
        num_chains, num_steps, leapfrog_steps, seconds: the settings and the wall time.
    """

    log_px: torch.Tensor
    stderr: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    log_weights: torch.Tensor
    num_chains: int
    num_steps: int
    leapfrog_steps: int
    seconds: float

    def to_frame(self, prefix: str = "ais") -> pd.DataFrame:
        """One row per point: ``ais``, ``ais_stderr``, ``ais_acceptance``, ``ais_step_size``."""
        return pd.DataFrame(
            {
                prefix: self.log_px.double().cpu().numpy(),
                f"{prefix}_stderr": self.stderr.double().cpu().numpy(),
                f"{prefix}_acceptance": self.acceptance.double().cpu().numpy(),
                f"{prefix}_step_size": self.step_size.double().cpu().numpy(),
            }
        )

    def summary(self) -> dict[str, float]:
        """Means over points: the estimate, its Monte Carlo standard error and the settings."""
        n = len(self.log_px)
        return {
            "chains": self.num_chains,
            "steps": self.num_steps,
            "leapfrog_steps": self.leapfrog_steps,
            "estimate": float(self.log_px.double().mean()),
            "stderr": float(self.stderr.double().pow(2).sum().sqrt()) / n,
            "data_stderr": float(self.log_px.double().std()) / math.sqrt(n) if n > 1 else math.nan,
            "acceptance": float(self.acceptance.double().mean()),
            "seconds": self.seconds,
            "num_points": n,
        }


# -- running the pair on given latent values ------------------------------------------------------


def pair_log_densities(
    pair: Pair,
    layout: Layout,
    args: tuple,
    kwargs: dict,
    values: dict[str, torch.Tensor],
    size: int,
    with_guide: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(x, z) and log q(z | x), each [size, N], at given latent values z (a dict by site,
    the chain dim first); with ``with_guide=False`` only the model runs and log q is None.

    The AIS, BDMC and gap code runs the pair here, through :func:`pyrogen.trace.densities`.
    """
    d = densities(pair, layout, args, kwargs, size, values=values, with_guide=with_guide)
    return d.log_p, d.log_q


class _Site:
    """A latent site in unconstrained coordinates: its bijection, data dim and mass scale."""

    def __init__(self, msg: dict, data_plate: str, spread_from: dict | None = None) -> None:
        self.name = msg["name"]
        fn = msg["fn"]
        self.event_dim = fn.event_dim
        try:
            self.transform = biject_to(fn.support)
        except NotImplementedError:
            raise ContractError(
                f"guide site '{self.name}' draws from {type(fn).__name__}, whose support "
                f"{fn.support} has no bijection to the real line: AIS moves every latent site "
                "with HMC, so it needs continuous latent sites"
            ) from None
        base = fn.support
        while isinstance(base, constraints.independent):
            base = base.base_constraint
        self.identity = base is constraints.real
        frames = [f for f in msg["cond_indep_stack"] if f.name == data_plate]
        value = msg["value"]
        self.data_index = value.dim() - self.event_dim + frames[0].dim
        self.shape = tuple(value.shape)
        self.scale: torch.Tensor | float = 1.0
        if self.identity:
            try:  # the guide's spread sets a diagonal mass matrix (constant over chains)
                src = (spread_from or msg)["fn"]
                sd = src.stddev.detach().expand(value.shape).mean(0, keepdim=True)
                if torch.isfinite(sd).all() and (sd > 0).all():
                    self.scale = sd
            except (NotImplementedError, AttributeError, RuntimeError):
                pass

    def per_point(self, t: torch.Tensor, event: bool = True) -> torch.Tensor:
        """Sums a tensor of the site's shape (or batch shape, ``event=False``) to [C, N]."""
        if not event:
            t = t.reshape(t.shape + (1,) * self.event_dim)
        c, n = t.shape[0], t.shape[self.data_index]
        return t.movedim(self.data_index, 1).reshape(c, n, -1).sum(-1)

    def spread(self, v: torch.Tensor) -> torch.Tensor:
        """A [C or 1, N] tensor broadcast against the site's values."""
        rest = len(self.shape) - self.data_index - 1
        return v.reshape((v.shape[0],) + (1,) * (self.data_index - 1) + (v.shape[1],) + (1,) * rest)

    def log_det(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return u.new_zeros(u.shape[0], u.shape[self.data_index])
        ld = self.transform.log_abs_det_jacobian(u, z)
        extra = ld.dim() - (z.dim() - self.event_dim)  # event dims the transform left unsummed
        if extra > 0:
            ld = ld.sum(tuple(range(-extra, 0)))
        return self.per_point(ld, event=False)


class _State(NamedTuple):
    u: dict[str, torch.Tensor]
    log_p: torch.Tensor  # log p(x, z)   [C, N]
    log_q: torch.Tensor  # log q(z | x)  [C, N]
    log_det: torch.Tensor  # log |det dz/du|  [C, N]
    grad_q: dict[str, torch.Tensor]  # d(log q + log det)/du
    grad_p: dict[str, torch.Tensor]  # d(log p + log det)/du


class _Target:
    """The annealed densities of one chunk of points: evaluates log p, log q and their gradients
    in unconstrained space."""

    def __init__(self, pair: Pair, layout: Layout, args: tuple, kwargs: dict, size: int) -> None:
        self.pair, self.layout, self.args, self.kwargs, self.size = pair, layout, args, kwargs, size
        latent = draw(pair, layout, args, kwargs, size)
        if not latent:
            raise ContractError("the guide has no latent site: nothing to anneal")
        spread = {m["name"]: m for m in latent}
        if len(latent) > 1:
            # a later site's spread depends on earlier draws: take the mass matrix from a
            # separate draw, so no transition depends on the chains' own starting points
            spread = {m["name"]: m for m in draw(pair, layout, args, kwargs, size)}
        self.sites = [_Site(m, layout.data_plate, spread.get(m["name"])) for m in latent]
        self.latent_msgs = latent
        self.first_draw = {m["name"]: m["value"].detach() for m in latent}
        # a single-site guide depends on x alone: keep its distribution, skip the encoder later
        self.cached_fn = latent[0] if len(latent) == 1 else None

    def constrained(self, u: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {s.name: s.transform(u[s.name]) for s in self.sites}

    def unconstrained(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {s.name: s.transform.inv(z[s.name]) for s in self.sites}

    def _log_q_cached(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        msg = self.cached_fn
        lp = msg["fn"].log_prob(z[msg["name"]])
        s = self.sites[0]
        return s.per_point(lp, event=False).expand(self.size, -1)

    def state(self, u: dict[str, torch.Tensor]) -> _State:
        with torch.enable_grad():
            leaves = {n: v.detach().requires_grad_(True) for n, v in u.items()}
            z = self.constrained(leaves)
            log_det = sum(s.log_det(leaves[s.name], z[s.name]) for s in self.sites)
            log_p, log_q = pair_log_densities(
                self.pair,
                self.layout,
                self.args,
                self.kwargs,
                z,
                self.size,
                with_guide=self.cached_fn is None,
            )
            if log_q is None:
                log_q = self._log_q_cached(z)
            names = list(leaves)
            inputs = [leaves[n] for n in names]
            gq = torch.autograd.grad(
                (log_q + log_det).sum(), inputs, retain_graph=True, allow_unused=True
            )
            gp = torch.autograd.grad((log_p + log_det).sum(), inputs, allow_unused=True)
        zeros = [torch.zeros_like(v) for v in inputs]
        return _State(
            {n: v.detach() for n, v in leaves.items()},
            log_p.detach(),
            log_q.detach(),
            log_det.detach() if torch.is_tensor(log_det) else torch.zeros_like(log_p),
            {n: (g if g is not None else o) for n, g, o in zip(names, gq, zeros)},
            {n: (g if g is not None else o) for n, g, o in zip(names, gp, zeros)},
        )


# -- HMC transitions ------------------------------------------------------------------------------


def _log_f(state: _State, beta: float) -> torch.Tensor:
    """log f_beta in unconstrained space: (1 - beta) log q + beta log p + log det, [C, N]."""
    return (1 - beta) * state.log_q + beta * state.log_p + state.log_det


def _grad(state: _State, beta: float) -> dict[str, torch.Tensor]:
    return {n: (1 - beta) * state.grad_q[n] + beta * state.grad_p[n] for n in state.u}


def _select(target: _Target, accept: torch.Tensor, new: _State, old: _State) -> _State:
    """Per chain and point, the proposal where accepted, else the current state."""

    def pick(a: dict, b: dict) -> dict:
        return {s.name: torch.where(s.spread(accept), a[s.name], b[s.name]) for s in target.sites}

    return _State(
        pick(new.u, old.u),
        torch.where(accept, new.log_p, old.log_p),
        torch.where(accept, new.log_q, old.log_q),
        torch.where(accept, new.log_det, old.log_det),
        pick(new.grad_q, old.grad_q),
        pick(new.grad_p, old.grad_p),
    )


def hmc_transition(
    target: _Target, state: _State, beta: float, step_size: torch.Tensor, leapfrog_steps: int
) -> tuple[_State, torch.Tensor]:
    """One HMC transition leaving f_beta invariant, for every chain and point at once.

    Momenta p ~ N(0, M) with the diagonal mass M = 1 / scale^2 of each site; ``step_size`` [N]
    is per data point. Returns the new state and the acceptance probability [C, N].
    """
    sites = target.sites
    eps = {s.name: s.spread(step_size[None].to(state.u[s.name].dtype)) for s in sites}
    inv_mass = {s.name: s.scale**2 if torch.is_tensor(s.scale) else 1.0 for s in sites}

    def kinetic(p: dict) -> torch.Tensor:
        return sum(s.per_point(0.5 * p[s.name] ** 2 * inv_mass[s.name]) for s in sites)

    p0 = {s.name: torch.randn_like(state.u[s.name]) / s.scale for s in sites}
    g = _grad(state, beta)
    p = {n: p0[n] + 0.5 * eps[n] * g[n] for n in p0}
    u = state.u
    new = state
    for step in range(leapfrog_steps):
        u = {n: u[n] + eps[n] * inv_mass[n] * p[n] for n in u}
        new = target.state(u)
        g = _grad(new, beta)
        half = 0.5 if step == leapfrog_steps - 1 else 1.0
        p = {n: p[n] + half * eps[n] * g[n] for n in p}
    log_ratio = (_log_f(new, beta) - kinetic(p)) - (_log_f(state, beta) - kinetic(p0))
    log_ratio = torch.nan_to_num(log_ratio.double(), nan=-math.inf, posinf=-math.inf)
    prob = log_ratio.clamp(max=0).exp()
    accept = torch.rand_like(prob) < prob
    return _select(target, accept, new, state), prob


# -- annealing ------------------------------------------------------------------------------------


class _Chains(NamedTuple):
    log_w: torch.Tensor  # [C, N], float64
    acceptance: torch.Tensor  # [N]
    step_sizes: torch.Tensor  # [T - 1, N]: the step size of each transition


def _anneal(
    target: _Target,
    betas: torch.Tensor,
    start: dict[str, torch.Tensor] | None,
    step_size: torch.Tensor,
    leapfrog_steps: int,
    step_sizes: torch.Tensor | None,
    adapt: bool,
    target_acceptance: float,
) -> _Chains:
    """Runs the chains of one chunk through ``betas`` (forward 0 -> 1, or reverse 1 -> 0).

    The log-weight accumulates (beta_i - beta_{i-1}) (log p - log q) at the state before the
    transition at beta_i; the transition after the last increment is skipped (it changes nothing).
    """
    z0 = start if start is not None else target.first_draw
    state = target.state(target.unconstrained(z0))
    n = state.log_p.shape[1]
    log_w = torch.zeros_like(state.log_p, dtype=torch.float64)
    eps = step_size.clone()
    history, acc_sum = [], torch.zeros(n, dtype=torch.float64, device=eps.device)
    b = betas.tolist()
    for i in range(1, len(b)):
        log_w += (b[i] - b[i - 1]) * (state.log_p - state.log_q).double()
        if i == len(b) - 1:
            break
        if step_sizes is not None:
            eps = step_sizes[i - 1]
        history.append(eps)
        state, prob = hmc_transition(target, state, b[i], eps, leapfrog_steps)
        rate = prob.mean(0)
        acc_sum += rate
        if adapt:
            eps = eps * torch.where(rate > target_acceptance, 1.02, 0.98).to(eps.dtype)
            eps = eps.clamp(1e-4, 10.0)
    transitions = max(len(b) - 2, 1)
    steps = torch.stack(history) if history else eps[None]
    return _Chains(log_w, acc_sum / transitions, steps)


def _chunks(n: int, num_chains: int, data_numel: int, batch_size: int | None) -> tuple[int, int]:
    """(points, chains) per vectorized pass: a [chains, points, D] tensor under the budget."""
    budget = max(CHUNK_ELEMENTS // 8, 1)  # AIS keeps several such tensors alive per step
    chains = min(num_chains, max(1, budget // max(data_numel, 1)))
    points = max(1, budget // (chains * max(data_numel, 1)))
    if batch_size is not None:
        points = min(points, batch_size)
    return min(points, n), chains


def run_ais(
    pair: Pair,
    args: tuple,
    kwargs: dict,
    *,
    betas: torch.Tensor,
    num_chains: int,
    leapfrog_steps: int,
    step_size: float,
    adapt: str,
    pilot_chains: int,
    target_acceptance: float,
    batch_size: int | None,
    seed: int | None,
    start: dict[str, tuple[torch.Tensor, int]] | None = None,
    step_sizes: torch.Tensor | None = None,
) -> _Chains:
    """The chunked, sharded driver of :func:`ais` and :func:`~pyrogen.bounds.bdmc.bdmc`.

    ``start`` gives each site's initial (constrained) values [1, N, ...] and the index of their
    data dimension (reverse AIS); ``step_sizes`` [T - 1, N] fixes the step size of every
    transition. Returns the chains of all points, in order.
    """
    if adapt not in ("pilot", "online", "none"):
        raise ConfigError(f"adapt must be pilot, online or none, got '{adapt}'")
    if num_chains < 1 or leapfrog_steps < 1:
        raise ConfigError("num_chains and leapfrog_steps must be positive integers")
    n = data_rows(args, kwargs)
    if n == 0:
        raise ConfigError("nothing to evaluate: the data have no rows")
    x = data_tensor(args, kwargs)
    points, chains = _chunks(n, num_chains, int(x[0].numel()), batch_size)
    layout = layout_of(pair, *take_rows(args, kwargs, n, slice(0, points)))
    pieces = []
    with pyro.validation_enabled(False), pair.scope.active():
        for s in distributed.shard(range(0, n, points)):
            batch, batch_kw = take_rows(args, kwargs, n, slice(s, s + points))
            m = min(points, n - s)
            first = None if start is None else {k: v.narrow(i, s, m) for k, (v, i) in start.items()}
            fixed = None if step_sizes is None else step_sizes[:, s : s + m]
            eps0 = torch.full((m,), float(step_size), dtype=x.dtype, device=x.device)
            if fixed is None and adapt == "pilot" and len(betas) > 2:
                if seed is not None:
                    torch.manual_seed(seed * 1_000_003 + s + 999_983)
                pilot = _Target(pair, layout, batch, batch_kw, pilot_chains)
                fixed = _anneal(
                    pilot,
                    betas,
                    _expand(first, pilot_chains),
                    eps0,
                    leapfrog_steps,
                    None,
                    True,
                    target_acceptance,
                ).step_sizes
            groups = []
            for g in range(0, num_chains, chains):
                size = min(chains, num_chains - g)
                if seed is not None:
                    torch.manual_seed(seed * 1_000_003 + s + 7_919 * g)
                target = _Target(pair, layout, batch, batch_kw, size)
                groups.append(
                    _anneal(
                        target,
                        betas,
                        _expand(first, size),
                        eps0,
                        leapfrog_steps,
                        fixed,
                        adapt == "online",
                        target_acceptance,
                    )
                )
            log_w = torch.cat([c.log_w for c in groups], 0)
            sizes = torch.tensor([c.log_w.shape[0] for c in groups], dtype=torch.float64)
            acc = sum(c.acceptance * k for c, k in zip(groups, sizes)) / sizes.sum()
            pieces.append((s, _Chains(log_w, acc, groups[0].step_sizes)))
    ordered = distributed.gather_in_order(pieces)
    return _Chains(
        torch.cat([c.log_w for c in ordered], 1),
        torch.cat([c.acceptance for c in ordered]),
        torch.cat([c.step_sizes for c in ordered], 1),
    )


def _expand(values: dict[str, torch.Tensor] | None, size: int) -> dict[str, torch.Tensor] | None:
    if values is None:
        return None
    return {k: v.expand((size,) + tuple(v.shape[1:])) for k, v in values.items()}


@torch.no_grad()
def ais(
    model: Any,
    *args: Any,
    num_chains: int = 16,
    num_steps: int = 500,
    leapfrog_steps: int = 10,
    schedule: str = "sigmoid",
    step_size: float = 0.5,
    adapt: str = "pilot",
    pilot_chains: int = 4,
    target_acceptance: float = TARGET_ACCEPTANCE,
    batch_size: int | None = None,
    seed: int | None = 0,
    **kwargs: Any,
) -> AISResult:
    r"""AIS estimate of log p(x) for every row of ``x``, annealing from the guide with HMC.

    .. math::
        \log \hat p(x) = \log \frac{1}{C} \sum_{c=1}^{C} \exp \sum_{t=1}^{T}
        (\beta_t - \beta_{t-1}) \big[\log p_\theta(x, z^c_{t-1})
        - \log q_\phi(z^c_{t-1} \mid x)\big]

    Points x chains run vectorized (the chains in the particle plate of
    :func:`~pyrogen.bounds.log_weights`), in chunks that keep memory bounded, under
    ``torch.no_grad`` except for each leapfrog step's gradient (no graph outlives a step).

    Arguments:
        model: the model callable followed by the guide (``ais(model, guide, x)``), or a pair
            (``ais(vae, x)``); every latent site lies in the data plate and is continuous.
        *args: the data x [N, D] and the pair's other arguments (tensors whose first dimension
            is N are batched alongside, anything else passes unchanged); ``**kwargs`` likewise.
        num_chains: C, independent chains per point.
        num_steps: T, the number of intermediate distributions.
        leapfrog_steps: L, leapfrog steps per HMC transition.
        schedule: ``"sigmoid"``, ``"linear"`` or ``"geometric"`` (see :func:`annealing_schedule`).
        step_size: the initial leapfrog step size (in units of the guide's standard deviation).
        adapt: ``"pilot"`` (step sizes tuned on ``pilot_chains`` separate chains, then fixed:
            unbiased weights), ``"online"`` (tuned on the estimating chains: slightly biased),
            or ``"none"``.
        target_acceptance: the acceptance rate the step sizes are adapted toward.
        batch_size: at most this many points per pass (default: as many as the memory budget).
        seed: reseeds torch before each chunk so results depend on the seed and the chunking only.

    Returns:
        :class:`AISResult`.

    References:
        | Annealed Importance Sampling (Neal, 2001) | https://arxiv.org/abs/physics/9803008
        | On the Quantitative Analysis of Decoder-Based Generative Models (Wu et al., 2017)
        | https://arxiv.org/abs/1611.04273

    Example:
        >>> import sys; sys.path.insert(0, "models")
        >>> from ppca import PPCA
        >>> m = PPCA(4, 2)
        >>> r = ais(m.model, m.guide, torch.zeros(3, 4), num_chains=4, num_steps=5)
        >>> r.log_px.shape, r.stderr.shape
        (torch.Size([3]), torch.Size([3]))
    """
    started = time.perf_counter()
    betas = annealing_schedule(num_steps, schedule)
    pair, args = split_pair(model, args)
    chains = run_ais(
        pair,
        args,
        kwargs,
        betas=betas,
        num_chains=num_chains,
        leapfrog_steps=leapfrog_steps,
        step_size=step_size,
        adapt=adapt,
        pilot_chains=pilot_chains,
        target_acceptance=target_acceptance,
        batch_size=batch_size,
        seed=seed,
    )
    est, se = iwae(chains.log_w, chains.log_w.shape[0])
    return AISResult(
        est,
        se,
        chains.acceptance,
        chains.step_sizes[-1],
        chains.log_w,
        num_chains,
        num_steps,
        leapfrog_steps,
        time.perf_counter() - started,
    )
