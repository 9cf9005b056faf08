"""pyrogen: deep latent-variable generative models on Pyro, with honest likelihoods.

Write a model/guide pair as a :class:`GenerativeModel`, train it with :func:`fit`, and compare the
ELBO, IWAE_k and the importance-sampled log p(x) per data point with :func:`evaluate`. A run
directory written by ``fit(..., out=DIR)`` or ``pyrogen train`` is loaded with :func:`load_run`,
evaluated with :func:`evaluate_run`, put side by side with :func:`compare` and reported with
:func:`report`: the peers of ``pyrogen evaluate``, ``compare`` and ``report``.
"""

import pyro

from pyrogen.bounds import Evaluation, estimate, evaluate, iwae, log_weights, summarize
from pyrogen.bounds.ais import AISResult, ais
from pyrogen.bounds.bdmc import BDMCResult, bdmc
from pyrogen.bounds.gaps import Gaps, inference_gaps
from pyrogen.data import Dataset, load_dataset
from pyrogen.errors import ConfigError, ContractError, DataError, PyrogenError, RunDirError
from pyrogen.model import GenerativeModel, check_model
from pyrogen.runs import RunDir, evaluate_run, load_run
from pyrogen.trace import as_pair, param_scope
from pyrogen.train import TrainConfig, fit, register_objective

__version__ = "0.1.0"

__all__ = [
    "AISResult",
    "BDMCResult",
    "Gaps",
    "ais",
    "as_pair",
    "bdmc",
    "inference_gaps",
    "ConfigError",
    "ContractError",
    "DataError",
    "Dataset",
    "Evaluation",
    "GenerativeModel",
    "PyrogenError",
    "RunDir",
    "RunDirError",
    "TrainConfig",
    "check_model",
    "compare",
    "estimate",
    "evaluate",
    "evaluate_run",
    "fit",
    "iwae",
    "load_dataset",
    "load_run",
    "log_weights",
    "param_scope",
    "pretrained",
    "register_objective",
    "report",
    "summarize",
]


def compare(runs: list, out: str | None = None, evaluation: str | None = None) -> "pd.DataFrame":  # noqa: F821
    """Evaluated runs side by side, what ``pyrogen compare`` prints and writes (see
    :func:`pyrogen.report.compare.compare`)."""
    from pyrogen.report.compare import compare as compare_runs

    return compare_runs(runs, out, evaluation)


def __getattr__(name: str) -> object:
    # `pyrogen.report(runs, out)` is the report package itself, callable (matplotlib loads only
    # when it is first used); `pyrogen.pretrained`, the shipped runs, loads on first use as well
    if name in ("report", "pretrained"):
        import importlib

        return importlib.import_module(f"pyrogen.{name}")
    raise AttributeError(f"module 'pyrogen' has no attribute {name!r}")


# Parameters of a GenerativeModel live in the module, not in Pyro's global param store, so that two
# models with the same attribute names never share (or overwrite) each other's weights.
pyro.settings.set(module_local_params=True)
