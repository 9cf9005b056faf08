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

Layout: :mod:`pyrogen.bounds.weights` draws the weights (tracing, per-site sums, chunks of
particles); :mod:`pyrogen.bounds.estimators` reduces them (IWAE_k, ESS, k-hat, tables).
"""

# the public names, and (`name as name`) the helpers training, tests and benchmarks import
# AIS and BDMC: the functions are pyrogen.ais and pyrogen.bdmc; here the names stay the modules
from pyrogen.bounds.ais import AISResult
from pyrogen.bounds.bdmc import BDMCResult
from pyrogen.bounds.estimators import MIN_KHAT_DRAWS as MIN_KHAT_DRAWS
from pyrogen.bounds.estimators import Evaluation, estimate, evaluate, iwae, parse_ks, summarize
from pyrogen.bounds.estimators import _group_ess as _group_ess
from pyrogen.bounds.estimators import pareto_khat as pareto_khat
from pyrogen.bounds.gaps import Gaps, inference_gaps
from pyrogen.bounds.weights import CHUNK_ELEMENTS as CHUNK_ELEMENTS
from pyrogen.bounds.weights import PARTICLE_PLATE as PARTICLE_PLATE
from pyrogen.bounds.weights import _chunk_weights as _chunk_weights
from pyrogen.bounds.weights import _in_particle_plate as _in_particle_plate
from pyrogen.bounds.weights import _max_plate_nesting as _max_plate_nesting
from pyrogen.bounds.weights import _site_log_prob as _site_log_prob
from pyrogen.bounds.weights import _SiteRecorder as _SiteRecorder
from pyrogen.bounds.weights import _subsample_sites as _subsample_sites
from pyrogen.bounds.weights import _sum_log_probs as _sum_log_probs
from pyrogen.bounds.weights import log_density as log_density
from pyrogen.bounds.weights import log_weights
from pyrogen.bounds.weights import trace_pair as trace_pair

__all__ = [
    "AISResult",
    "BDMCResult",
    "Gaps",
    "inference_gaps",
    "Evaluation",
    "estimate",
    "evaluate",
    "iwae",
    "log_weights",
    "parse_ks",
    "summarize",
]
