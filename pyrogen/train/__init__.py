"""SVI training: settings, state, objectives, the step, the hooks and the loop.

:class:`TrainConfig` (:mod:`pyrogen.train.config`) is the one list of training settings;
:class:`TrainState` (:mod:`pyrogen.train.state`) what a step carries and a checkpoint holds;
:func:`fit` (:mod:`pyrogen.train.loop`) a short loop over :func:`train_step`
(:mod:`pyrogen.train.step`) and the hooks of :mod:`pyrogen.train.hooks` (checkpoints, validation
and early stopping, progress, signals, the NaN policy, user callbacks). The objectives
(:mod:`pyrogen.train.objectives`) are small classes in a registry users add to.
"""

# private names re-exported with `as` are those that pyrogen.runs and the tests import
from pyrogen.train.checkpoints import _first_reason as _first_reason
from pyrogen.train.checkpoints import load_checkpoint, save_checkpoint
from pyrogen.train.config import OPTIMIZERS, SCHEDULES, TrainConfig
from pyrogen.train.hooks import CHECKPOINT_EVERY_S, HISTORY_COLUMNS, Callback
from pyrogen.train.interrupts import Interrupted, TrainingError
from pyrogen.train.loop import fit, seed_everything, validation_elbo
from pyrogen.train.objectives import (
    OBJECTIVES,
    Objective,
    make_objective,
    objective_loss,
    register_objective,
)
from pyrogen.train.objectives import _AnnealLatents as _AnnealLatents
from pyrogen.train.state import TrainState
from pyrogen.train.step import train_step

__all__ = [
    "CHECKPOINT_EVERY_S",
    "HISTORY_COLUMNS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "Interrupted",
    "Objective",
    "TrainConfig",
    "TrainState",
    "TrainingError",
    "fit",
    "load_checkpoint",
    "make_objective",
    "objective_loss",
    "register_objective",
    "save_checkpoint",
    "seed_everything",
    "train_step",
    "validation_elbo",
]
