"""Training objectives: the losses SVI differentiates, each with the value it reports.

``elbo`` is Pyro's ``Trace_ELBO`` (with a lean one-particle fast path for reparametrized guides,
bitwise the same gradient), ``mean-field`` is ``TraceMeanField_ELBO`` (analytic KL where it
exists), ``iwae`` maximises the importance-weighted bound IWAE_k = E[log (1/k) sum_k w_k] of
Burda et al. (2015), and ``iwae-dreg`` uses the doubly reparametrized guide gradient of Tucker et
al. (2019). KL warm-up scales the log-density of every latent site by beta.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives (Tucker et al., 2019)
    | https://arxiv.org/abs/1810.04152
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from pyrogen.bounds import (
    _in_particle_plate,
    _SiteRecorder,
    log_density,
    log_weights,
    trace_pair,
)
from pyrogen.errors import ConfigError
from pyrogen.model import GenerativeModel

__all__ = ["OBJECTIVES", "objective_loss"]

OBJECTIVES = ("elbo", "mean-field", "iwae", "iwae-dreg")


class _AnnealLatents(Messenger):
    """Scales the log-density of every latent (unobserved) site by beta: KL warm-up."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.beta


@contextlib.contextmanager
def _detached_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, every parameter of ``module`` reads as a detached copy (stop-gradient)."""
    saved = []
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                saved.append((sub, name, p))
                sub._parameters[name] = p.detach()
    try:
        yield
    finally:
        for sub, name, p in saved:
            sub._parameters[name] = p


def _dreg_loss(
    model: GenerativeModel, args: tuple, num_particles: int, nesting: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Doubly reparametrized IWAE loss (Tucker et al., 2019), summed over the batch.

    With normalized weights w~_k, the model parameters get sum_k w~_k d log p_theta(x, z_k), and
    the guide parameters sum_k w~_k^2 d log w_k / dz_k dz_k/dphi: the score term is removed by
    evaluating log q (and log p) with every parameter detached, leaving the path through z only.

    Returns:
        (loss, IWAE_k value), summed over the batch.
    """
    guide_tr, _ = trace_pair(model.model, model.guide, args, {}, num_particles, nesting)
    log_q = log_density(guide_tr, nesting, "guide", observed=False)
    frozen_z = poutine.Trace()
    for name, site in guide_tr.nodes.items():
        if site["type"] == "sample":
            frozen_z.add_node(name, **{**site, "value": site["value"].detach()})
    model_theta = poutine.trace(
        poutine.replay(
            _in_particle_plate(model.model, num_particles, -(nesting + 1)), trace=frozen_z
        )
    ).get_trace(*args)
    log_p_theta = log_density(model_theta, nesting, "model")
    with _detached_parameters(model):
        guide_phi, model_phi = trace_pair(
            model.model,
            poutine.replay(model.guide, trace=guide_tr),
            args,
            {},
            num_particles,
            nesting,
        )
        lw_path = log_density(model_phi, nesting, "model") - log_density(
            guide_phi, nesting, "guide", observed=False
        )
    lw = (log_p_theta - log_q).detach()
    w = torch.softmax(lw, dim=0)
    surrogate = (w * log_p_theta).sum() + (w**2 * lw_path).sum()
    value = (torch.logsumexp(lw, 0) - math.log(num_particles)).sum()
    return -surrogate, value


def _trace_elbo_loss(model_fn: Callable, guide_fn: Callable, args: tuple) -> torch.Tensor | None:
    """``Trace_ELBO().differentiable_loss`` for one particle of a reparametrized guide, leaner.

    With every guide site reparametrized, Trace_ELBO's surrogate is
    sum_model log p(site) - sum_guide log q(site) over the scaled and masked site log-densities
    (the entropy terms of ``score_parts``; no score-function term). This sums exactly those
    terms, in Trace_ELBO's order, so the gradient is bitwise Trace_ELBO's, but over lean
    recordings of the two runs instead of traces and without Trace_ELBO's per-site ``.item()``
    host syncs. The returned value is that surrogate, equal to Trace_ELBO's loss up to float
    rounding. Returns None for a guide site with a score-function term (no rsample): the caller
    then uses Trace_ELBO itself.
    """
    guide_run = _SiteRecorder()
    with guide_run:
        guide_fn(*args)
    model_run = _SiteRecorder(guide_run.unobserved())
    with model_run:
        model_fn(*args)
    # Trace_ELBO's order of operations (model log-densities, then the guide's score parts), so
    # that autograd accumulates the gradient terms in the same order
    log_p_sums = []
    for site in model_run.sites:
        if type(site["fn"]).__name__ != "_Subsample":
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            log_p_sums.append(scale_and_mask(log_p, site["scale"], site["mask"]).sum())
    entropy = []
    for site in guide_run.sites:
        if type(site["fn"]).__name__ != "_Subsample":
            parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
            parts = parts.scale_and_mask(site["scale"], site["mask"])
            if not is_identically_zero(parts.score_function):
                return None
            entropy.append(parts.entropy_term)
    surrogate = 0
    for term in log_p_sums:
        surrogate = surrogate + term
    for term in entropy:
        surrogate = surrogate - term.sum()
    return -surrogate


def objective_loss(
    model: GenerativeModel,
    args: tuple,
    objective: str,
    num_particles: int,
    nesting: int,
    elbo: Any = None,
    beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to differentiate and the objective's value, both summed over the batch.

    Returns:
        (loss, value): ``loss.backward()`` gives the gradient of -objective; ``value`` is the
        objective (ELBO, annealed ELBO or IWAE_k), detached.
    """
    if objective in ("elbo", "mean-field"):
        fn_model, fn_guide = model.model, model.guide
        if beta != 1.0:
            fn_model = _AnnealLatents(beta)(fn_model)
            fn_guide = _AnnealLatents(beta)(fn_guide)
        loss = None
        if objective == "elbo" and num_particles == 1:
            loss = _trace_elbo_loss(fn_model, fn_guide, args)
        if loss is None:
            loss = elbo.differentiable_loss(fn_model, fn_guide, *args)
        return loss, -loss.detach()
    if objective == "iwae":
        lw = log_weights(
            model.model,
            model.guide,
            *args,
            num_particles=num_particles,
            chunk_size=num_particles,
            grad=True,
            max_plate_nesting=nesting,
        )
        value = (torch.logsumexp(lw, 0) - math.log(num_particles)).sum()
        return -value, value.detach()
    if objective == "iwae-dreg":
        return _dreg_loss(model, args, num_particles, nesting)
    raise ConfigError(f"unknown objective '{objective}': choose one of {', '.join(OBJECTIVES)}")


def _make_elbo(objective: str, num_particles: int, nesting: int) -> Any:
    if objective == "elbo":
        return Trace_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=nesting,
        )
    if objective == "mean-field":
        return TraceMeanField_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=nesting,
        )
    return None
