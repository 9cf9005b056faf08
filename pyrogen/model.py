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

import pyro
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule

from pyrogen.errors import ContractError

__all__ = [
    "DATA_PLATE",
    "GenerativeModel",
    "SiteInfo",
    "check_model",
    "is_subsample",
    "latent_sites",
    "observed_sites",
    "plate_nesting",
    "wants_labels",
]

DATA_PLATE = "data"


class GenerativeModel(PyroModule):
    """Base class of a model/guide pair.

    Subclasses define ``model(self, x)`` and ``guide(self, x)`` (or ``model(self, x, y)`` and
    ``guide(self, x, y)`` for a conditional model); both put the data points in
    ``pyro.plate("data", x.shape[0])``. The constructor takes the data dimension first.

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
        if names:
            values.pop(names[0])  # data_dim, recorded from the data
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
        tr = poutine.trace(poutine.uncondition(self.model)).get_trace(*args)
        name = observed_sites(poutine.trace(self.model).get_trace(*args))[0]
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
    data_dim: int  # the (negative) tensor dimension of the "data" plate
    params: tuple[str, ...] = ()  # pyro.param sites of the model and the guide (trained too)


def is_subsample(site: dict) -> bool:
    """True for the sample site a ``pyro.plate`` records for its subsample indices."""
    return type(site["fn"]).__name__ == "_Subsample"


def wants_labels(fn: Callable) -> bool:
    """True when a model or guide takes the labels ``y`` as an argument (a conditional model)."""
    try:
        return "y" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def latent_sites(trace: poutine.Trace) -> list[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not is_subsample(site)
    ]


def observed_sites(trace: poutine.Trace) -> list[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"]
    ]


def plate_nesting(*traces: poutine.Trace) -> int:
    """How many tensor dims the vectorized plates of these traces use (Pyro's max_plate_nesting)."""
    nesting = 0
    for tr in traces:
        for site in tr.nodes.values():
            if site["type"] == "sample":
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized and frame.dim is not None:
                        nesting = max(nesting, -frame.dim)
    return nesting


def _data_frame(site: dict) -> Any | None:
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    return None


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
    model: Callable,
    x: torch.Tensor,
    *args: Any,
    guide: Callable | None = None,
    per_datapoint: bool = False,
    all_rows: torch.Tensor | None = None,
    reparametrized: bool = True,
    **kwargs: Any,
) -> SiteInfo:
    """Runs model and guide once on ``x`` and checks the pair keeps the contract.

    Arguments:
        model: a :class:`GenerativeModel` (its ``model``/``guide`` are used) or a model callable.
        x: a small batch of data [B, D].
        *args: further arguments of model and guide (e.g. labels ``y``).
        guide: the guide callable when ``model`` is a plain callable.
        per_datapoint: also require every latent site to sit inside the data plate, as
            per-datapoint importance weights need.
        all_rows: the whole data set of which ``x`` is the first rows; where the model observes
            the data as given, every row is checked against the observation's support.
        reparametrized: require every guide site to have ``rsample`` (all objectives but
            ``score-function``).

    Returns:
        :class:`SiteInfo` with the latent and observed site names, the plate layout and the
        ``pyro.param`` sites.

    Raises:
        ContractError: naming the site when the guide lacks a latent site of the model or has one
            the model lacks, a guide site is not reparametrizable, shapes or event dimensions
            disagree, the observation is outside the data plate, or the data fall outside the
            observation's support.
    """
    if isinstance(model, GenerativeModel):
        model, guide = model.model, model.guide
    if guide is None:
        raise ContractError("check_model needs a guide: pass a GenerativeModel or guide=...")

    def run(fn: Callable, what: str) -> poutine.Trace:
        try:
            with torch.no_grad(), pyro.validation_enabled(False):
                return poutine.trace(fn).get_trace(x, *args, **kwargs)
        except ContractError:
            raise
        except (ValueError, RuntimeError, TypeError, IndexError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if "Shape mismatch inside plate" in first:
                first += " (declare a site's event dims with .to_event(...))"
            raise ContractError(
                f"running the {what} on a batch of shape {list(x.shape)} failed: {first}"
            ) from e

    guide_tr = run(guide, "guide")
    prior_tr = run(model, "model")
    for name in latent_sites(guide_tr):
        if name in prior_tr.nodes and not prior_tr.nodes[name]["is_observed"]:
            g, m = guide_tr.nodes[name]["value"], prior_tr.nodes[name]["value"]
            if g.shape != m.shape:
                raise ContractError(
                    f"site '{name}' has shape {list(g.shape)} in the guide but {list(m.shape)} "
                    "in the model"
                )
    model_tr = run(poutine.replay(model, trace=guide_tr), "model on the guide's draws")

    model_latent = latent_sites(model_tr)
    guide_latent = latent_sites(guide_tr)
    observed = observed_sites(model_tr)
    for name in model_latent:
        if name not in guide_latent:
            raise ContractError(
                f"latent site '{name}' of the model has no site in the guide; "
                f"the guide must sample '{name}' (guide sites: {', '.join(guide_latent) or 'none'})"
            )
    for name in guide_latent:
        if name not in model_tr.nodes:
            raise ContractError(
                f"guide site '{name}' is not a site of the model "
                f"(model latent sites: {', '.join(model_latent) or 'none'})"
            )
        if model_tr.nodes[name]["is_observed"]:
            raise ContractError(
                f"guide site '{name}' is observed in the model; it cannot be latent"
            )
    if not observed:
        raise ContractError("the model has no observed site: pass the data with obs=x")

    for name in guide_latent:
        g, m = guide_tr.nodes[name], model_tr.nodes[name]
        if reparametrized and not g["fn"].has_rsample:
            raise ContractError(
                f"guide site '{name}' draws from {_describe(g['fn'])}, which is not "
                "reparametrizable (no rsample); pyrogen needs z = g_phi(eps, x) at every "
                "guide site, or the objective score-function"
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

    data_dims = set()
    for tr, who in ((model_tr, "model"), (guide_tr, "guide")):
        for name in observed_sites(tr) + latent_sites(tr):
            frame = _data_frame(tr.nodes[name])
            if frame is not None:
                data_dims.add(frame.dim)
            elif tr.nodes[name]["is_observed"]:
                raise ContractError(
                    f"observed site '{name}' is not inside pyro.plate('{DATA_PLATE}', ...); "
                    f"put the data points in a plate named '{DATA_PLATE}'"
                )
            elif per_datapoint:
                raise ContractError(
                    f"latent site '{name}' of the {who} is outside "
                    f"pyro.plate('{DATA_PLATE}', ...): "
                    "per-datapoint weights are undefined for a latent shared by all data points"
                )
    if len(data_dims) > 1:
        raise ContractError(f"plate '{DATA_PLATE}' is used at several dims {sorted(data_dims)}")

    for name in observed:
        site = model_tr.nodes[name]
        fn, value = site["fn"], site["value"]
        ok = fn.support.check(value)
        if all_rows is not None and value.shape == x.shape and torch.equal(value, x):
            try:  # the data are observed as given: check every row, not only the probe's
                ok, value = _check_rows(fn.support, all_rows), all_rows
            except (RuntimeError, ValueError):  # a support that depends on the batch
                pass
        if not bool(ok.all()):
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

    max_nesting = plate_nesting(model_tr, guide_tr)
    for name in model_latent + observed:
        site = model_tr.nodes[name]
        lp_shape = site["fn"].batch_shape
        plate_dims = {f.dim for f in site["cond_indep_stack"] if f.vectorized}
        for i in range(1, len(lp_shape) + 1):
            if lp_shape[-i] != 1 and -i not in plate_dims:
                raise ContractError(
                    f"site '{name}' has batch shape {list(lp_shape)}, but dim {-i} is not a plate; "
                    f"declare the event dims with .to_event(...)"
                )
    data_dim = data_dims.pop() if data_dims else -1
    params = sorted(
        {n for tr in (guide_tr, model_tr) for n, s in tr.nodes.items() if s["type"] == "param"}
    )
    return SiteInfo(tuple(model_latent), tuple(observed), max_nesting, data_dim, tuple(params))
