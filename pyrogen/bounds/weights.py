r"""Per-datapoint log importance weights of a model/guide pair.

For a data point x and guide draws z_1..z_K ~ q_phi(. | x), the log-weights are

.. math:: w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x).

The guide runs under a vectorized plate of particles and the model is replayed on its draws; each
site's log-probability is summed over every dimension but the particle and the ``"data"`` plate
ones, so every data point keeps its own weights (Pyro's ``vectorized_importance_weights`` sums
them over the batch). Particles run in chunks that replay the first chunk's subsample indices.

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pyrogen.errors import ConfigError, ContractError
from pyrogen.model import DATA_PLATE, is_subsample, latent_sites, observed_sites, plate_nesting

__all__ = ["iter_log_weights", "log_density", "log_weights", "pyro_checks", "trace_pair"]

PARTICLE_PLATE = "_pyrogen_particles"


#: elements of one [chunk, batch, D] tensor, the unit that bounds evaluation memory; 2**21 (8 MiB
#: of float32) keeps a chunk's tensors in cache: 1.3-1.8x the throughput of 2**24 on a 2-core CPU
CHUNK_ELEMENTS = 2**21


def _max_plate_nesting(model: Callable, guide: Callable, args: tuple, kwargs: dict) -> int:
    with torch.no_grad(), pyro.validation_enabled(False), pyro_checks():
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    return plate_nesting(guide_tr, model_tr)


def _in_particle_plate(fn: Callable, size: int, dim: int) -> Callable:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate(PARTICLE_PLATE, size, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _site_log_prob(site: dict, nesting: int, who: str) -> torch.Tensor:
    """log_prob of one site summed to [particles, data] (raw: no subsample or annealing scale)."""
    data_frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_frames:
        kind = "observed" if site["is_observed"] else "latent"
        raise ContractError(
            f"{kind} site '{site['name']}' of the {who} is outside "
            f"pyro.plate('{DATA_PLATE}', ...): "
            "per-datapoint weights need every site inside the data plate"
        )
    lp = site["fn"].log_prob(site["value"])
    width = nesting + 1
    if lp.dim() > width:
        raise ContractError(
            f"site '{site['name']}' of the {who} has log_prob shape {list(lp.shape)} with dims "
            f"outside any plate; declare its event dims with .to_event(...)"
        )
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    data_pos = width + data_frames[0].dim
    others = [i for i in range(1, width) if i != data_pos]
    if others:
        lp = lp.sum(others)
    return lp


def log_density(
    trace: poutine.Trace, nesting: int, who: str, observed: bool = True
) -> torch.Tensor:
    """Sum of a trace's site log-densities per particle and data point: [particles, data]."""
    names = latent_sites(trace) + (observed_sites(trace) if observed else [])
    terms = [_site_log_prob(trace.nodes[name], nesting, who) for name in names]
    if not terms:
        raise ContractError(f"the {who} has no sample site")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def trace_pair(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    size: int,
    nesting: int,
    subsample: poutine.Trace | None = None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """Traces the guide under a vectorized plate of ``size`` particles; replays the model on it."""
    dim = -(nesting + 1)
    vguide = _in_particle_plate(guide, size, dim)
    if subsample is not None:
        vguide = poutine.replay(vguide, trace=subsample)
    with pyro_checks():
        guide_tr = poutine.trace(vguide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(
            poutine.replay(_in_particle_plate(model, size, dim), trace=guide_tr)
        ).get_trace(*args, **kwargs)
    if not observed_sites(model_tr):
        raise ContractError("the model has no observed site: pass the data with obs=x")
    return guide_tr, model_tr


def _duplicate_message(name: str) -> str:
    return (
        f"multiple sample sites named '{name}': each pyro.sample in a model or guide needs its "
        "own name (one run of the model draws each site once)"
    )


@contextlib.contextmanager
def pyro_checks() -> Iterator[None]:
    """Turns the errors of Pyro's own checks of a model (a site name used twice) into a
    :class:`~pyrogen.errors.ContractError` that names the site."""
    try:
        yield
    except RuntimeError as e:
        found = re.search(r"Multiple (?:sample|param) sites named '([^']+)'", str(e))
        if found is None:
            raise
        raise ContractError(_duplicate_message(found.group(1))) from None


class _SiteRecorder(Messenger):
    """A lean ``poutine.trace`` and ``poutine.replay`` in one, for the inner loops.

    It keeps the sample messages of one run in order (the messages, not copies, and no Trace
    graph) and, like ``poutine.replay``, gives every unobserved site named in ``replay`` that
    message's value. Training steps and evaluation chunks run through it; the numbers are those
    of ``poutine.trace(poutine.replay(...))``, with less Python per site.
    """

    def __init__(self, replay: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.replay = replay or {}
        self.sites: list[dict] = []
        self.names: set[str] = set()

    def _pyro_sample(self, msg: dict) -> None:
        source = self.replay.get(msg["name"])
        if source is not None and not msg["is_observed"]:
            msg["value"] = source["value"]
            msg["infer"] = source["infer"]
            msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if not msg["infer"].get("_do_not_trace"):
            if msg["name"] in self.names:  # the check of Pyro's Trace.add_node
                raise ContractError(_duplicate_message(msg["name"]))
            self.names.add(msg["name"])
            self.sites.append(msg)

    def latent(self) -> list[dict]:
        """Unobserved sample sites, plates' subsample sites excluded (as ``latent_sites``)."""
        return [m for m in self.sites if not m["is_observed"] and not is_subsample(m)]

    def observed(self) -> list[dict]:
        return [m for m in self.sites if m["is_observed"]]

    def unobserved(self) -> dict[str, dict]:
        """Every unobserved message by name, subsample sites included: what to replay."""
        return {m["name"]: m for m in self.sites if not m["is_observed"]}


def _sum_log_probs(sites: list[dict], nesting: int, who: str) -> torch.Tensor:
    if not sites:
        raise ContractError(f"the {who} has no sample site")
    total = _site_log_prob(sites[0], nesting, who)
    for site in sites[1:]:
        total = total + _site_log_prob(site, nesting, who)
    return total


def _chunk_weights(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict,
    size: int,
    nesting: int,
    subsample: dict[str, dict] | None,
) -> tuple[torch.Tensor, _SiteRecorder]:
    # trace_pair and log_density with a _SiteRecorder: the same sites, values and sums
    dim = -(nesting + 1)
    guide_run = _SiteRecorder(subsample)
    with guide_run, pyro.plate(PARTICLE_PLATE, size, dim=dim):
        guide(*args, **kwargs)
    model_run = _SiteRecorder(guide_run.unobserved())
    with model_run, pyro.plate(PARTICLE_PLATE, size, dim=dim):
        model(*args, **kwargs)
    observed = model_run.observed()
    if not observed:
        raise ContractError("the model has no observed site: pass the data with obs=x")
    log_p = _sum_log_probs(model_run.latent() + observed, nesting, "model")
    latent = guide_run.latent()
    lw = log_p - _sum_log_probs(latent, nesting, "guide") if latent else log_p
    return lw.expand(size, lw.shape[-1]), guide_run


def log_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int,
    chunk_size: int | None = None,
    grad: bool = False,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Per-datapoint log importance weights w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n).

    The guide is traced under a vectorized plate of particles and the model replayed on its draws;
    each site's log-probability is summed over every dimension but the particle and the
    ``"data"`` plate dimensions. Subsampling and annealing scales left by training are ignored:
    these are the raw densities. Particles run in chunks, so memory stays bounded for any K.

    Arguments:
        model: the model callable, e.g. ``vae.model``.
        guide: the guide callable, e.g. ``vae.guide``.
        *args: arguments of both, usually the batch ``x`` (and labels ``y``).
        num_particles: K, the number of guide draws per data point.
        chunk_size: particles per vectorized pass; by default as many as keep one
            [chunk, N, D] tensor under ``CHUNK_ELEMENTS`` = 2**21 elements.
        grad: build the autograd graph (training objectives); off for evaluation.
        max_plate_nesting: the model's plate depth; guessed from one trace when omitted.
        **kwargs: keyword arguments of both.

    Returns:
        Tensor [K, N].

    Raises:
        ContractError: when a site lies outside the data plate or the model observes nothing.

    Example:
        >>> import sys; sys.path.insert(0, "models")
        >>> from ppca import PPCA
        >>> m = PPCA(4, 2)
        >>> log_weights(m.model, m.guide, torch.zeros(3, 4), num_particles=10).shape
        torch.Size([10, 3])
    """
    chunks = list(
        iter_log_weights(
            model,
            guide,
            *args,
            num_particles=num_particles,
            chunk_size=chunk_size,
            grad=grad,
            max_plate_nesting=max_plate_nesting,
            **kwargs,
        )
    )
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, 0)


def iter_log_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int,
    chunk_size: int | None = None,
    grad: bool = False,
    max_plate_nesting: int | None = None,
    **kwargs: Any,
) -> Iterator[torch.Tensor]:
    """The log-weights of :func:`log_weights` as they are drawn: chunks [c, N] of particles.

    Consuming the chunks one by one (e.g. with :class:`~pyrogen.bounds.streaming.PoolReducer`)
    keeps memory bounded by one chunk for any K; the draws are those of :func:`log_weights`
    under the same seed.
    """
    if num_particles < 1:
        raise ConfigError(f"num_particles must be a positive integer, got {num_particles}")
    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, args, kwargs)
    if chunk_size is None:
        numel = max((a.numel() for a in args if isinstance(a, torch.Tensor)), default=1)
        chunk_size = max(1, CHUNK_ELEMENTS // max(numel, 1))
    chunk_size = min(chunk_size, num_particles)
    subsample: dict[str, dict] | None = None
    done = 0
    while done < num_particles:
        size = min(chunk_size, num_particles - done)
        with torch.set_grad_enabled(grad), pyro.validation_enabled(False):
            lw, guide_run = _chunk_weights(
                model, guide, args, kwargs, size, max_plate_nesting, subsample
            )
        if subsample is None:
            subsample = _subsample_sites(guide_run)
        done += size
        yield lw


def _subsample_sites(run: _SiteRecorder) -> dict[str, dict]:
    """The plates' subsample indices of a run, to replay so every chunk sees the same points."""
    return {m["name"]: m for m in run.sites if is_subsample(m) and m["name"] != PARTICLE_PLATE}
