"""Run directories: :class:`RunDir`, their one reader and writer, and the Python peers of the
commands that read them (:func:`load_run`, :func:`evaluate_run`).

A run written by :func:`pyrogen.fit` with ``out=DIR`` is the same kind of run as one written by
``pyrogen train``: every command and function here reads both.
"""

from pyrogen.runs.api import (
    Run,
    RunEvaluation,
    evaluate_run,
    load_run,
    load_run_data,
    read_config,
)
from pyrogen.runs.models import build_model, coerce_options, load_model_class, zoo_dir, zoo_models
from pyrogen.runs.rundir import (
    CONFIG_FORMAT,
    Evaluation,
    MissingSetting,
    RunConfig,
    RunDir,
    RunLocked,
)

__all__ = [
    "CONFIG_FORMAT",
    "Evaluation",
    "MissingSetting",
    "Run",
    "RunConfig",
    "RunDir",
    "RunEvaluation",
    "RunLocked",
    "build_model",
    "coerce_options",
    "evaluate_run",
    "load_model_class",
    "load_run",
    "load_run_data",
    "read_config",
    "zoo_dir",
    "zoo_models",
]
