r"""Bidirectional Monte Carlo: a sandwich of log p(x) on data simulated from the model.

Draw (z, x) ~ p_theta(z) p_theta(x | z). Then z is an exact draw from the posterior p(z | x), so AIS
run in reverse, from beta = 1 down to 0 starting at z, is a valid chain: its log-weights

.. math:: \log w_{\mathrm{rev}} = \sum_{t=T}^{1} (\beta_{t-1} - \beta_t)\,
          \big[\log p_\theta(x, z_t) - \log q_\phi(z_t \mid x)\big]

have E[w_rev] = 1 / p(x), so -log mean exp(log w_rev) is a stochastic *upper* bound on log p(x),
while forward AIS (:func:`~pyrogen.bounds.ais.ais`) is a stochastic lower bound. Their difference,
the sandwich gap, bounds the error of the forward estimate on such data; both close as the number
of intermediate distributions grows (Grosse et al., 2015; Wu et al., 2017).

References:
    | Sandwiching the marginal likelihood using bidirectional Monte Carlo (Grosse et al., 2015)
    | https://arxiv.org/abs/1511.02543
    | On the Quantitative Analysis of Decoder-Based Generative Models (Wu et al., 2017)
    | https://arxiv.org/abs/1611.04273
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import pandas as pd
import torch

from pyrogen.bounds.ais import TARGET_ACCEPTANCE, annealing_schedule, run_ais
from pyrogen.bounds.estimators import iwae
from pyrogen.bounds.weights import layout_of
from pyrogen.errors import ConfigError, ContractError
from pyrogen.trace import Pair, run_model, split_pair

__all__ = ["BDMCResult", "bdmc", "simulate"]


class BDMCResult(NamedTuple):
    """Forward (lower) and reverse (upper) AIS bounds on simulated data, one per point.

    Attributes:
        x: the simulated data [N, D].
        lower, lower_stderr: forward AIS estimate of log p(x) and its standard error [N].
        upper, upper_stderr: reverse AIS estimate from the exact z and its standard error [N].
        gap: mean over points of upper - lower (nats): how far the sandwich is from closing.
        num_chains, num_steps, seconds: the settings and the wall time.
    """

    x: torch.Tensor
    lower: torch.Tensor
    lower_stderr: torch.Tensor
    upper: torch.Tensor
    upper_stderr: torch.Tensor
    gap: float
    num_chains: int
    num_steps: int
    seconds: float

    def to_frame(self) -> pd.DataFrame:
        """One row per simulated point: ``lower``, ``lower_stderr``, ``upper``, ``upper_stderr``,
        ``gap``."""
        lo, up = self.lower.double().cpu().numpy(), self.upper.double().cpu().numpy()
        return pd.DataFrame(
            {
                "lower": lo,
                "lower_stderr": self.lower_stderr.double().cpu().numpy(),
                "upper": up,
                "upper_stderr": self.upper_stderr.double().cpu().numpy(),
                "gap": up - lo,
            }
        )

    def summary(self) -> dict[str, float]:
        n = len(self.lower)
        return {
            "chains": self.num_chains,
            "steps": self.num_steps,
            "lower": float(self.lower.double().mean()),
            "upper": float(self.upper.double().mean()),
            "gap": self.gap,
            "gap_stderr": float((self.upper - self.lower).double().std()) / math.sqrt(n)
            if n > 1
            else math.nan,
            "seconds": self.seconds,
            "num_points": n,
        }


@torch.no_grad()
def simulate(
    pair: Pair,
    num_points: int,
    data_dim: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, int]]]:
    """Draws (z, x) ~ p_theta: the data [N, D] and each latent's values [1, N, ...] with the index
    of its data dimension (the layout :func:`~pyrogen.bounds.ais.run_ais` takes as ``start``)."""
    p = next(iter(pair.module.parameters()), None) if pair.module is not None else None
    placeholder = torch.zeros(
        num_points,
        data_dim,
        dtype=dtype or (p.dtype if p is not None else None),
        device=p.device if p is not None else None,
    )
    layout = layout_of(pair, (placeholder,), {})
    if len(layout.observed) != 1:
        raise ContractError(
            f"BDMC needs a model with one observed site, got {list(layout.observed)}"
        )
    if layout.enumerated:
        raise ContractError(
            f"BDMC simulates every latent site; enumerated site(s) {list(layout.enumerated)} "
            "have no guide to reverse"
        )
    tr = run_model(pair, (placeholder,), uncondition=True, layout=layout)
    name = layout.observed[0]
    x = tr.nodes[name]["value"].reshape(-1, *placeholder.shape[1:])
    if x.shape != placeholder.shape:
        raise ContractError(
            f"the observed site '{name}' has {x.numel()} values, not {num_points} x {data_dim}"
        )
    start = {}
    for site_name in layout.latent:
        site = tr.nodes[site_name]
        frame = next(f for f in site["cond_indep_stack"] if f.name == layout.data_plate)
        value = site["value"]
        start[site_name] = (value, value.dim() - site["fn"].event_dim + frame.dim)
    return x, start


@torch.no_grad()
def bdmc(
    model: Any,
    *args: Any,
    data_dim: int | None = None,
    num_chains: int = 16,
    num_steps: int = 500,
    leapfrog_steps: int = 10,
    schedule: str = "sigmoid",
    step_size: float = 0.5,
    target_acceptance: float = TARGET_ACCEPTANCE,
    pilot_chains: int = 4,
    batch_size: int | None = None,
    seed: int | None = 0,
) -> BDMCResult:
    r"""Sandwiches log p(x) on ``num_points`` points simulated from the model.

    Forward AIS from the guide gives the lower bound; reverse AIS from the simulated z, with the
    same per-step step sizes (tuned by the forward pilot, so they do not depend on the reverse
    chains), gives the upper bound

    .. math:: \hat{\mathcal U}(x) = -\log \frac{1}{C} \sum_c w^c_{\mathrm{rev}}.

    Arguments:
        model: the model callable followed by the guide, or a pair (an object with ``model``
            and ``guide`` methods, a ``(model, guide)`` tuple); unconditional: one observed
            site, x.
        *args: after the pair, ``num_points``: how many (z, x) to simulate.
        data_dim: D (default: the model's ``data_dim`` attribute).
        num_chains, num_steps, leapfrog_steps, schedule, step_size, target_acceptance,
        pilot_chains, batch_size: as in :func:`~pyrogen.bounds.ais.ais`.
        seed: seeds the simulation and both directions.

    Returns:
        :class:`BDMCResult`.

    References:
        | Sandwiching the marginal likelihood using bidirectional Monte Carlo (Grosse et al., 2015)
        | https://arxiv.org/abs/1511.02543
    """
    started = time.perf_counter()
    pair, rest = split_pair(model, args)
    if len(rest) != 1 or not isinstance(rest[0], int):
        raise ConfigError("bdmc takes the pair and num_points (an integer)")
    num_points = rest[0]
    if num_points < 1:
        raise ConfigError(f"num_points must be a positive integer, got {num_points}")
    data_dim = data_dim or int(getattr(pair.module, "data_dim", 0))
    if data_dim <= 0:
        raise ConfigError("bdmc needs data_dim (the model has no data_dim attribute)")
    if seed is not None:
        torch.manual_seed(seed)
    x, start = simulate(pair, num_points, data_dim)
    betas = annealing_schedule(num_steps, schedule)
    common = dict(
        num_chains=num_chains,
        leapfrog_steps=leapfrog_steps,
        step_size=step_size,
        pilot_chains=pilot_chains,
        target_acceptance=target_acceptance,
        batch_size=batch_size,
    )
    forward = run_ais(pair, (x,), {}, betas=betas, adapt="pilot", seed=seed, **common)
    reverse = run_ais(
        pair,
        (x,),
        {},
        betas=betas.flip(0),
        adapt="none",
        seed=None if seed is None else seed + 1,
        start=start,
        step_sizes=forward.step_sizes.flip(0),
        **common,
    )
    lower, lower_se = iwae(forward.log_w, num_chains)
    neg_upper, upper_se = iwae(reverse.log_w, num_chains)
    upper = -neg_upper
    return BDMCResult(
        x,
        lower,
        lower_se,
        upper,
        upper_se,
        float((upper - lower).mean()),
        num_chains,
        num_steps,
        time.perf_counter() - started,
    )
