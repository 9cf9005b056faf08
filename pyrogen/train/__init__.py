"""SVI training: objectives, the optimizer loop, KL warm-up, checkpoints and resuming.

:func:`fit` trains a model/guide pair (:mod:`pyrogen.train.loop`) on one of the
:data:`OBJECTIVES` (:mod:`pyrogen.train.objectives`): ``elbo`` (Pyro's ``Trace_ELBO``),
``mean-field`` (``TraceMeanField_ELBO``), ``iwae`` (Burda et al., 2015) or ``iwae-dreg``
(Tucker et al., 2019). Checkpoints are tensors-only and written atomically
(:mod:`pyrogen.train.checkpoints`); SIGINT/SIGTERM stop training at a step boundary after a
checkpoint (:mod:`pyrogen.train.interrupts`).
"""

# private names re-exported with `as` are those that pyrogen.runs and the tests import
from pyrogen.train.checkpoints import _first_reason as _first_reason
from pyrogen.train.checkpoints import load_checkpoint, save_checkpoint
from pyrogen.train.interrupts import Interrupted, TrainingError
from pyrogen.train.loop import (
    CHECKPOINT_EVERY_S,
    HISTORY_COLUMNS,
    SCHEDULES,
    fit,
    seed_everything,
    validation_elbo,
)
from pyrogen.train.objectives import OBJECTIVES, objective_loss
from pyrogen.train.objectives import _AnnealLatents as _AnnealLatents
from pyrogen.train.objectives import _trace_elbo_loss as _trace_elbo_loss

__all__ = [
    "CHECKPOINT_EVERY_S",
    "HISTORY_COLUMNS",
    "OBJECTIVES",
    "SCHEDULES",
    "Interrupted",
    "TrainingError",
    "fit",
    "load_checkpoint",
    "objective_loss",
    "save_checkpoint",
    "seed_everything",
    "validation_elbo",
]
