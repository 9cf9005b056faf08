r"""Per-datapoint importance weights and the bounds built on them.

For a data point x and guide draws z_1..z_K ~ q_phi(. | x), the log-weights are

.. math:: w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x).

From one pool of K weights per point this module computes the ELBO (E[w]), the importance-weighted
bounds IWAE_k = E[log (1/k) sum_{j<=k} exp(w_j)] for several k (Burda et al., 2015), each from
disjoint groups of the pool so that each gets a Monte Carlo standard error, the estimate
log p^(x) = IWAE_K, the effective sample size and the Pareto k-hat of the weights
(Yao et al., 2018).

Pyro's ``Importance``, ``vectorized_importance_weights`` and ``psis_diagnostic`` sum the log-weights
over the batch and so estimate the joint log p(x_1..x_B); here every data point keeps its own
weights.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
    | Yes, but Did It Work?: Evaluating Variational Inference (Yao et al., 2018)
    | https://arxiv.org/abs/1802.02538

Layout: :mod:`pyrogen.trace` runs the pair; :mod:`pyrogen.bounds.weights` draws the weights in
chunks of particles; :mod:`pyrogen.bounds.estimators` reduces them (IWAE_k, ESS, k-hat, tables).
"""

# AIS and BDMC: the functions are pyrogen.ais and pyrogen.bdmc; here the names stay the modules
from pyrogen.bounds.ais import AISResult
from pyrogen.bounds.bdmc import BDMCResult
from pyrogen.bounds.estimators import (
    MIN_KHAT_DRAWS,
    Evaluation,
    estimate,
    evaluate,
    iwae,
    pareto_khat,
    parse_ks,
    summarize,
)
from pyrogen.bounds.gaps import Gaps, inference_gaps
from pyrogen.bounds.weights import CHUNK_ELEMENTS, log_weights

__all__ = [
    "AISResult",
    "BDMCResult",
    "CHUNK_ELEMENTS",
    "MIN_KHAT_DRAWS",
    "Gaps",
    "inference_gaps",
    "Evaluation",
    "estimate",
    "evaluate",
    "iwae",
    "log_weights",
    "pareto_khat",
    "parse_ks",
    "summarize",
]
