"""What training carries from step to step: :class:`TrainState`, and its tensors-only checkpoint.

The state holds the trained parameters (the module's *and* every ``pyro.param`` site the model or
guide reads), the optimizer and learning-rate scheduler, the counters, the per-epoch history and
the running sums of the epoch under way. :meth:`TrainState.checkpoint` turns it into a dict of
tensors and plain values (loaded with ``weights_only=True``) and refuses non-finite parameters,
so a checkpoint on disk is always one that training can continue from;
:meth:`TrainState.restore` is its inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from pyrogen.errors import RunDirError
from pyrogen.trace import ParamScope
from pyrogen.train.checkpoints import _first_reason
from pyrogen.train.interrupts import TrainingError

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainState",
    "load_parameters",
    "non_finite_parameters",
    "pyro_parameters",
]

CHECKPOINT_FORMAT = 2
"""1: the module's parameters only; 2: also ``pyro_params`` (constrained values by name)."""


def pyro_parameters(names: tuple[str, ...], scope: ParamScope | None) -> list[torch.Tensor]:
    """The unconstrained leaf tensors of the ``pyro.param`` sites ``names`` (the ones to train)
    in a pair's parameter scope."""
    return scope.unconstrained(names) if scope is not None and names else []


def _constraint_record(constraint: Any) -> dict[str, Any]:
    """A constraint as plain data for a tensors-only checkpoint: its name in
    ``torch.distributions.constraints``, and its bounds where it has them."""
    from torch.distributions import constraints

    for name, value in vars(constraints).items():
        if value is constraint and isinstance(value, constraints.Constraint):
            return {"name": name}
    kind = type(constraint).__name__.lstrip("_")
    names = {
        "GreaterThan": "greater_than",
        "GreaterThanEq": "greater_than_eq",
        "LessThan": "less_than",
        "Interval": "interval",
        "HalfOpenInterval": "half_open_interval",
    }
    if kind in names:
        bounds = {
            key: float(getattr(constraint, key))
            for key in ("lower_bound", "upper_bound")
            if hasattr(constraint, key)
        }
        return {"name": names[kind], **bounds}
    return {"name": "real", "unknown": repr(constraint)}


def _constraint_from(record: dict[str, Any] | None) -> Any:
    from torch.distributions import constraints

    if not record:
        return constraints.real
    found = getattr(constraints, record["name"], constraints.real)
    bounds = [record[k] for k in ("lower_bound", "upper_bound") if k in record]
    return found(*bounds) if bounds else found


def load_parameters(
    model: torch.nn.Module, checkpoint: dict, where: str, scope: ParamScope | None = None
) -> None:
    """Loads a checkpoint's module parameters into ``model`` and its ``pyro.param`` values into
    the pair's parameter ``scope`` (a format-1 checkpoint has no ``pyro_params``)."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise RunDirError(
            f"checkpoint {where} does not fit {type(model).__name__}: {_first_reason(e)[:300]}"
        ) from None
    records = checkpoint.get("pyro_param_constraints", {})
    saved = checkpoint.get("pyro_params", {})
    if saved and scope is None:
        raise RunDirError(f"checkpoint {where} holds pyro.param values but no scope to load into")
    for name, value in saved.items():
        if name not in records and name in scope.state["params"]:  # an older checkpoint
            constraint = scope.constraint(name)
        else:
            constraint = _constraint_from(records.get(name))
        transform = torch.distributions.transform_to(constraint)
        unconstrained = checkpoint.get("pyro_params_unconstrained", {}).get(name)
        # the saved leaf where it still gives the saved value (bit for bit on resume); else the
        # value's inverse transform (an older checkpoint, or a value changed since)
        if unconstrained is None or not torch.equal(transform(unconstrained), value):
            unconstrained = transform.inv(value.detach())
        scope.set(name, value, constraint, unconstrained)


def non_finite_parameters(
    model: torch.nn.Module, pyro_names: tuple[str, ...] = (), scope: ParamScope | None = None
) -> list[str]:
    """Names of the parameters holding a NaN or an infinity."""
    named = [*model.named_parameters(), *zip(pyro_names, pyro_parameters(pyro_names, scope))]
    return [name for name, p in named if not bool(torch.isfinite(p).all())]


@dataclass
class TrainState:
    """Everything a training run carries from one step to the next.

    Attributes:
        model: the module whose parameters are trained (the pair's, or an empty module for a
            pair of plain functions).
        optimizer, scheduler: the torch optimizer over :attr:`parameters` and its lr schedule.
        pyro_params: names of the ``pyro.param`` sites trained beside the module's parameters
            (those that are not the module's own tensors, as ``pyro.module`` registers).
        scope: the pair's :class:`~pyrogen.trace.ParamScope`, where those values live.
        steps_per_epoch: minibatches per epoch.
        epoch: epochs completed; step: minibatches done since the start of training.
        history: one row per completed epoch (see :data:`~pyrogen.train.loop.HISTORY_COLUMNS`).
        sums: running sums of the epoch under way (objective, count, skipped, seconds).
        best, since_best: the best validation ELBO and the epochs since it (early stopping).
        stop: set by a hook to end training after the current epoch.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    pyro_params: tuple[str, ...] = ()
    steps_per_epoch: int = 1
    scope: ParamScope | None = None
    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    sums: dict = field(default_factory=lambda: TrainState.empty_sums())
    best: float = -math.inf
    since_best: int = 0
    stop: bool = False

    @staticmethod
    def empty_sums() -> dict:
        return {"objective": 0.0, "count": 0, "skipped": 0, "seconds": 0.0}

    @property
    def step_in_epoch(self) -> int:
        """Minibatches done in the epoch under way."""
        return self.step - self.epoch * self.steps_per_epoch

    @property
    def parameters(self) -> list[torch.Tensor]:
        """What the optimizer trains: the module's parameters, then the pyro.param sites'."""
        return [*self.model.parameters(), *pyro_parameters(self.pyro_params, self.scope)]

    def checkpoint(self, sums: dict | None = None, extra: dict | None = None) -> dict:
        """The state as a tensors-only dict (``torch.save``-able, ``weights_only``-loadable).

        Raises:
            TrainingError: a parameter is NaN or infinite: such a state is never written.
        """
        bad = non_finite_parameters(self.model, self.pyro_params, self.scope)
        if bad:
            raise TrainingError(
                f"parameters {', '.join(bad[:5])} are not finite at epoch {self.epoch + 1}, "
                f"step {self.step_in_epoch}: no checkpoint was written from them"
            )
        scope, names = self.scope, self.pyro_params
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "pyro_params": {n: scope.value(n).detach().clone() for n in names},
            "pyro_params_unconstrained": {
                n: p.detach().clone() for n, p in zip(names, pyro_parameters(names, scope))
            },
            "pyro_param_constraints": {n: _constraint_record(scope.constraint(n)) for n in names},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "history": self.history,
            "sums": dict(self.sums if sums is None else sums),
            "best": self.best,
            "since_best": self.since_best,
            **(extra or {}),
        }

    def set_base_lr(self, lr: float) -> None:
        """The run's learning rate after a restore (``--override --lr`` may have changed it): the
        optimizer's and the schedule's, continuing the schedule from the step reached."""
        sched = self.scheduler
        sched.base_lrs = [lr for _ in sched.base_lrs]
        for group, fn in zip(self.optimizer.param_groups, sched.lr_lambdas):
            group["lr"] = lr * fn(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def restore(self, checkpoint: dict, where: str) -> None:
        """Continues from ``checkpoint``: optimizer, scheduler, torch's RNG, counters, history.

        The parameters come first, through :func:`load_parameters`, before the optimizer that
        holds them is built.
        """
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            torch.set_rng_state(checkpoint["torch_rng"])
            self.epoch = int(checkpoint["epoch"])
            self.step = self.epoch * self.steps_per_epoch + int(checkpoint["step"])
            self.history = [dict(r) for r in checkpoint["history"]]
            self.sums = dict(checkpoint["sums"])
            self.best, self.since_best = float(checkpoint["best"]), int(checkpoint["since_best"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"lacks {e}" if isinstance(e, KeyError) else _first_reason(e)
            raise RunDirError(
                f"checkpoint {where} does not fit this model and run: {what[:300]}"
            ) from None
