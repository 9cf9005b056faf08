"""What happens around the training steps, as hooks called by :func:`pyrogen.fit`'s loop.

A hook is any object with some of ``on_train_begin(state, config)``, ``on_step_end(state,
metrics)``, ``on_epoch_end(state, row)`` and ``on_train_end(state)``; :class:`Callback` is a base
class with all four as no-ops. ``state`` is the :class:`~pyrogen.train.state.TrainState`;
``metrics`` the dict of :func:`~pyrogen.train.step.train_step`; ``row`` the epoch's history row.
The built-in hooks, in the order fit calls them:

- :class:`NanPolicy`: a skipped (non-finite) step stops training or is counted; an epoch whose
  every step was skipped is an error (nothing was learnt).
- :class:`Progress`: a tqdm bar.
- :class:`EarlyStopping`: patience on the validation ELBO (not counted during KL warm-up).
- the user's callbacks (rank 0 only).
- :class:`Checkpointer`: the checkpoint and history.csv at the end of every epoch, every
  :data:`CHECKPOINT_EVERY_S` seconds within one, and at a signal, after which it stops training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from pyrogen import distributed
from pyrogen.train.interrupts import Interrupted, TrainingError, _SignalGuard
from pyrogen.train.state import TrainState

__all__ = [
    "CHECKPOINT_EVERY_S",
    "HISTORY_COLUMNS",
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "Hooks",
    "NanPolicy",
    "Progress",
]

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


class Callback:
    """Base class of a hook: every method is a no-op; override the ones you need."""

    def on_train_begin(self, state: TrainState, config: dict) -> None:
        """Before the first step (``config``: the run's settings)."""

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After each step (``metrics``: loss, value, grad_norm, lr, kl_weight, skipped)."""

    def on_epoch_end(self, state: TrainState, row: dict[str, float]) -> None:
        """After each epoch (``row``: the epoch's history row)."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last step, also when training stops on an error or a signal."""


class Hooks:
    """Calls a list of hooks in order; a hook may lack any of the methods."""

    def __init__(self, hooks: Iterable[Any]) -> None:
        self.hooks = list(hooks)

    def _call(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, method, None)
            if fn is not None:
                fn(*args)

    def on_train_begin(self, state: TrainState, config: dict) -> None:
        self._call("on_train_begin", state, config)

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._call("on_step_end", state, metrics)

    def on_epoch_end(self, state: TrainState, row: dict[str, float]) -> None:
        self._call("on_epoch_end", state, row)

    def on_train_end(self, state: TrainState) -> None:
        for hook in self.hooks:  # every hook closes, even when one of them fails
            fn = getattr(hook, "on_train_end", None)
            if fn is not None:
                try:
                    fn(state)
                except Exception:  # noqa: S110 - the training error is the one to report
                    pass


class NanPolicy(Callback):
    """``on_nan="stop"``: a step with a non-finite loss or gradient stops training (no update
    was made, so the parameters and the last checkpoint are sound); ``"skip"``: the step is
    counted in the history's ``skipped``. Either way an epoch of skipped steps only is an error.
    """

    def __init__(self, on_nan: str, checkpointer: Checkpointer) -> None:
        self.on_nan = on_nan
        self.checkpointer = checkpointer

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if not metrics["skipped"]:
            return
        if self.on_nan == "stop":
            loss = metrics["surrogate"]
            what = (
                f"loss ({loss})"
                if not math.isfinite(loss)
                else (f"gradient (norm {metrics['grad_norm']})")
            )
            raise TrainingError(
                f"non-finite {what} at epoch {state.epoch + 1}, step {state.step_in_epoch}; no "
                f"update was made and {self.checkpointer.kept()} (lower --lr, add --clip-norm, "
                "or use --on-nan skip)"
            )

    def check_epoch(self, state: TrainState, skipped: int, steps: int) -> None:
        if steps and skipped >= steps:
            raise TrainingError(
                f"every one of the {steps} steps of epoch {state.epoch + 1} was skipped "
                f"(non-finite loss or gradient): nothing was learnt; {self.checkpointer.kept()}"
            )


class Progress(Callback):
    """A tqdm bar over the steps (by default only when stderr is a terminal)."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)

    def on_train_begin(self, state: TrainState, config: dict) -> None:
        self.bar.update(state.step)

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(epoch=state.epoch + 1, objective=f"{-metrics['loss']:.2f}")

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


class EarlyStopping(Callback):
    """Stops when the validation ELBO has not improved for ``patience`` epochs; epochs of KL
    warm-up (whose ELBO is not yet the objective) never count."""

    def __init__(self, patience: int | None, kl_warmup: int) -> None:
        self.patience = patience
        self.kl_warmup = kl_warmup

    def should_stop(self, state: TrainState) -> bool:
        return self.patience is not None and state.since_best >= self.patience

    def on_epoch_end(self, state: TrainState, row: dict[str, float]) -> None:
        val = row["val_elbo"]
        if math.isnan(val):
            return
        if val > state.best:
            state.best, state.since_best = val, 0
        elif state.epoch > self.kl_warmup:
            state.since_best += 1
        state.stop = state.stop or self.should_stop(state)


class Checkpointer(Callback):
    """Writes the checkpoint and history.csv of a run directory (rank 0; the others join the
    collectives), at every epoch's end, every ``every_s`` seconds, and when a signal came, after
    which it raises :class:`~pyrogen.train.interrupts.Interrupted`.

    Arguments:
        run: the :class:`~pyrogen.runs.RunDir`, or None (nothing is written; signals still stop).
        guard: the signal guard of the loop.
        every_s: seconds between checkpoints within an epoch (one process only).
    """

    def __init__(self, run: Any, guard: _SignalGuard, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.run = run
        self.guard = guard
        self.every_s = every_s
        self.periodic = run is not None and distributed.world_size() == 1
        self.next_save = time.monotonic() + every_s
        self.written: tuple[int, int] | None = None  # (epoch, step) of the checkpoint on disk

    def start(self, state: TrainState, resumed: bool) -> None:
        if resumed:
            self.written = (state.epoch, state.step_in_epoch)

    def _at(self) -> str:
        epoch, step = self.written or (0, 0)
        return f"epoch {epoch}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")

    def kept(self) -> str:
        """What the run directory keeps, said truthfully."""
        if self.run is None:
            return "nothing is written without a run directory"
        if self.written is None:
            return "no checkpoint had been written yet"
        return f"the run keeps its last good checkpoint (after {self._at()})"

    def save(self, state: TrainState) -> None:
        if self.run is None:
            return
        rank_rngs = distributed.rng_states()  # collective, like the sums: every rank comes here
        total = distributed.sum_over_ranks(state.sums, ("objective", "count"))
        if not distributed.is_main():
            distributed.barrier()  # rank 0 alone writes
            return
        checkpoint = state.checkpoint(total, rank_rngs)  # refuses non-finite parameters
        with self.guard.writing():
            self.run.write_checkpoint(checkpoint)
            self.written = (state.epoch, state.step_in_epoch)
            self.run.write_history(state.history, HISTORY_COLUMNS)
        distributed.barrier()
        self.next_save = time.monotonic() + self.every_s

    def _stop_on_signal(self, state: TrainState) -> None:
        if signum := distributed.max_over_ranks(self.guard.signum):
            self.save(state)
            raise Interrupted(signum, self._announce(fresh=True))

    def _announce(self, fresh: bool) -> str:
        if self.run is None:
            return ""
        if self.written is None:
            return "no checkpoint had been written, so nothing of the run is kept"
        if fresh:
            return f"checkpoint written (after {self._at()}): continue with --resume"
        return f"no new checkpoint; {self.kept()}: continue with --resume"

    def on_step_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._stop_on_signal(state)
        if self.periodic and time.monotonic() >= self.next_save:
            self.save(state)

    def on_epoch_end(self, state: TrainState, row: dict[str, float]) -> None:
        self.save(state)
        if signum := distributed.max_over_ranks(self.guard.signum):
            raise Interrupted(signum, self._announce(fresh=True))

    def interrupted(self) -> Interrupted:
        """The exception for a second Ctrl-C, which stops without a new checkpoint."""
        import signal

        return Interrupted(signal.SIGINT, self._announce(fresh=False))


def history_row(
    state: TrainState, reports_elbo: bool, beta: float, val: float | None, seconds: float
) -> dict[str, float]:
    """The history row of the epoch that just ended (its sums summed over ranks)."""
    sums = distributed.sum_over_ranks(state.sums, ("objective", "count"))
    # an epoch whose batches were all skipped (on_nan skip) has no value: NaN
    objective_mean = sums["objective"] / sums["count"] if sums["count"] else math.nan
    plain_elbo = reports_elbo and beta == 1.0
    return {
        "epoch": state.epoch + 1,
        "train_elbo": objective_mean if plain_elbo else math.nan,
        "train_objective": objective_mean,
        "val_elbo": val if val is not None else math.nan,
        "kl_weight": beta,
        "lr": state.optimizer.param_groups[0]["lr"],
        "skipped": sums["skipped"],
        "seconds": sums["seconds"] + seconds,
    }
