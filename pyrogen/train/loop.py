"""The SVI loop: :func:`fit`, a short loop over :func:`~pyrogen.train.step.train_step` and the
hooks of :mod:`pyrogen.train.hooks`.

The settings are the fields of :class:`~pyrogen.train.config.TrainConfig`; what a step carries is
the :class:`~pyrogen.train.state.TrainState`; the run directory is written through
:class:`~pyrogen.runs.RunDir`.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyro
import torch

from pyrogen import distributed
from pyrogen.bounds import log_weights
from pyrogen.errors import ConfigError, DataError, format_rows
from pyrogen.model import check_model, wants_labels
from pyrogen.trace import Layout, Pair, as_pair, take_rows
from pyrogen.train.config import SCHEDULES, TrainConfig
from pyrogen.train.hooks import (
    CHECKPOINT_EVERY_S,
    HISTORY_COLUMNS,
    Checkpointer,
    EarlyStopping,
    Hooks,
    NanPolicy,
    Progress,
    history_row,
)
from pyrogen.train.interrupts import _SignalGuard
from pyrogen.train.objectives import Objective, make_objective
from pyrogen.train.state import TrainState, load_parameters, pyro_parameters
from pyrogen.train.step import (
    check_optimizer,
    kl_weight,
    lr_lambda,
    make_optimizer,
    optimizer_name,
    train_step,
)

__all__ = [
    "CHECKPOINT_EVERY_S",
    "HISTORY_COLUMNS",
    "SCHEDULES",
    "fit",
    "seed_everything",
    "validation_elbo",
]


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, torch and Pyro."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds code that uses the global NumPy RNG
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


@torch.no_grad()
def validation_elbo(
    pair: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    layout: Layout | None = None,
    batch_size: int = 1000,
    extra: tuple = (),
) -> float:
    """Mean single-sample ELBO per data point on ``x`` (nats): the mean over points of one
    log-weight each, log p(x, z) - log q(z | x) with z ~ q(z | x), by Pyro's site rules."""
    pair = as_pair(pair)
    n = x.shape[0]
    args = (x,) if y is None else (x, y)
    total = 0.0
    for s in range(0, n, batch_size):
        batch, _ = take_rows((*args, *extra), {}, n, slice(s, s + batch_size))
        total += float(log_weights(pair, *batch, num_particles=1, layout=layout).sum())
    return total / n


def _settings(config: TrainConfig | dict | None, settings: dict, optimizer: Any) -> TrainConfig:
    base = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    if optimizer is not None:
        settings = {**settings, "optimizer": optimizer_name(optimizer)}
    cfg = TrainConfig.from_dict({**base, **settings}, "fit's settings")
    if optimizer is None:
        check_optimizer(cfg.optimizer)
    return cfg


def _check_data(
    pair: Pair,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    train_y: torch.Tensor | None,
    cfg: TrainConfig,
) -> bool:
    if wants_labels(pair.model) and train_y is None:
        raise ConfigError(f"{pair.name}.model takes labels y; pass train_y")
    if train_x.shape[0] == 0:
        raise ConfigError("the training data have no rows")
    if cfg.patience is not None and val_x is None:
        raise ConfigError("patience (early stopping) needs validation data: pass val_x")
    for name, x in (("train_x", train_x), ("val_x", val_x)):
        # a finite sum proves every entry finite, at a small fraction of isfinite's cost
        if x is not None and x.is_floating_point() and not bool(torch.isfinite(x.sum())):
            bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(-1).nonzero().flatten()
            if len(bad):
                raise DataError(
                    f"{name} has NaN or infinite values in {format_rows(bad, limit=5)} (from 0)"
                )
    return train_y is not None


def _batches(
    state: TrainState, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor | None, extra: tuple
) -> Iterator[tuple]:
    """The minibatches of the epoch under way, from where it stands (a resumed epoch goes on)."""
    n = x.shape[0]
    perm = torch.randperm(
        n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + state.epoch)
    )
    perm = perm.to(x.device)
    for step in range(state.step_in_epoch, state.steps_per_epoch):
        idx = distributed.shard(perm[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        xb = x[idx]
        if cfg.binarize == "dynamic":
            xb = torch.bernoulli(xb)
        rest, _ = take_rows(extra, {}, n, idx)
        yield ((xb,) if y is None else (xb, y[idx])) + rest


def fit(
    model: Any,
    train_x: Any,
    val_x: torch.Tensor | None = None,
    *more: Any,
    out: Any = None,
    train_y: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    resume: bool = False,
    override: bool = False,
    progress: bool | None = None,
    callbacks: Iterable[Any] = (),
    optimizer: str | Callable[..., torch.optim.Optimizer] | None = None,
    config: TrainConfig | dict | None = None,
    run_info: dict | None = None,
    model_args: tuple = (),
    data_plate: str | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Trains a model/guide pair by stochastic variational inference.

    Arguments:
        model: the pair to train (in place): a :class:`GenerativeModel`, any ``nn.Module`` with
            ``model`` and ``guide`` methods, a ``(model, guide)`` tuple, or the model callable
            followed by the guide (``fit(model, guide, train_x, ...)``, as Pyro's ``SVI``). Its
            ``pyro.param`` sites are trained beside its module parameters, each tensor once
            (``pyro.module`` registers the module's own). A pair of plain functions gets a fresh
            parameter scope for this fit (see :class:`pyrogen.trace.ParamScope`).
        train_x: training data [N, D]; ``val_x`` optional validation data.
        out: a run directory (path or :class:`~pyrogen.runs.RunDir`) for config.json,
            history.csv, checkpoint.pt and a copy of the model's source: a complete run that
            ``pyrogen evaluate/compare/report/sample`` and :func:`pyrogen.load_run` read.
            Locked while fit writes it.
        train_y, val_y: labels, passed to conditional models (``model(x, y)``).
        resume: continue the run in ``out`` from its checkpoint, to ``epochs`` epochs in all
            (default: the run's own). A setting given here that differs from the run's is refused
            unless ``override``, which records the change in config.json.
        progress: a tqdm bar; by default only when stderr is a terminal.
        callbacks: hooks with any of ``on_train_begin(state, config)``, ``on_step_end(state,
            metrics)``, ``on_epoch_end(state, row)``, ``on_train_end(state)`` (see
            :class:`pyrogen.train.hooks.Callback`); called on rank 0 only.
        optimizer: a name (``adam``, ``adamw``, ``sgd``, ``rmsprop`` or a torch.optim class
            name), a torch.optim class, a factory ``(params, lr=...) -> Optimizer`` or a
            ``pyro.optim`` optimizer; default Adam. Its state is checkpointed.
        config: a :class:`~pyrogen.train.config.TrainConfig` (or dict of its fields) that the
            keyword ``settings`` override.
        run_info: more to record in config.json (the command line's data description).
        model_args: further positional arguments of model and guide, after x (and y): a tensor
            whose first dimension is N is sliced with the minibatch (a mask, lengths), anything
            else passes unchanged (a temperature). Validation data need none batched.
        data_plate: the data plate's name, where two plates have the batch's size.
        **settings: fields of :class:`~pyrogen.train.config.TrainConfig`: ``epochs``,
            ``batch_size``, ``lr``, ``objective``, ``num_particles``, ``seed``, ``binarize``,
            ``lr_schedule``, ``kl_warmup``, ``clip_norm``, ``patience``, ``on_nan``, ``device``,
            ``data`` (the name of the data set the tensors come from), ...

    Returns:
        The history: one row per epoch with ``epoch``, ``train_elbo`` (nats per data point; NaN
        while the objective is not the plain ELBO), ``train_objective``, ``val_elbo``,
        ``kl_weight``, ``lr``, ``skipped`` (non-finite steps) and ``seconds``.

    Raises:
        ConfigError: an invalid setting (each named, before any work). ContractError: the pair
        breaks the contract. TrainingError: a non-finite loss or gradient with ``on_nan="stop"``,
        or an epoch without one finite step. Interrupted: SIGINT/SIGTERM (the message says what
        the run directory keeps). RunLocked: another process writes ``out``.
    """
    from pyrogen.runs.rundir import RunDir
    from pyrogen.runs.writing import open_for_training

    if callable(train_x) and not isinstance(train_x, torch.Tensor):  # fit(model, guide, x, ...)
        if len(more) > 1:
            raise ConfigError("fit takes (model, guide, train_x, val_x) at most, positionally")
        pair = as_pair(model, train_x)
        train_x, val_x = val_x, (more[0] if more else None)
        if train_x is None:
            raise ConfigError("fit(model, guide, train_x, ...) needs train_x")
    elif more:
        raise ConfigError("fit takes (pair, train_x, val_x) positionally; the rest by name")
    else:
        pair = as_pair(model)
    if out is not None and pair.module is None:
        raise ConfigError(
            "a run directory (out=) records the model's class to rebuild it: pass an nn.Module "
            "with model and guide methods, not plain functions"
        )
    if resume and out is None:
        raise ConfigError("resume needs the run directory (out=...)")
    cfg = _settings(config, settings, optimizer)
    labelled = _check_data(pair, train_x, val_x, train_y, cfg)
    if val_x is not None and val_x.shape[0] == 0:
        val_x = None
    run = None if out is None else (out if isinstance(out, RunDir) else RunDir(out))
    main = run is not None and distributed.is_main()
    lock = run.lock("train", create=True) if main else contextlib.nullcontext()
    with lock:
        checkpoint, commit = None, None
        if run is not None:
            cfg, checkpoint, commit = open_for_training(
                run,
                pair.module,
                cfg,
                train_x,
                val_x,
                train_y,
                val_y,
                resume,
                override,
                set(settings)
                | ({"optimizer"} if optimizer is not None else set())
                | set(config.to_dict() if isinstance(config, TrainConfig) else (config or {})),
                run_info,
            )
        return _train(
            pair,
            cfg,
            train_x,
            val_x,
            train_y if labelled else None,
            val_y if labelled else None,
            run,
            checkpoint,
            commit,
            progress,
            callbacks,
            optimizer,
            tuple(model_args),
            data_plate,
        )


def _train(
    pair: Pair,
    cfg: TrainConfig,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    train_y: torch.Tensor | None,
    val_y: torch.Tensor | None,
    run: Any,
    checkpoint: dict | None,
    commit: Callable[[], None] | None,
    progress: bool | None,
    callbacks: Iterable[Any],
    optimizer: Any,
    extra: tuple,
    data_plate: str | None,
) -> pd.DataFrame:
    module = pair.module if pair.module is not None else torch.nn.Module()
    scope = pair.scope if pair.module is not None else pair.new_scope()
    if cfg.device is not None:
        from pyrogen.cli.parser import _resolve_device

        module.to(_resolve_device(cfg.device))
    first = next(module.parameters(), None)
    dev = first.device if first is not None else train_x.device
    train_x, train_y = train_x.to(dev), train_y.to(dev) if train_y is not None else None
    val_x = val_x.to(dev) if val_x is not None else None
    val_y = val_y.to(dev) if val_y is not None else None
    with scope.active():
        objective, layout, pyro_names, probe = _probe(
            pair, cfg, train_x, train_y, val_x, extra, data_plate
        )
    if checkpoint is not None:
        load_parameters(module, checkpoint, str(run.checkpoint_path), scope)
    seed_everything(cfg.seed)
    distributed.seed_rank(cfg.seed)  # binarization and guide noise: one stream per rank

    steps_per_epoch = math.ceil(train_x.shape[0] / cfg.batch_size)
    params = [*module.parameters(), *pyro_parameters(pyro_names, scope)]
    if not params:
        raise ConfigError(f"{pair.name} has no parameters to train")
    opt = make_optimizer(optimizer if optimizer is not None else cfg.optimizer, params, cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.lr_schedule, cfg.epochs, steps_per_epoch)
    )
    state = TrainState(module, opt, scheduler, pyro_names, steps_per_epoch, scope=scope)
    if checkpoint is not None:
        state.restore(checkpoint, str(run.checkpoint_path))
        state.set_base_lr(cfg.lr)  # the checkpoint's optimizer holds the lr it was saved with
        distributed.restore_rng(checkpoint, cfg.seed)
        if not distributed.is_main():  # the checkpoint holds the sums of all ranks
            state.sums.update(objective=0.0, count=0)
    if commit is not None:  # the pair passed its checks and the checkpoint loaded
        commit()
    # one process: the objective itself; several: DDP all-reduces the gradients
    loss_fn = distributed.data_parallel(module, lambda m, a, b: objective(pair, a, b), probe)

    with _SignalGuard() as guard:
        checkpointer = Checkpointer(run, guard, CHECKPOINT_EVERY_S)
        checkpointer.start(state, checkpoint is not None)
        nan_policy = NanPolicy(cfg.on_nan, checkpointer)
        stopper = EarlyStopping(cfg.patience, cfg.kl_warmup)
        if progress is None:
            progress = sys.stderr.isatty() and distributed.is_main()
        users = list(callbacks) if distributed.is_main() else []
        bar = [Progress(cfg.epochs * steps_per_epoch)] if progress else []
        hooks = Hooks([nan_policy, *bar, stopper, *users, checkpointer])
        module.train()
        try:
            with pyro.validation_enabled(False), warnings.catch_warnings(), scope.active():
                hooks.on_train_begin(state, cfg.to_dict())
                # fit reports a non-finite loss itself (on_nan), so Pyro's would repeat it
                warnings.filterwarnings(
                    "ignore", message="Encountered (NaN|Inf)", category=UserWarning
                )
                _loop(
                    state,
                    cfg,
                    objective,
                    loss_fn,
                    hooks,
                    nan_policy,
                    stopper,
                    _Data(train_x, train_y, val_x, val_y, extra),
                    pair,
                    layout,
                )
        except KeyboardInterrupt:  # a second Ctrl-C: no new checkpoint, and none announced
            raise checkpointer.interrupted() from None
        finally:
            hooks.on_train_end(state)
            module.eval()
    return pd.DataFrame(state.history, columns=HISTORY_COLUMNS)


class _Data(NamedTuple):
    """The training and validation tensors, and the pair's further arguments."""

    train_x: torch.Tensor
    train_y: torch.Tensor | None
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    extra: tuple


def _probe(
    pair: Pair,
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor | None,
    val_x: torch.Tensor | None,
    extra: tuple,
    data_plate: str | None,
) -> tuple[Objective, Layout, tuple[str, ...], tuple]:
    """Checks the pair on a real first minibatch (of the batch size); returns the objective,
    the pair's layout, the ``pyro.param`` sites to train beside the module and the probe
    batch."""
    seed_everything(cfg.seed)
    n = min(x.shape[0], cfg.batch_size)
    probe_x = x[:n]
    if cfg.binarize == "dynamic":
        probe_x = torch.bernoulli(
            probe_x, generator=torch.Generator(x.device).manual_seed(cfg.seed)
        )
    rest, _ = take_rows(extra, {}, x.shape[0], slice(0, n))
    probe = ((probe_x,) if y is None else (probe_x, y[:n])) + rest
    cls = make_objective(cfg.objective, cfg.num_particles, 1).__class__
    # validation and the IWAE objectives need one importance weight per data point
    info = check_model(
        pair,
        *probe,
        per_datapoint=val_x is not None or cls.per_datapoint,
        all_rows=x if cfg.binarize != "dynamic" else None,
        reparametrized=cls.needs_rsample,
        data_plate=data_plate,
    )
    objective = make_objective(
        cfg.objective, cfg.num_particles, info.max_plate_nesting, info.layout
    )
    objective.check(info.layout)
    return objective, info.layout, pair.scoped_names(info.params), probe


def _loop(
    state: TrainState,
    cfg: TrainConfig,
    objective: Objective,
    loss_fn: Callable,
    hooks: Hooks,
    nan_policy: NanPolicy,
    stopper: EarlyStopping,
    data: _Data,
    pair: Pair,
    layout: Layout,
) -> None:
    """The epochs: steps, then validation, the history row and the epoch's hooks."""
    beta = kl_weight(cfg, state.steps_per_epoch, max(state.step - 1, 0))
    while state.epoch < cfg.epochs and not stopper.should_stop(state):
        steps = 0
        for args in _batches(state, cfg, data.train_x, data.train_y, data.extra):
            tick = time.perf_counter()
            beta = kl_weight(cfg, state.steps_per_epoch, state.step)
            metrics = train_step(state, loss_fn, args, beta, cfg.clip_norm)
            state.step += 1
            steps += 1
            n = args[0].shape[0]
            if metrics["skipped"]:
                state.sums["skipped"] += 1
            else:
                state.sums["objective"] += metrics["value"]
                state.sums["count"] += n
            # loss: -objective in nats per data point (the value, not a surrogate)
            metrics["loss"] = -metrics["value"] / max(n, 1)
            state.sums["seconds"] += time.perf_counter() - tick
            hooks.on_step_end(state, metrics)
        nan_policy.check_epoch(state, state.sums["skipped"], steps)
        tick = time.perf_counter()
        state.model.eval()
        val = (
            distributed.sharded_mean(
                lambda x, y: validation_elbo(pair, x, y, layout, extra=data.extra),
                data.val_x,
                data.val_y,
            )
            if data.val_x is not None
            else None
        )
        state.model.train()
        row = history_row(state, objective.reports_elbo, beta, val, time.perf_counter() - tick)
        state.history.append(row)
        state.epoch += 1
        state.sums = TrainState.empty_sums()
        hooks.on_epoch_end(state, row)
        if state.stop:
            break
