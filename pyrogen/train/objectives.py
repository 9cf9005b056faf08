"""Training objectives: the losses SVI differentiates, each with the value it reports.

Each objective is a small :class:`Objective` class in the registry :data:`OBJECTIVES`, which
users extend with :func:`register_objective`. ``elbo`` is Pyro's ``Trace_ELBO`` (with a lean
one-particle fast path for reparametrized guides, bitwise the same gradient), ``mean-field`` is
``TraceMeanField_ELBO`` (analytic KL where it exists), ``score-function`` is ``TraceGraph_ELBO``
(guides with discrete or other non-reparametrizable sites), ``iwae`` maximises the
importance-weighted bound IWAE_k = E[log (1/k) sum_k w_k] of Burda et al. (2015), and
``iwae-dreg`` uses the doubly reparametrized guide gradient of Tucker et al. (2019). KL warm-up
scales the log-density of every latent site by beta. Every objective runs the pair through
:mod:`pyrogen.bounds.weights`'s recorder or Pyro's traces, so a site name used twice is an error.

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
from pyro.infer import Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from pyrogen.bounds import (
    _in_particle_plate,
    _SiteRecorder,
    log_density,
    log_weights,
    trace_pair,
)
from pyrogen.bounds.weights import pyro_checks
from pyrogen.errors import ConfigError
from pyrogen.model import GenerativeModel, is_subsample

__all__ = [
    "ELBO",
    "IWAE",
    "OBJECTIVES",
    "IWAEDReG",
    "MeanFieldELBO",
    "Objective",
    "ScoreFunctionELBO",
    "make_objective",
    "objective_loss",
    "register_objective",
]


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
        if not is_subsample(site):
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            log_p_sums.append(scale_and_mask(log_p, site["scale"], site["mask"]).sum())
    entropy = []
    for site in guide_run.sites:
        if not is_subsample(site):
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


class Objective:
    """A training objective: the loss SVI differentiates and the value it reports.

    Subclasses set ``name`` and define :meth:`loss`; :func:`register_objective` makes them
    available to :func:`pyrogen.fit` and ``pyrogen train --objective NAME``.

    Arguments:
        num_particles: ELBO particles, or k of an importance-weighted objective.
        max_plate_nesting: the model's plate depth (from :func:`pyrogen.check_model`).
    """

    name = ""
    #: needs one importance weight per data point (every site inside the data plate)
    per_datapoint = False
    #: the value is the plain ELBO (so it is reported as ``train_elbo`` when beta = 1)
    reports_elbo = False
    #: the smallest number of particles that makes sense
    min_particles = 1
    #: every guide site must be reparametrizable
    needs_rsample = True

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        if num_particles < self.min_particles:
            raise ConfigError(
                f"objective {self.name} needs num_particles >= {self.min_particles} "
                f"(--particles), got {num_particles}"
            )
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting

    def loss(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, value), both summed over the batch: ``loss.backward()`` gives the gradient of
        -objective; ``value`` is the objective (detached)."""
        raise NotImplementedError

    def __call__(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with pyro_checks():
            return self.loss(model, args, beta)


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: adds an :class:`Objective` subclass to :data:`OBJECTIVES` by its name.

    Example:
        >>> @register_objective
        ... class HalfELBO(ELBO):
        ...     name = "half-elbo"
        ...     def loss(self, model, args, beta=1.0):
        ...         loss, value = super().loss(model, args, beta)
        ...         return 0.5 * loss, value
        >>> "half-elbo" in OBJECTIVES
        True
        >>> del OBJECTIVES["half-elbo"]
    """
    if not cls.name:
        raise ConfigError(f"{cls.__name__} has no name to register it under")
    OBJECTIVES[cls.name] = cls
    return cls


def make_objective(name: str, num_particles: int, max_plate_nesting: int) -> Objective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](num_particles, max_plate_nesting)


def _annealed(model: GenerativeModel, beta: float) -> tuple[Callable, Callable]:
    if beta == 1.0:
        return model.model, model.guide
    return _AnnealLatents(beta)(model.model), _AnnealLatents(beta)(model.guide)


class _PyroELBO(Objective):
    """An objective computed by one of Pyro's ELBO classes (its checks included)."""

    elbo_class: type = Trace_ELBO

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(num_particles, max_plate_nesting)
        self.elbo = self.elbo_class(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=max_plate_nesting,
        )

    def loss(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fn_model, fn_guide = _annealed(model, beta)
        loss = self.elbo.differentiable_loss(fn_model, fn_guide, *args)
        return loss, -loss.detach()


@register_objective
class ELBO(_PyroELBO):
    """Pyro's ``Trace_ELBO``; one particle of a reparametrized guide takes a lean path with
    bitwise the same gradient (:func:`_trace_elbo_loss`), which keeps Pyro's check of duplicate
    site names."""

    name = "elbo"
    reports_elbo = True

    def loss(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_particles == 1:
            fn_model, fn_guide = _annealed(model, beta)
            loss = _trace_elbo_loss(fn_model, fn_guide, args)
            if loss is not None:
                return loss, -loss.detach()
        return super().loss(model, args, beta)


@register_objective
class MeanFieldELBO(_PyroELBO):
    """Pyro's ``TraceMeanField_ELBO``: the analytic KL where it exists."""

    name = "mean-field"
    reports_elbo = True
    elbo_class = TraceMeanField_ELBO


@register_objective
class ScoreFunctionELBO(_PyroELBO):
    """Pyro's ``TraceGraph_ELBO``: score-function gradients (with Rao-Blackwellization) for
    guides with non-reparametrizable sites, such as discrete latents."""

    name = "score-function"
    reports_elbo = True
    needs_rsample = False
    elbo_class = TraceGraph_ELBO


@register_objective
class IWAE(Objective):
    """IWAE_k = E[log (1/k) sum_k w_k] (Burda et al., 2015), maximised directly."""

    name = "iwae"
    per_datapoint = True
    min_particles = 2

    def loss(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.num_particles
        lw = log_weights(
            model.model,
            model.guide,
            *args,
            num_particles=k,
            chunk_size=k,
            grad=True,
            max_plate_nesting=self.max_plate_nesting,
        )
        value = (torch.logsumexp(lw, 0) - math.log(k)).sum()
        return -value, value.detach()


@register_objective
class IWAEDReG(Objective):
    """IWAE_k with the doubly reparametrized guide gradient (Tucker et al., 2019)."""

    name = "iwae-dreg"
    per_datapoint = True
    min_particles = 2

    def loss(
        self, model: GenerativeModel, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _dreg_loss(model, args, self.num_particles, self.max_plate_nesting)


def objective_loss(
    model: GenerativeModel,
    args: tuple,
    objective: str,
    num_particles: int,
    nesting: int,
    elbo: Any = None,
    beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``make_objective(objective, num_particles, nesting)(model, args, beta)``: the loss to
    differentiate and the objective's value, both summed over the batch."""
    return make_objective(objective, num_particles, nesting)(model, args, beta)
