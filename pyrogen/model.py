"""The model/guide contract: :class:`GenerativeModel` and the checks run before training.

A model is p_theta(x, z) = r(z) p_theta(x | z), written with Pyro primitives, with every data
point in ``pyro.plate("data", N)``; the guide is the amortized encoder q_phi(z | x) whose sample
sites are all
reparametrized. :func:`check_model` runs both once on a small batch and turns every way this can go
wrong into a :class:`~pyrogen.errors.ContractError` that names the site.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule

from pyrogen.errors import ContractError
from pyrogen.trace import (
    Layout,
    as_pair,
    data_tensor,
    is_deterministic,
    is_subsample,
    probe,
    run_model,
    split_pair,
    trace_pair,
)

__all__ = [
    "GenerativeModel",
    "SiteInfo",
    "check_model",
    "latent_sites",
    "observed_sites",
    "wants_labels",
]


class GenerativeModel(PyroModule):
    """Base class of a model/guide pair.

    Subclasses define ``model(self, x)`` and ``guide(self, x)`` (or ``model(self, x, y)`` and
    ``guide(self, x, y)`` for a conditional model); both put the data points in
    a plate of the data points (any name). A run records the constructor's arguments by name,
    so that :func:`pyrogen.load_run` rebuilds the model as it was built.

    Example:
        >>> import pyro, pyro.distributions as dist, torch
        >>> class Tiny(GenerativeModel):
        ...     def __init__(self, data_dim):
        ...         super().__init__()
        ...         self.dec = torch.nn.Linear(2, data_dim)
        ...         self.enc = torch.nn.Linear(data_dim, 4)
        ...     def model(self, x):
        ...         with pyro.plate("data", x.shape[0]):
        ...             z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        ...             pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)
        ...     def guide(self, x):
        ...         loc, log_scale = self.enc(x).chunk(2, -1)
        ...         with pyro.plate("data", x.shape[0]):
        ...             pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
        >>> check_model(Tiny(3), torch.ones(5, 3)).latent
        ('z',)
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> GenerativeModel:
        # the constructor's arguments, so that a run written by fit(out=...) rebuilds the model
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:  # __init__ itself reports the bad call
            return self
        names = list(bound.arguments)[1:]  # drop self
        values = {n: bound.arguments[n] for n in names}
        if names:  # the first argument by its own name (data_dim, vocab_size, ...), apart
            first = values.pop(names[0])
            object.__setattr__(self, "_pyrogen_first_argument", {names[0]: first})
        object.__setattr__(self, "_pyrogen_options", values)
        return self

    def model(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define model(self, x)")

    def guide(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define guide(self, x)")

    @torch.no_grad()
    def sample(
        self, num_samples: int, y: torch.Tensor | None = None, mean: bool = True
    ) -> torch.Tensor:
        """Draws x from the model: z ~ r(z), then the mean (or a draw) of p_theta(x | z).

        The default runs ``model`` with its observation uncondtioned on a placeholder batch of
        ``num_samples`` rows; a model may override it.

        Returns:
            Tensor [num_samples, data_dim].
        """
        dim = int(getattr(self, "data_dim", 0))
        if dim <= 0:
            raise ContractError(f"{type(self).__name__}.sample needs a data_dim attribute")
        p = next(self.parameters(), None)
        placeholder = torch.zeros(num_samples, dim, device=p.device if p is not None else None)
        args = (placeholder,) if y is None else (placeholder, y)
        pair = as_pair(self)
        tr = run_model(pair, args, uncondition=True)
        name = observed_sites(run_model(pair, args))[0]
        fn = tr.nodes[name]["fn"]
        if mean:
            try:
                return fn.mean
            except NotImplementedError:
                pass
        return tr.nodes[name]["value"]


class SiteInfo(NamedTuple):
    """What :func:`check_model` learnt about a pair: site names and the plate layout."""

    latent: tuple[str, ...]
    observed: tuple[str, ...]
    max_plate_nesting: int
    data_dim: int  # the (negative) tensor dimension of the data plate
    params: tuple[str, ...] = ()  # pyro.param sites of the model and the guide (trained too)
    layout: Layout | None = None  # everything pyrogen.trace.probe learnt


def wants_labels(fn: Callable) -> bool:
    """True when a model or guide needs the labels ``y`` (an argument ``y`` without a default:
    a conditional model); ``y=None`` makes the labels optional (a semi-supervised model)."""
    try:
        param = inspect.signature(fn).parameters.get("y")
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is inspect.Parameter.empty


def latent_sites(trace: poutine.Trace) -> list[str]:
    """The unobserved sample sites of a trace (plates' subsample sites left out)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not is_subsample(site)
    ]


def observed_sites(trace: poutine.Trace) -> list[str]:
    """The observed sample sites of a trace (``pyro.deterministic`` sites left out)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site)
    ]


def _describe(fn: Any) -> str:
    base = fn
    while hasattr(base, "base_dist"):
        base = base.base_dist
    return type(base).__name__


def _first_bad_rows(x: torch.Tensor, ok: torch.Tensor) -> str:
    bad = (~ok.reshape(ok.shape[0], -1)).any(-1).nonzero().flatten().tolist() if ok.dim() else []
    shown = ", ".join(str(i) for i in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return f"rows {shown}{more}" if bad else "some rows"


_ROWS_CHECKED: dict[int, tuple[weakref.ref, int, str]] = {}


def _check_rows(support: Any, rows: torch.Tensor) -> torch.Tensor:
    """``support.check(rows)``, remembered for a tensor that passed and has not changed since.

    Checking every value costs a few nanoseconds each (82 ms for 10 million on one core); a
    tensor that passed is not checked again until it is modified in place (its version counter)
    or freed, so repeated ``fit`` calls on the same data (a sweep, one call per epoch) pay once.
    """
    key = id(rows)
    seen = _ROWS_CHECKED.get(key)
    if seen is not None and seen[0]() is rows and seen[1] == rows._version:
        if seen[2] == repr(support):
            return torch.ones((), dtype=torch.bool)
    ok = support.check(rows)
    if bool(ok.all()):
        if len(_ROWS_CHECKED) > 16:
            _ROWS_CHECKED.clear()
        _ROWS_CHECKED[key] = (weakref.ref(rows), rows._version, repr(support))
    return ok


def check_model(
    model: Any,
    *args: Any,
    guide: Callable | None = None,
    per_datapoint: bool = False,
    all_rows: torch.Tensor | None = None,
    reparametrized: bool = True,
    data_plate: str | None = None,
    **kwargs: Any,
) -> SiteInfo:
    """Runs model and guide once on a batch and checks the pair keeps the contract.

    Arguments:
        model: the model callable followed by the guide (``check_model(model, guide, x)``, as
            Pyro's ``SVI``), or a pair: a :class:`GenerativeModel`, any object with ``model``
            and ``guide`` methods, or a ``(model, guide)`` tuple (``check_model(vae, x)``).
        *args: the batch x [B, D] and the pair's other arguments (e.g. labels ``y``).
        guide: the guide, where ``model`` is the model callable (the older spelling).
        per_datapoint: also require every latent site to sit inside the data plate, as
            per-datapoint importance weights need.
        all_rows: the whole data set of which ``x`` is the first rows; where the model observes
            the data as given, every row is checked against the observation's support.
        reparametrized: require every guide site to have ``rsample`` (all objectives but
            ``score-function`` and ``enum``).
        data_plate: the data plate's name, where two plates have the batch's size.
        **kwargs: keyword arguments of model and guide.

    Returns:
        :class:`SiteInfo` with the latent and observed site names, the plate layout and the
        ``pyro.param`` sites.

    Raises:
        ContractError: naming the site when the guide lacks a latent site of the model or has one
            the model lacks, a guide site is not reparametrizable, shapes or event dimensions
            disagree, the observation is outside the data plate, or the data fall outside the
            observation's support.
    """
    if guide is not None:
        pair = as_pair(model, guide)
    else:
        pair, args = split_pair(model, args)
    if not args and not kwargs:
        raise ContractError("check_model needs the data: check_model(model, guide, x, ...)")
    with torch.random.fork_rng(devices=[]):  # checking leaves the user's random stream be
        guide_tr, model_tr = trace_pair(pair, args, kwargs, check=_check_shapes)
    layout = probe(
        pair, args, kwargs, data_plate, per_datapoint=per_datapoint, traces=(guide_tr, model_tr)
    )
    for name in layout.latent:
        _check_site(name, guide_tr.nodes[name], model_tr.nodes[name], reparametrized)
    x = data_tensor(args, kwargs)
    for name in layout.observed:
        _check_support(name, model_tr.nodes[name], x, all_rows)
    for name in layout.latent + layout.observed:
        _check_batch_dims(name, model_tr.nodes[name])
    return SiteInfo(
        layout.latent,
        layout.observed,
        layout.nesting,
        layout.data_dim,
        layout.params,
        layout,
    )


def _check_shapes(guide_tr: Any, prior_tr: Any) -> None:
    """A latent site drawn by the guide has the shape the model's prior draws it in."""
    for name in latent_sites(guide_tr):
        if name in prior_tr.nodes and not prior_tr.nodes[name]["is_observed"]:
            gv, pv = guide_tr.nodes[name]["value"], prior_tr.nodes[name]["value"]
            if gv.shape != pv.shape:
                raise ContractError(
                    f"site '{name}' has shape {list(gv.shape)} in the guide but "
                    f"{list(pv.shape)} in the model"
                )


def _check_site(name: str, g: dict, m: dict, reparametrized: bool) -> None:
    """A latent site: reparametrizable where needed, of one shape and event rank in both."""
    if reparametrized and not g["fn"].has_rsample:
        raise ContractError(
            f"guide site '{name}' draws from {_describe(g['fn'])}, which is not "
            "reparametrizable (no rsample); the objectives elbo, iwae and iwae-dreg need "
            "z = g_phi(eps, x) at every guide site: use objective score-function or enum, or "
            "sum the site out in the model (infer={'enumerate': 'parallel'})"
        )
    g_shape = tuple(g["value"].shape)
    m_shape = tuple(m["fn"].batch_shape + m["fn"].event_shape)
    if g_shape != m_shape:
        raise ContractError(
            f"site '{name}' has shape {list(g_shape)} in the guide but {list(m_shape)} in the "
            f"model (batch {list(m['fn'].batch_shape)}, event {list(m['fn'].event_shape)})"
        )
    if len(g["fn"].event_shape) != len(m["fn"].event_shape):
        raise ContractError(
            f"site '{name}' has {len(g['fn'].event_shape)} event dims in the guide but "
            f"{len(m['fn'].event_shape)} in the model; use .to_event(...) the same way in both"
        )


def _check_support(
    name: str, site: dict, x: torch.Tensor | None, all_rows: torch.Tensor | None
) -> None:
    """The observed values lie in the observation's support (every row of ``all_rows`` where
    the model observes the data as given)."""
    fn, value = site["fn"], site["value"]
    if not hasattr(fn, "support") or type(fn).__name__ == "Unit":
        return
    ok = fn.support.check(value)
    if all_rows is not None and x is not None and value.shape == x.shape and torch.equal(value, x):
        try:  # the data are observed as given: check every row, not only the probe's
            ok, value = _check_rows(fn.support, all_rows), all_rows
        except (RuntimeError, ValueError):  # a support that depends on the batch
            pass
    if bool(ok.all()):
        return
    base = fn.support
    while hasattr(base, "base_constraint"):  # .to_event(): check element by element
        base = base.base_constraint
    elementwise = base.check(value)
    vals = value[~elementwise] if elementwise.shape == value.shape else value.flatten()
    vals = vals if vals.numel() else value.flatten()
    from pyrogen.data.support import support_hint

    hint = support_hint(fn.support, value)
    hint = f"; {hint}" if hint else ""
    raise ContractError(
        f"observed site '{name}' ({_describe(fn)}, support {fn.support}) gets values "
        f"outside its support, e.g. {float(vals.flatten()[0]):.4g} in "
        f"{_first_bad_rows(value, ok)}{hint}"
    )


def _check_batch_dims(name: str, site: dict) -> None:
    """Every batch dim of a site's distribution that is not 1 belongs to a plate."""
    lp_shape = site["fn"].batch_shape
    plate_dims = {f.dim for f in site["cond_indep_stack"] if f.vectorized}
    for i in range(1, len(lp_shape) + 1):
        if lp_shape[-i] != 1 and -i not in plate_dims:
            raise ContractError(
                f"site '{name}' has batch shape {list(lp_shape)}, but dim {-i} is not a plate; "
                f"declare the event dims with .to_event(...)"
            )
