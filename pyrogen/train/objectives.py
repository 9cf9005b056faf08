r"""Training objectives: the losses SVI differentiates, each with the value it reports.

Each objective is a small :class:`Objective` class in the registry :data:`OBJECTIVES`, which
users extend with :func:`register_objective`. ``elbo`` is Pyro's ``Trace_ELBO`` (with a lean
one-particle fast path for reparametrized guides, bitwise the same gradient), ``mean-field`` is
``TraceMeanField_ELBO`` (analytic KL where it exists), ``score-function`` is ``TraceGraph_ELBO``'s
surrogate (guides with discrete or other non-reparametrizable sites), ``enum`` is
``TraceEnum_ELBO`` (discrete sites enumerated in the model or the guide are summed out exactly),
``iwae`` maximises the importance-weighted bound IWAE_k = E[log (1/k) sum_k w_k] of Burda et al.
(2015), and ``iwae-dreg`` uses the doubly reparametrized guide gradient of Tucker et al. (2019).
KL warm-up scales the log-density of every latent site by beta. Every objective runs the pair
through :mod:`pyrogen.trace` or Pyro's own ELBOs, in the pair's parameter scope, so a site name
used twice is an error.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives (Tucker et al., 2019)
    | https://arxiv.org/abs/1810.04152
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from pyrogen.errors import ConfigError, ContractError
from pyrogen.trace import (
    Layout,
    Pair,
    as_pair,
    densities,
    elbo_surrogate,
    log_weights_chunk,
    probe,
    pyro_checks,
)

__all__ = [
    "ELBO",
    "IWAE",
    "OBJECTIVES",
    "EnumELBO",
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
def _detached_parameters(module: torch.nn.Module | None) -> Iterator[None]:
    """Within the block, every parameter of ``module`` reads as a detached copy (stop-gradient)."""
    saved = []
    for sub in module.modules() if module is not None else ():
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
    pair: Pair, layout: Layout, args: tuple, num_particles: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Doubly reparametrized IWAE loss (Tucker et al., 2019), summed over the batch.

    With normalized weights w~_k, the model parameters get sum_k w~_k d log p_theta(x, z_k), and
    the guide parameters sum_k w~_k^2 d log w_k / dz_k dz_k/dphi: the score term is removed by
    evaluating log q (and log p) with every parameter detached, leaving the path through z only.

    Returns:
        (loss, IWAE_k value), summed over the batch.
    """
    first = densities(pair, layout, args, {}, num_particles)
    z = {m["name"]: m["value"] for m in first.guide_sites}
    log_q = first.log_q
    frozen = {n: v.detach() for n, v in z.items()}
    log_p_theta = densities(pair, layout, args, {}, num_particles, frozen, with_guide=False).log_p
    with _detached_parameters(pair.module):
        path = densities(pair, layout, args, {}, num_particles, z)
    lw = (log_p_theta - log_q).detach()
    w = torch.softmax(lw, dim=0)
    surrogate = (w * log_p_theta).sum() + (w**2 * path.log_w).sum()
    value = (torch.logsumexp(lw, 0) - math.log(num_particles)).sum()
    return -surrogate, value


class Objective:
    """A training objective: the loss SVI differentiates and the value it reports.

    Subclasses set ``name`` and define :meth:`loss`; :func:`register_objective` makes them
    available to :func:`pyrogen.fit` and ``pyrogen train --objective NAME``.

    Arguments:
        num_particles: ELBO particles, or k of an importance-weighted objective.
        max_plate_nesting: the model's plate depth (from :func:`pyrogen.check_model`).
        layout: the pair's :class:`~pyrogen.trace.Layout` (probed on the first batch if None).
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
    #: sums out discrete model sites marked for enumeration
    enumerates = False

    def __init__(
        self, num_particles: int = 1, max_plate_nesting: int = 1, layout: Layout | None = None
    ) -> None:
        if num_particles < self.min_particles:
            raise ConfigError(
                f"objective {self.name} needs num_particles >= {self.min_particles} "
                f"(--particles), got {num_particles}"
            )
        self.num_particles = num_particles
        self.max_plate_nesting = max(max_plate_nesting, layout.nesting if layout else 0)
        self.layout = layout

    def check(self, layout: Layout) -> None:
        """Refuses a pair this objective cannot train, naming the site and the reason."""
        if layout.enumerated and not self.enumerates:
            raise ContractError(
                f"model site(s) {', '.join(map(repr, layout.enumerated))} are marked for "
                f"enumeration, which objective '{self.name}' does not sum out (Pyro's "
                "Trace_ELBO would draw them from the prior): train with objective 'enum'"
            )
        if self.per_datapoint and layout.shared:
            raise ContractError(
                f"latent site '{layout.shared[0]}' is outside the data plate "
                f"'{layout.data_plate}': objective '{self.name}' needs one weight per data point"
            )

    def layout_for(self, pair: Pair, args: tuple) -> Layout:
        if self.layout is None:
            self.layout = probe(pair, args, {}, per_datapoint=self.per_datapoint)
        return self.layout

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, value), both summed over the batch: ``loss.backward()`` gives the gradient of
        -objective; ``value`` is the objective (detached)."""
        raise NotImplementedError

    def __call__(
        self, model: Any, args: tuple, beta: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pair = as_pair(model)
        with pyro_checks(), pair.scope.active():
            return self.loss(pair, args, beta)


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


def make_objective(
    name: str, num_particles: int, max_plate_nesting: int, layout: Layout | None = None
) -> Objective:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](num_particles, max_plate_nesting, layout)


def _annealed(pair: Pair, beta: float) -> Pair:
    if beta == 1.0:
        return pair
    return Pair(
        _AnnealLatents(beta)(pair.model), _AnnealLatents(beta)(pair.guide), pair.module, pair.owner
    )


class _PyroELBO(Objective):
    """An objective computed by one of Pyro's ELBO classes (its checks included)."""

    elbo_class: type = Trace_ELBO

    def __init__(
        self, num_particles: int = 1, max_plate_nesting: int = 1, layout: Layout | None = None
    ) -> None:
        super().__init__(num_particles, max_plate_nesting, layout)
        vectorize = num_particles > 1 and (layout is None or layout.vectorized)
        self.elbo = self.elbo_class(
            num_particles=num_particles,
            vectorize_particles=vectorize,
            max_plate_nesting=self.max_plate_nesting,
        )

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        run = _annealed(pair, beta)
        loss = self.elbo.differentiable_loss(run.model, run.guide, *args)
        return loss, -loss.detach()


@register_objective
class ELBO(_PyroELBO):
    """Pyro's ``Trace_ELBO``; one particle of a reparametrized guide takes a lean path with
    bitwise the same gradient (:func:`pyrogen.trace.elbo_surrogate`), which keeps Pyro's check
    of duplicate site names."""

    name = "elbo"
    reports_elbo = True

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_particles == 1:
            loss = elbo_surrogate(_annealed(pair, beta), args)
            if loss is not None:
                return loss, -loss.detach()
        return super().loss(pair, args, beta)


@register_objective
class MeanFieldELBO(_PyroELBO):
    """Pyro's ``TraceMeanField_ELBO``: the analytic KL where it exists."""

    name = "mean-field"
    reports_elbo = True
    elbo_class = TraceMeanField_ELBO


@register_objective
class ScoreFunctionELBO(_PyroELBO):
    """``TraceGraph_ELBO``'s surrogate: score-function gradients (with Rao-Blackwellization and
    Pyro's baselines) for guides with non-reparametrizable sites, such as discrete latents."""

    name = "score-function"
    reports_elbo = True
    needs_rsample = False
    elbo_class = TraceGraph_ELBO

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        # TraceGraph_ELBO has no differentiable_loss: its surrogate is what loss_and_grads
        # differentiates (returned, not differentiated, so that fit's step takes it)
        run = _annealed(pair, beta)
        elbo, surrogate = self.elbo._loss_and_surrogate_loss(run.model, run.guide, args, {})
        return surrogate, torch.as_tensor(elbo).detach()


@register_objective
class EnumELBO(_PyroELBO):
    """Pyro's ``TraceEnum_ELBO``: discrete sites marked for enumeration, in the model or the
    guide, are summed out exactly (``max_plate_nesting`` from the pair's layout)."""

    name = "enum"
    reports_elbo = True
    needs_rsample = False
    enumerates = True
    elbo_class = TraceEnum_ELBO


@register_objective
class IWAE(Objective):
    """IWAE_k = E[log (1/k) sum_k w_k] (Burda et al., 2015), maximised directly."""

    name = "iwae"
    per_datapoint = True
    min_particles = 2

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.num_particles
        lw = log_weights_chunk(pair, self.layout_for(pair, args), args, {}, k)
        value = (torch.logsumexp(lw, 0) - math.log(k)).sum()
        return -value, value.detach()


@register_objective
class IWAEDReG(Objective):
    """IWAE_k with the doubly reparametrized guide gradient (Tucker et al., 2019)."""

    name = "iwae-dreg"
    per_datapoint = True
    min_particles = 2

    def loss(self, pair: Pair, args: tuple, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        return _dreg_loss(pair, self.layout_for(pair, args), args, self.num_particles)


def objective_loss(
    model: Any,
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
