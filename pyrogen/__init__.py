"""pyrogen: deep latent-variable generative models on Pyro, with honest likelihoods.

Write a model/guide pair as a :class:`GenerativeModel`, train it with :func:`fit`, and compare the
ELBO, IWAE_k and the importance-sampled log p(x) per data point with :func:`evaluate`.
"""

import pyro

from pyrogen.bounds import Evaluation, estimate, evaluate, iwae, log_weights, summarize
from pyrogen.bounds.ais import AISResult, ais
from pyrogen.bounds.bdmc import BDMCResult, bdmc
from pyrogen.bounds.gaps import Gaps, inference_gaps
from pyrogen.data import Dataset, load_dataset
from pyrogen.errors import ConfigError, ContractError, DataError, PyrogenError, RunDirError
from pyrogen.model import GenerativeModel, check_model
from pyrogen.train import fit

__version__ = "0.1.0"

__all__ = [
    "AISResult",
    "BDMCResult",
    "Gaps",
    "ais",
    "bdmc",
    "inference_gaps",
    "ConfigError",
    "ContractError",
    "DataError",
    "Dataset",
    "Evaluation",
    "GenerativeModel",
    "PyrogenError",
    "RunDirError",
    "check_model",
    "estimate",
    "evaluate",
    "fit",
    "iwae",
    "load_dataset",
    "log_weights",
    "summarize",
]

# Parameters of a GenerativeModel live in the module, not in Pyro's global param store, so that two
# models with the same attribute names never share (or overwrite) each other's weights.
pyro.settings.set(module_local_params=True)
