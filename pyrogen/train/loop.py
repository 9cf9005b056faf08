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
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch

from pyrogen import distributed
from pyrogen.bounds import log_weights
from pyrogen.errors import ConfigError, DataError, format_rows
from pyrogen.model import GenerativeModel, check_model, wants_labels
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
    model: GenerativeModel,
    x: torch.Tensor,
    y: torch.Tensor | None,
    nesting: int,
    batch_size: int = 1000,
) -> float:
    """Mean single-sample ELBO per data point on ``x`` (nats): the mean over points of one
    log-weight each, log p(x, z) - log q(z | x) with z ~ q(z | x)."""
    total = 0.0
    for s in range(0, x.shape[0], batch_size):
        args = (
            (x[s : s + batch_size],)
            if y is None
            else (x[s : s + batch_size], y[s : s + batch_size])
        )
        total += float(
            log_weights(
                model.model, model.guide, *args, num_particles=1, max_plate_nesting=nesting
            ).sum()
        )
    return total / x.shape[0]


def _settings(config: TrainConfig | dict | None, settings: dict, optimizer: Any) -> TrainConfig:
    base = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
    if optimizer is not None:
        settings = {**settings, "optimizer": optimizer_name(optimizer)}
    cfg = TrainConfig.from_dict({**base, **settings}, "fit's settings")
    if optimizer is None:
        check_optimizer(cfg.optimizer)
    return cfg


def _check_data(
    model: GenerativeModel,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    train_y: torch.Tensor | None,
    cfg: TrainConfig,
) -> bool:
    labelled = wants_labels(model.model)
    if labelled and train_y is None:
        raise ConfigError(f"{type(model).__name__}.model takes labels y; pass train_y")
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
    return labelled


def _batches(
    state: TrainState, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor | None
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
        yield (xb,) if y is None else (xb, y[idx])


def fit(
    model: GenerativeModel,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None = None,
    *,
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
    **settings: Any,
) -> pd.DataFrame:
    """Trains a model/guide pair by stochastic variational inference.

    Arguments:
        model: the :class:`GenerativeModel` to train (in place). Its ``pyro.param`` sites are
            trained beside its module parameters.
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

    if resume and out is None:
        raise ConfigError("resume needs the run directory (out=...)")
    cfg = _settings(config, settings, optimizer)
    labelled = _check_data(model, train_x, val_x, train_y, cfg)
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
                model,
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
            model,
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
        )


def _train(
    model: GenerativeModel,
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
) -> pd.DataFrame:
    if cfg.device is not None:
        from pyrogen.cli.parser import _resolve_device

        model.to(_resolve_device(cfg.device))
    dev = next(model.parameters()).device
    train_x, train_y = train_x.to(dev), train_y.to(dev) if train_y is not None else None
    val_x = val_x.to(dev) if val_x is not None else None
    val_y = val_y.to(dev) if val_y is not None else None
    objective, nesting, pyro_names, probe = _probe(model, cfg, train_x, train_y, val_x)
    if checkpoint is not None:
        load_parameters(model, checkpoint, str(run.checkpoint_path))
    seed_everything(cfg.seed)
    distributed.seed_rank(cfg.seed)  # binarization and guide noise: one stream per rank

    steps_per_epoch = math.ceil(train_x.shape[0] / cfg.batch_size)
    params = [*model.parameters(), *pyro_parameters(pyro_names)]
    opt = make_optimizer(optimizer if optimizer is not None else cfg.optimizer, params, cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.lr_schedule, cfg.epochs, steps_per_epoch)
    )
    state = TrainState(model, opt, scheduler, pyro_names, steps_per_epoch)
    if checkpoint is not None:
        state.restore(checkpoint, str(run.checkpoint_path))
        state.set_base_lr(cfg.lr)  # the checkpoint's optimizer holds the lr it was saved with
        distributed.restore_rng(checkpoint, cfg.seed)
        if not distributed.is_main():  # the checkpoint holds the sums of all ranks
            state.sums.update(objective=0.0, count=0)
    if commit is not None:  # the pair passed its checks and the checkpoint loaded
        commit()
    # one process: the objective itself; several: DDP all-reduces the gradients
    loss_fn = distributed.data_parallel(model, lambda m, a, b: objective(m, a, b), probe)

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
        model.train()
        hooks.on_train_begin(state, cfg.to_dict())
        try:
            with pyro.validation_enabled(False), warnings.catch_warnings():
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
                    train_x,
                    train_y,
                    val_x,
                    val_y,
                    nesting,
                )
        except KeyboardInterrupt:  # a second Ctrl-C: no new checkpoint, and none announced
            raise checkpointer.interrupted() from None
        finally:
            hooks.on_train_end(state)
            model.eval()
    return pd.DataFrame(state.history, columns=HISTORY_COLUMNS)


def _probe(
    model: GenerativeModel,
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor | None,
    val_x: torch.Tensor | None,
) -> tuple[Objective, int, tuple[str, ...], tuple]:
    """Checks the pair on a few rows; returns the objective, the plate depth, the pyro.param
    sites and the probe batch."""
    seed_everything(cfg.seed)
    n = min(x.shape[0], 8)
    probe_x = x[:n]
    if cfg.binarize == "dynamic":
        probe_x = torch.bernoulli(
            probe_x, generator=torch.Generator(x.device).manual_seed(cfg.seed)
        )
    probe = (probe_x,) if y is None else (probe_x, y[:n])
    cls = make_objective(cfg.objective, cfg.num_particles, 1).__class__
    # validation and the IWAE objectives need one importance weight per data point
    info = check_model(
        model,
        *probe,
        per_datapoint=val_x is not None or cls.per_datapoint,
        all_rows=x if cfg.binarize != "dynamic" else None,
        reparametrized=cls.needs_rsample,
    )
    objective = make_objective(cfg.objective, cfg.num_particles, info.max_plate_nesting)
    return objective, info.max_plate_nesting, info.params, probe


def _loop(
    state: TrainState,
    cfg: TrainConfig,
    objective: Objective,
    loss_fn: Callable,
    hooks: Hooks,
    nan_policy: NanPolicy,
    stopper: EarlyStopping,
    train_x: torch.Tensor,
    train_y: torch.Tensor | None,
    val_x: torch.Tensor | None,
    val_y: torch.Tensor | None,
    nesting: int,
) -> None:
    """The epochs: steps, then validation, the history row and the epoch's hooks."""
    beta = kl_weight(cfg, state.steps_per_epoch, max(state.step - 1, 0))
    while state.epoch < cfg.epochs and not stopper.should_stop(state):
        steps = 0
        for args in _batches(state, cfg, train_x, train_y):
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
                lambda x, y: validation_elbo(state.model, x, y, nesting), val_x, val_y
            )
            if val_x is not None
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
