"""The SVI optimizer loop: :func:`fit`, with learning-rate schedules, KL warm-up, validation,
early stopping, periodic checkpoints and exact resuming.

One torch optimizer (Adam) holds all parameters; the objectives are in
:mod:`pyrogen.train.objectives` and the checkpoint files in :mod:`pyrogen.train.checkpoints`.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch

from pyrogen import distributed
from pyrogen.atomic import write_text
from pyrogen.bounds import log_weights
from pyrogen.errors import ConfigError, DataError, RunDirError, format_rows
from pyrogen.model import GenerativeModel, check_model, wants_labels
from pyrogen.train.checkpoints import (
    _first_reason,
    load_checkpoint,
    save_checkpoint,
)
from pyrogen.train.interrupts import Interrupted, TrainingError, _SignalGuard
from pyrogen.train.objectives import OBJECTIVES, _make_elbo, objective_loss

__all__ = [
    "CHECKPOINT_EVERY_S",
    "HISTORY_COLUMNS",
    "SCHEDULES",
    "fit",
    "seed_everything",
    "validation_elbo",
]

SCHEDULES = ("constant", "cosine", "step")
CHECKPOINT_EVERY_S = 600.0
"""Also checkpoint mid-epoch when this many seconds passed since the last checkpoint (one
process), so that a killed run with long epochs loses minutes, not an epoch; resuming mid-epoch
is exact."""
HISTORY_COLUMNS = [
    "epoch",
    "train_elbo",
    "train_objective",
    "val_elbo",
    "kl_weight",
    "lr",
    "skipped",
    "seconds",
]


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, torch and Pyro."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds code that uses the global NumPy RNG
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def _lr_lambda(schedule: str, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, epochs * steps_per_epoch)
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    # "step": divide by 10 at half and three quarters of training
    return lambda step: 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4))


@torch.no_grad()
def validation_elbo(
    model: GenerativeModel,
    x: torch.Tensor,
    y: torch.Tensor | None,
    nesting: int,
    batch_size: int = 1000,
) -> float:
    """Mean single-sample ELBO per data point on ``x`` (nats)."""
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


def _check_positive(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int | float) or value <= 0):
        raise ConfigError(f"{name} must be positive, got {value}")


def fit(
    model: GenerativeModel,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    objective: str = "elbo",
    num_particles: int = 1,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    train_y: torch.Tensor | None = None,
    val_y: torch.Tensor | None = None,
    binarize: str | None = None,
    lr_schedule: str = "constant",
    kl_warmup: int = 0,
    clip_norm: float | None = None,
    patience: int | None = None,
    on_nan: str = "stop",
    progress: bool | None = None,
    resume: bool = False,
    config: dict | None = None,
    device: str | torch.device | None = None,
    callbacks: Any = (),
    optimizer: Callable[..., torch.optim.Optimizer] | None = None,
) -> pd.DataFrame:
    """Trains a model/guide pair by stochastic variational inference.

    Arguments:
        model: the :class:`GenerativeModel` to train (in place).
        train_x: training data [N, D]; ``val_x`` optional validation data.
        epochs: number of passes over ``train_x`` (the total, also when resuming).
        batch_size: minibatch size; under torch.distributed (torchrun), the global batch, split
            across the ranks (see :mod:`pyrogen.distributed`).
        lr: Adam's learning rate.
        objective: ``elbo`` (Trace_ELBO), ``mean-field`` (TraceMeanField_ELBO), ``iwae`` or
            ``iwae-dreg``.
        num_particles: ELBO particles, or k of the IWAE objectives.
        seed: seeds torch, Pyro, NumPy and the shuffling.
        out: run directory for ``config.json``, ``history.csv`` and ``checkpoint.pt``.
        train_y, val_y: labels, passed to conditional models (``model(x, y)``).
        binarize: ``"dynamic"`` draws x ~ Bernoulli(train_x) afresh for every batch.
        lr_schedule: ``constant``, ``cosine`` (to zero) or ``step`` (/10 at 1/2 and 3/4).
        kl_warmup: epochs over which the weight of the latent sites rises linearly to 1.
        clip_norm: clip the global gradient norm to this value.
        patience: stop when the validation ELBO has not improved for this many epochs,
            counted from the end of the KL warm-up (epochs of warm-up never count).
        on_nan: ``stop`` (raise :class:`TrainingError`) or ``skip`` the batch and count it.
        progress: a tqdm bar; by default only when stderr is a terminal.
        resume: continue the run in ``out`` from its checkpoint.
        config: extra settings recorded in ``config.json``.
        device: where to train (default: where the model's parameters are).
        callbacks: objects with ``on_train_begin(state, config)``, ``on_step_end(state,
            metrics)``, ``on_epoch_end(state, row)`` and ``on_train_end(state)`` (e.g.
            :class:`pyrogen.train.tensorboard.TensorBoardLogger`); called on rank 0 only.
        optimizer: a torch.optim class or a factory ``(params, lr=...) -> Optimizer`` (e.g.
            :class:`pyrogen.optim.AdamNormGrad`); default Adam. Its state is checkpointed and
            restored on resume.

    Returns:
        The history: one row per epoch with ``epoch``, ``train_elbo`` (nats per data point; NaN
        while the objective is not the plain ELBO), ``train_objective``, ``val_elbo``,
        ``kl_weight``, ``lr``, ``skipped`` (non-finite batches) and ``seconds``.

    Raises:
        ConfigError: an invalid option. ContractError: the pair breaks the contract.
        TrainingError: a non-finite loss with ``on_nan="stop"``. Interrupted: SIGINT/SIGTERM,
        after a checkpoint was written.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"particles must be a positive integer, got {num_particles}")
    _check_positive("lr", lr)
    _check_positive("clip_norm", clip_norm)
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
    if lr_schedule not in SCHEDULES:
        raise ConfigError(
            f"unknown lr schedule '{lr_schedule}': choose one of {', '.join(SCHEDULES)}"
        )
    if on_nan not in ("stop", "skip"):
        raise ConfigError(f"on_nan must be 'stop' or 'skip', got '{on_nan}'")
    if binarize not in (None, "none", "dynamic", "static"):
        raise ConfigError(f"binarize must be dynamic, static or none, got '{binarize}'")
    if kl_warmup < 0:
        raise ConfigError(f"kl_warmup must be >= 0 epochs, got {kl_warmup}")
    labelled = wants_labels(model.model)
    if labelled and train_y is None:
        raise ConfigError(f"{type(model).__name__}.model takes labels y; pass train_y")
    if val_x is not None and val_x.shape[0] == 0:
        val_x = None
    if train_x.shape[0] == 0:
        raise ConfigError("the training data have no rows")
    for name, x in (("train_x", train_x), ("val_x", val_x)):
        # a finite sum proves every entry finite, at a small fraction of isfinite's cost
        if x is not None and x.is_floating_point() and not bool(torch.isfinite(x.sum())):
            bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(-1).nonzero().flatten()
            if len(bad):
                raise DataError(
                    f"{name} has NaN or infinite values in {format_rows(bad, limit=5)} (from 0)"
                )

    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    train_x = train_x.to(dev)
    val_x = val_x.to(dev) if val_x is not None else None
    train_y = train_y.to(dev) if (labelled and train_y is not None) else None
    val_y = val_y.to(dev) if (labelled and val_y is not None) else None

    out_dir = Path(out) if out is not None else None
    ckpt_path = out_dir / "checkpoint.pt" if out_dir is not None else None
    state = None
    if resume:
        if ckpt_path is None:
            raise ConfigError("resume needs the run directory (out=...)")
        state = load_checkpoint(ckpt_path)
        for stale in out_dir.glob(".*.tmp*") if distributed.is_main() else ():
            stale.unlink(missing_ok=True)  # half-written by a killed run; never read
    elif out_dir is not None and ckpt_path.exists():
        raise RunDirError(f"{out_dir} already holds a run; resume it or choose another directory")

    seed_everything(seed)
    probe_n = min(train_x.shape[0], 8)
    probe_x = train_x[:probe_n]
    if binarize == "dynamic":
        probe_x = torch.bernoulli(probe_x, generator=torch.Generator(dev).manual_seed(seed))
    probe = (probe_x,) if not labelled else (probe_x, train_y[:probe_n])
    # validation and the IWAE objectives need one importance weight per data point
    info = check_model(
        model,
        *probe,
        per_datapoint=val_x is not None or objective.startswith("iwae"),
        all_rows=train_x if binarize != "dynamic" else None,
    )
    nesting = info.max_plate_nesting
    seed_everything(seed)
    distributed.seed_rank(seed)  # binarization and guide noise: one stream per rank

    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    # foreach: the multi-tensor Adam, bitwise the same update as the default per-tensor loop on CPU
    optimizer_factory = optimizer
    if optimizer_factory is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    else:
        optimizer = optimizer_factory(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(lr_schedule, epochs, steps_per_epoch)
    )
    elbo = _make_elbo(objective, num_particles, nesting)

    rows: list[dict] = []
    start_epoch, start_step = 0, 0
    sums = {"objective": 0.0, "count": 0, "skipped": 0, "seconds": 0.0}
    best, since_best = -math.inf, 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            distributed.restore_rng(state, seed)
            start_epoch, start_step = int(state["epoch"]), int(state["step"])
            rows = [dict(r) for r in state["history"]]
            sums = dict(state["sums"])
            if not distributed.is_main():  # the checkpoint holds the sums of all ranks
                sums.update(objective=0.0, count=0)
            best, since_best = float(state["best"]), int(state["since_best"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"lacks {e}" if isinstance(e, KeyError) else _first_reason(e)
            raise RunDirError(
                f"checkpoint {ckpt_path} does not fit this model and run: {what[:300]}"
            ) from None

    if out_dir is not None and distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        if state is not None:  # a kill between checkpoint.pt and history.csv: the latter catches up
            write_text(
                out_dir / "history.csv",
                pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False),
            )
        if not resume:
            settings = {
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "objective": objective,
                "num_particles": num_particles,
                "seed": seed,
                "binarize": binarize,
                "lr_schedule": lr_schedule,
                "kl_warmup": kl_warmup,
                "clip_norm": clip_norm,
                "patience": patience,
                "on_nan": on_nan,
                "optimizer": getattr(optimizer_factory, "__name__", None)
                if optimizer_factory is not None
                else "Adam",
                "model_class": type(model).__name__,
                "versions": _versions(),
            }
            settings.update(config or {})
            write_text(out_dir / "config.json", json.dumps(settings, indent=2, default=str) + "\n")

    def checkpoint(epoch: int, step: int) -> None:
        if ckpt_path is None:
            return
        rank_rngs = distributed.rng_states()  # collective, like the sums: every rank comes here
        total = distributed.sum_over_ranks(sums, ("objective", "count"))
        if not distributed.is_main():
            distributed.barrier()  # rank 0 alone writes
            return
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
                "step": step,
                "history": rows,
                "sums": total,
                "best": best,
                "since_best": since_best,
                **rank_rngs,
            },
        )
        write_text(
            out_dir / "history.csv", pd.DataFrame(rows, columns=HISTORY_COLUMNS).to_csv(index=False)
        )
        distributed.barrier()

    if progress is None:
        progress = sys.stderr.isatty() and distributed.is_main()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs * steps_per_epoch,
            initial=start_epoch * steps_per_epoch + start_step,
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
    warmup_steps = kl_warmup * steps_per_epoch
    # one process: objective_loss itself; several: DDP all-reduces the gradients
    step_loss = distributed.data_parallel(
        model,
        lambda m, a, b: objective_loss(m, a, objective, num_particles, nesting, elbo, b),
        probe,
    )
    model.train()
    callbacks = list(callbacks) if distributed.is_main() else []  # (callbacks, #14)
    cb_state = SimpleNamespace(epoch=start_epoch, step=start_epoch * steps_per_epoch + start_step)
    for cb in callbacks:
        cb.on_train_begin(cb_state, config)
    periodic = ckpt_path is not None and distributed.world_size() == 1  # no collective needed
    next_save = time.monotonic() + CHECKPOINT_EVERY_S
    try:
        with _SignalGuard() as guard, pyro.validation_enabled(False), warnings.catch_warnings():
            # fit reports a non-finite loss itself (on_nan), so Pyro's warning would repeat it
            warnings.filterwarnings("ignore", message="Encountered (NaN|Inf)", category=UserWarning)
            for epoch in range(start_epoch, epochs):
                if since_best >= (patience or math.inf):
                    break
                perm = torch.randperm(
                    n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)
                )
                perm = perm.to(dev)
                first = start_step if epoch == start_epoch else 0
                for step in range(first, steps_per_epoch):
                    tick = time.perf_counter()
                    idx = distributed.shard(perm[step * batch_size : (step + 1) * batch_size])
                    xb = train_x[idx]
                    if binarize == "dynamic":
                        xb = torch.bernoulli(xb)
                    args = (xb,) if not labelled else (xb, train_y[idx])
                    global_step = epoch * steps_per_epoch + step
                    beta = min(1.0, (global_step + 1) / warmup_steps) if warmup_steps else 1.0
                    loss, value = step_loss(args, beta)
                    optimizer.zero_grad(set_to_none=True)
                    # the step's one host sync, before backward: on_nan needs it ahead of the update
                    loss_f, value_f = float(loss.detach()), float(value)
                    if not distributed.all_ranks(math.isfinite(loss_f)):
                        if on_nan == "stop":
                            kept = (
                                "the run keeps its last good checkpoint"
                                if ckpt_path is not None and ckpt_path.exists()
                                else "no checkpoint had been written yet"
                            )
                            raise TrainingError(
                                f"non-finite loss ({loss_f}) at epoch {epoch + 1}, step "
                                f"{step + 1}; {kept} "
                                "(lower --lr, add --clip-norm, or use --on-nan skip)"
                            )
                        sums["skipped"] += 1
                    else:
                        loss.backward()
                        if clip_norm:
                            grad_norm = torch.nn.utils.clip_grad_norm_(
                                model.parameters(), clip_norm
                            )
                        optimizer.step()
                        sums["objective"] += value_f
                        sums["count"] += xb.shape[0]
                    if callbacks:  # (callbacks, #14)
                        cb_state.epoch, cb_state.step = epoch, global_step + 1
                        # loss: -objective in nats per data point (the value, not a surrogate)
                        metrics = {"loss": -value_f / len(idx), "kl_weight": beta}
                        metrics["lr"] = optimizer.param_groups[0]["lr"]
                        if clip_norm and math.isfinite(loss_f):
                            metrics["grad_norm"] = float(grad_norm)
                        for cb in callbacks:
                            cb.on_step_end(cb_state, metrics)
                    scheduler.step()
                    sums["seconds"] += time.perf_counter() - tick
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, objective=f"{value_f / len(idx):.2f}")
                    if signum := distributed.max_over_ranks(guard.signum):
                        checkpoint(epoch, step + 1)
                        raise Interrupted(signum)
                    if periodic and time.monotonic() >= next_save:
                        checkpoint(epoch, step + 1)
                        next_save = time.monotonic() + CHECKPOINT_EVERY_S
                tick = time.perf_counter()
                model.eval()
                val = (
                    distributed.sharded_mean(
                        lambda x, y: validation_elbo(model, x, y, nesting), val_x, val_y
                    )
                    if val_x is not None
                    else None
                )
                model.train()
                sums = distributed.sum_over_ranks(sums, ("objective", "count"))
                # an epoch whose batches were all skipped (--on-nan skip) has no value: NaN
                objective_mean = sums["objective"] / sums["count"] if sums["count"] else math.nan
                plain_elbo = objective in ("elbo", "mean-field") and beta == 1.0
                rows.append(
                    {
                        "epoch": epoch + 1,
                        "train_elbo": objective_mean if plain_elbo else math.nan,
                        "train_objective": objective_mean,
                        "val_elbo": val if val is not None else math.nan,
                        "kl_weight": beta,
                        "lr": optimizer.param_groups[0]["lr"],
                        "skipped": sums["skipped"],
                        "seconds": sums["seconds"] + time.perf_counter() - tick,
                    }
                )
                sums = {"objective": 0.0, "count": 0, "skipped": 0, "seconds": 0.0}
                cb_state.epoch = epoch + 1  # (callbacks, #14)
                for cb in callbacks:
                    cb.on_epoch_end(cb_state, rows[-1])
                if val is not None:
                    if val > best:
                        best, since_best = val, 0
                    elif epoch + 1 > kl_warmup:  # patience counts from the end of the warm-up
                        since_best += 1
                checkpoint(epoch + 1, 0)
                next_save = time.monotonic() + CHECKPOINT_EVERY_S
                if signum := distributed.max_over_ranks(guard.signum):
                    raise Interrupted(signum)
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        if bar is not None:
            bar.close()
        for cb in callbacks:  # (callbacks, #14)
            cb.on_train_end(cb_state)
        model.eval()
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _versions() -> dict[str, str]:
    import arviz
    import sklearn

    import pyrogen

    return {
        "pyrogen": pyrogen.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "arviz": arviz.__version__,
        "sklearn": sklearn.__version__,
    }
