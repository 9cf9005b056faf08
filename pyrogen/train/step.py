r"""One step of stochastic variational inference, and what sets it up.

:func:`train_step` is Pyro's ``SVI.step`` with its bookkeeping made explicit: the objective's loss
on a minibatch, its gradient, and an optimizer step taken only when both the loss and the
gradient are finite (otherwise the step is skipped and reported, and the NaN policy of
:mod:`pyrogen.train.hooks` decides whether training stops). The loss, the objective's value and
the gradient norm reach the host in one transfer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from pyrogen import distributed
from pyrogen.errors import ConfigError
from pyrogen.train.config import OPTIMIZERS, TrainConfig
from pyrogen.train.state import TrainState

__all__ = ["kl_weight", "lr_lambda", "make_optimizer", "optimizer_name", "train_step"]

_TORCH_OPTIMIZERS = {
    "adam": "Adam",
    "adamw": "AdamW",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
}


def _optimizer_class(name: str) -> type | None:
    """The optimizer class of a name: ours (``adam-normgrad``), a torch.optim class name, or the
    class name of ours (what config.json records for a class given to fit)."""
    from pyrogen.optim import OPTIMIZERS as OURS

    cls = OURS.get(name.lower()) if name.lower() not in _TORCH_OPTIMIZERS else None
    cls = cls or getattr(torch.optim, _TORCH_OPTIMIZERS.get(name.lower(), name), None)
    cls = cls or {c.__name__: c for c in OURS.values()}.get(name)
    return cls if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) else None


def optimizer_name(optimizer: Any) -> str:
    """The name recorded in config.json for an optimizer given to :func:`pyrogen.fit`."""
    if optimizer is None:
        return "adam"
    if isinstance(optimizer, str):
        return optimizer
    return getattr(optimizer, "__name__", type(optimizer).__name__)


def make_optimizer(
    optimizer: str | Callable[..., torch.optim.Optimizer] | None,
    params: list[torch.Tensor],
    lr: float,
) -> torch.optim.Optimizer:
    """Builds the optimizer: a name (``adam`` ... or any class of :mod:`torch.optim`), a torch
    optimizer class, a factory ``(params, lr=...) -> Optimizer``, or a ``pyro.optim`` optimizer
    wrapping a torch one (its class and arguments are used)."""
    if optimizer is None or optimizer == "adam":
        # foreach: the multi-tensor Adam, bitwise the same update as the per-tensor loop on CPU
        return torch.optim.Adam(params, lr=lr, foreach=True)
    if isinstance(optimizer, str):
        cls = _optimizer_class(optimizer)
        if cls is None:
            raise ConfigError(
                f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)} or a "
                "class of torch.optim; from Python, pass the class or a factory"
            )
        return cls(params, lr=lr)
    pt_optim = getattr(optimizer, "pt_optim_constructor", None)
    if pt_optim is not None:  # pyro.optim.PyroOptim: its torch class and arguments
        args = dict(getattr(optimizer, "pt_optim_args", {}) or {})
        args.setdefault("lr", lr)
        return pt_optim(params, **args)
    return optimizer(params, lr=lr)


def check_optimizer(name: str) -> None:
    """Refuses an optimizer name that :func:`make_optimizer` cannot build, before any work."""
    if _optimizer_class(name) is None:
        raise ConfigError(
            f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)} or a class of "
            "torch.optim (an optimizer given to fit from Python is resumed from Python)"
        )


def lr_lambda(schedule: str, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier at a step: constant, cosine to zero, or /10 at 1/2 and 3/4."""
    total = max(1, epochs * steps_per_epoch)
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return lambda step: 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4))


def kl_weight(config: TrainConfig, steps_per_epoch: int, step: int) -> float:
    """beta of the step after ``step`` steps: rises linearly to 1 over ``kl_warmup`` epochs."""
    warmup_steps = config.kl_warmup * steps_per_epoch
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def _grad_norm(params: list[torch.Tensor], clip_norm: float | None) -> torch.Tensor:
    if clip_norm:
        return torch.nn.utils.clip_grad_norm_(params, clip_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def train_step(
    state: TrainState,
    loss_fn: Callable[[tuple, float], tuple[torch.Tensor, Any]],
    args: tuple,
    beta: float,
    clip_norm: float | None,
) -> dict[str, float]:
    """One SVI step on the minibatch ``args``; advances the scheduler.

    Returns:
        The step's metrics: ``surrogate`` (the loss differentiated) and ``value`` (the
        objective), both summed over the batch, ``grad_norm`` (before clipping), ``lr`` (used
        by this step), ``kl_weight`` and ``skipped`` (1.0 when the loss or the gradient was not
        finite and no update was made).
    """
    loss, value = loss_fn(args, beta)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = state.parameters
    if state.pyro_params and distributed.world_size() > 1:
        distributed.average_gradients(params[-len(state.pyro_params) :])
    norm = _grad_norm(params, clip_norm)
    # the step's one host sync: the loss, the objective and the gradient norm together
    together = [
        torch.as_tensor(t).detach().to(loss.device, torch.float64) for t in (loss, value, norm)
    ]
    loss_f, value_f, norm_f = torch.stack(together).tolist()
    finite = distributed.all_ranks(math.isfinite(loss_f) and math.isfinite(norm_f))
    lr = state.optimizer.param_groups[0]["lr"]
    if finite:
        state.optimizer.step()
        state.scheduler.step()
    else:
        with warnings.catch_warnings():  # a skipped first step: the schedule still counts it
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            state.scheduler.step()
    return {
        "surrogate": loss_f,
        "value": value_f,
        "grad_norm": norm_f,
        "lr": lr,
        "kl_weight": beta,
        "skipped": 0.0 if finite else 1.0,
    }
