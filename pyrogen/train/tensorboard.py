"""TensorBoard logging of a training run: a callback for ``fit`` and the bounds of an evaluation.

:class:`TensorBoardLogger` writes event files that ``tensorboard --logdir DIR`` shows while a run
trains: per step the loss (-objective, nats per data point), learning rate, gradient norm and KL
weight; per epoch the training and validation ELBO (nats per data point); and, through
:func:`log_bounds`, the bounds table of an evaluation (ELBO, IWAE_k, log p(x), median ESS and
k-hat) at a step. It needs the ``tensorboard`` package: ``pip install 'pyrogen[tensorboard]'``.

The callback is duck-typed: ``fit`` calls ``on_train_begin(state, config)``,
``on_step_end(state, metrics)``, ``on_epoch_end(state, row)`` and ``on_train_end(state)``, where
``state`` has ``.epoch`` and ``.step``.

Example:
    >>> logger = TensorBoardLogger("runs/tb")                              # doctest: +SKIP
    >>> pyrogen.fit(vae, train.x, val.x, epochs=30, callbacks=[logger])   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyrogen.errors import ConfigError

__all__ = [
    "INSTALL_HINT",
    "TensorBoardLogger",
    "log_bounds",
    "log_run_bounds",
    "summary_writer",
    "tensorboard_callbacks",
]

INSTALL_HINT = "pip install 'pyrogen[tensorboard]' (or: pip install tensorboard)"

#: the per-epoch history columns and their TensorBoard tags
EPOCH_TAGS = {
    "train_elbo": "elbo/train",
    "val_elbo": "elbo/val",
    "train_objective": "objective/train",
    "kl_weight": "epoch/kl_weight",
    "lr": "epoch/lr",
    "grad_norm": "epoch/grad_norm",
    "seconds": "epoch/seconds",
}
#: the per-step metrics and their tags
STEP_TAGS = {
    "loss": "step/loss",
    "lr": "step/lr",
    "grad_norm": "step/grad_norm",
    "kl_weight": "step/kl_weight",
}


def summary_writer(log_dir: str | os.PathLike) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``.

    Raises:
        ConfigError: the ``tensorboard`` package is not installed; the message says how to.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is missing
        raise ConfigError(
            f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}"
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def log_bounds(writer: Any, summary: Any, step: int, prefix: str = "bounds") -> None:
    """Logs an evaluation's bounds table (one row per k, see ``pyrogen.bounds.summarize``).

    Scalars ``{prefix}/{bound}`` (ELBO, IWAE_k: nats per data point), ``{prefix}/log_px`` (the
    largest k), ``{prefix}/ess_{bound}``, ``{prefix}/khat`` (median) and ``{prefix}/khat_gt_0.7``,
    and the whole table as text under ``{prefix}``.
    """
    rows = summary.to_dict("records")
    for row in rows:
        name = str(row.get("bound", f"k={row.get('k')}"))
        if (v := _finite(row.get("estimate"))) is not None:
            writer.add_scalar(f"{prefix}/{name}", v, step)
        if (v := _finite(row.get("ess"))) is not None:
            writer.add_scalar(f"{prefix}/ess_{name}", v, step)
    if rows:
        last = rows[-1]
        for key, tag in (("estimate", "log_px"), ("khat", "khat"), ("khat_gt_0.7", "khat_gt_0.7")):
            if (v := _finite(last.get(key))) is not None:
                writer.add_scalar(f"{prefix}/{tag}", v, step)
    writer.add_text(prefix, "<pre>" + summary.to_string(index=False) + "</pre>", step)
    writer.flush()


class TensorBoardLogger:
    """A ``fit`` callback writing TensorBoard event files into ``log_dir``.

    Arguments:
        log_dir: the folder of the event files (``tensorboard --logdir`` it).
        every_n_steps: log the per-step metrics every this many steps (the per-epoch history
            is always logged).

    Raises:
        ConfigError: the ``tensorboard`` package is not installed (at construction, so a run
            fails before it trains).
    """

    def __init__(self, log_dir: str | os.PathLike, every_n_steps: int = 10) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        self.log_dir = Path(log_dir)
        self.every_n_steps = every_n_steps
        self.writer = summary_writer(self.log_dir)

    def on_train_begin(self, state: Any, config: Any = None) -> None:
        if config:
            try:
                text = json.dumps(
                    config if isinstance(config, Mapping) else vars(config), indent=2, default=str
                )
            except TypeError:
                text = repr(config)
            self.writer.add_text("config", f"<pre>{text}</pre>", int(getattr(state, "step", 0)))

    def on_step_end(self, state: Any, metrics: Mapping[str, float]) -> None:
        step = int(state.step)
        if step % self.every_n_steps:
            return
        for key, tag in STEP_TAGS.items():
            if (v := _finite(metrics.get(key))) is not None:
                self.writer.add_scalar(tag, v, step)

    def on_epoch_end(self, state: Any, row: Mapping[str, float]) -> None:
        epoch = int(row.get("epoch", getattr(state, "epoch", 0)))
        for key, tag in EPOCH_TAGS.items():
            if (v := _finite(row.get(key))) is not None:
                self.writer.add_scalar(tag, v, epoch)
        self.writer.flush()

    def log_bounds(self, summary: Any, step: int) -> None:
        """The bounds table of an evaluation at ``step`` (see :func:`log_bounds`)."""
        log_bounds(self.writer, summary, step)

    def on_train_end(self, state: Any) -> None:
        self.close()

    def close(self) -> None:
        """Flushes and closes the event file (a later write opens a new one)."""
        self.writer.close()


def tensorboard_callbacks(log_dir: str | os.PathLike | None) -> list[TensorBoardLogger]:
    """``[TensorBoardLogger(log_dir)]``, or ``[]`` without a folder (the command line's wiring)."""
    return [TensorBoardLogger(log_dir)] if log_dir else []


def log_run_bounds(log_dir: str | os.PathLike, run_dir: str | os.PathLike, summary: Any) -> None:
    """Logs a run's bounds table into ``log_dir`` at the run's last epoch (its history's length)."""
    history = Path(run_dir) / "history.csv"
    step = max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0
    writer = summary_writer(log_dir)
    try:
        log_bounds(writer, summary, step)
    finally:
        writer.close()
