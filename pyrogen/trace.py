r"""The one way pyrogen runs a model/guide pair.

Every number pyrogen reports about a pair — the training objectives, the log-weights
w = log p(x, z) - log q(z | x) behind ELBO, IWAE_k and log p^(x), AIS, BDMC, the gap
decomposition, the contract check and the report's decoders — comes from running the pair here.
The rules are Pyro's own, those of ``Trace_ELBO`` and ``TraceEnum_ELBO``:

- a site's log-density is ``fn.log_prob(value)`` masked by ``poutine.mask`` and ``obs_mask``
  (``Distribution.mask`` masks inside ``log_prob``); ``poutine.scale`` and the scale of a
  subsampled plate weigh the *training* objective as in Pyro, while the bounds are the raw,
  unscaled densities;
- ``pyro.factor`` adds its log-factor (in the model to log p, in the guide to log q);
  ``pyro.deterministic`` adds nothing, wherever it stands;
- discrete model sites marked for parallel enumeration (``config_enumerate``) are summed out
  exactly per data point, log p(x, z) = log sum_c p(x, c, z), with Pyro's tensor contraction;
  discrete guide sites are sampled and scored like any other;
- the data plate is found, not named by convention: the plate around every observed site whose
  size is the batch (``data_plate="name"`` where two qualify); every latent site must lie in it,
  or per-datapoint weights mean nothing, and the error says which site;
- positional and keyword arguments that are tensors whose first dimension is the batch are the
  batch (sliced with the data); anything else passes through unchanged.

Particles run vectorized in a plate left of the model's own plates. A model that cannot
broadcast over that extra dimension (``nn.BatchNorm1d`` and the like) is found by :func:`probe`,
and its particles run one after another instead, with the same numbers.

A pair is anything Pyro users write: a :class:`~pyrogen.model.GenerativeModel`, any object
with ``model`` and ``guide`` methods, a ``(model, guide)`` tuple or the two callables
(:func:`as_pair`, :func:`split_pair`). Each pair's ``pyro.param`` values live in its own
:class:`ParamScope`, so two models in one process never share them.

References:
    | Pyro's ELBO implementations (Trace_ELBO, TraceEnum_ELBO) | https://docs.pyro.ai/en/stable/inference_algos.html
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from opt_einsum import get_symbol
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import pack, unpack
from pyro.ops.rings import LogRing
from pyro.poutine.messenger import Messenger
from torch.distributions import transform_to

from pyrogen.errors import ConfigError, ContractError

__all__ = [
    "PARTICLE_PLATE",
    "Densities",
    "Layout",
    "Pair",
    "ParamScope",
    "as_pair",
    "data_rows",
    "data_tensor",
    "densities",
    "draw",
    "elbo_surrogate",
    "is_deterministic",
    "is_subsample",
    "log_weights_chunk",
    "param_scope",
    "probe",
    "pyro_checks",
    "split_pair",
    "take_rows",
    "trace_pair",
    "run_model",
    "run_traced",
]

PARTICLE_PLATE = "_pyrogen_particles"


# -- sites -----------------------------------------------------------------------------------------


def is_subsample(site: dict) -> bool:
    """True for the sample site a ``pyro.plate`` records for its subsample indices."""
    return type(site["fn"]).__name__ == "_Subsample"


def is_deterministic(site: dict) -> bool:
    """True for a ``pyro.deterministic`` site (a masked Delta: no density)."""
    return bool((site.get("infer") or {}).get("_deterministic"))


def _counts(site: dict) -> bool:
    """A site whose density enters p or q: any sample site but plates' and deterministic ones."""
    return not is_subsample(site) and not is_deterministic(site)


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


class _Recorder(Messenger):
    """A lean ``poutine.trace`` and ``poutine.replay`` in one.

    It keeps the sample messages of one run in order (the messages, not copies, and no Trace
    graph), gives every unobserved site named in ``replay`` that value (as ``poutine.replay``
    does), and applies Pyro's check of a site name used twice.
    """

    def __init__(self, replay: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.replay = replay or {}
        self.sites: list[dict] = []
        self.names: set[str] = set()

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or msg["name"] not in self.replay:
            return
        value = self.replay[msg["name"]]
        msg["value"] = value
        msg["done"] = True

    def _pyro_post_sample(self, msg: dict) -> None:
        if msg["infer"].get("_do_not_trace"):
            return
        if msg["name"] in self.names:  # the check of Pyro's Trace.add_node
            raise ContractError(_duplicate_message(msg["name"]))
        self.names.add(msg["name"])
        self.sites.append(msg)

    def counted(self) -> list[dict]:
        return [m for m in self.sites if _counts(m)]

    def latent(self) -> list[dict]:
        return [m for m in self.sites if not m["is_observed"] and not is_subsample(m)]

    def values(self) -> dict[str, torch.Tensor]:
        """Every unobserved value by name (plates' indices included): what to replay."""
        return {m["name"]: m["value"] for m in self.sites if not m["is_observed"]}


# -- parameter scopes ------------------------------------------------------------------------------


class ParamScope:
    """The ``pyro.param`` values of one pair, kept apart from every other pair's.

    Pyro keeps ``pyro.param`` values in one global store, so two models that name a parameter
    alike share it. A scope holds a pair's own values and swaps them into the store while the pair
    runs (Pyro's ``ParamStoreDict.scope``). A new scope starts from what the global store holds
    then (a pair trained by the user's own SVI loop keeps its values), copied, without
    ``pyro.module`` entries (the module itself holds those).
    """

    def __init__(self) -> None:
        store = pyro.get_param_store()
        params: dict[str, torch.Tensor] = {}
        for name, value in store._params.items():
            if "$$$" not in name:
                params[name] = value.detach().clone().requires_grad_(True)
        constraints = {n: store._constraints[n] for n in params}
        self.state = {"params": params, "constraints": constraints}
        self._depth = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within the block, ``pyro.param`` reads and writes this scope."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            with pyro.get_param_store().scope(self.state):
                yield
        finally:
            self._depth = 0

    def _live(self) -> tuple[dict, dict]:
        """(params, constraints): the store's own dicts while the scope is active, else its
        saved state."""
        if self._depth:
            store = pyro.get_param_store()
            return store._params, store._constraints
        return self.state["params"], self.state["constraints"]

    def unconstrained(self, names: tuple[str, ...] | list[str]) -> list[torch.Tensor]:
        params = self._live()[0]
        return [params[n] for n in names]

    def constraint(self, name: str) -> Any:
        return self._live()[1][name]

    def value(self, name: str) -> torch.Tensor:
        """The constrained value of a parameter."""
        return transform_to(self.constraint(name))(self._live()[0][name])

    def set(
        self, name: str, value: torch.Tensor, constraint: Any, unconstrained: Any = None
    ) -> None:
        """Sets a parameter to a constrained ``value`` (or the given ``unconstrained`` leaf)."""
        with torch.no_grad():
            leaf = transform_to(constraint).inv(value) if unconstrained is None else unconstrained
            leaf = leaf.detach().clone().contiguous().requires_grad_(True)
        if self._depth:
            store = pyro.get_param_store()
            store._constraints[name] = constraint
            store._params[name] = leaf
            store._param_to_name[leaf] = name
        else:
            self.state["params"][name] = leaf
            self.state["constraints"][name] = constraint


_SCOPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scope_of(owner: Any, fresh: bool = False) -> ParamScope:
    scope = None if fresh else _SCOPES.get(owner)
    if scope is None:
        scope = ParamScope()
        _SCOPES[owner] = scope
    return scope


# -- pairs -----------------------------------------------------------------------------------------


def _owner_module(fn: Any) -> torch.nn.Module | None:
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


@dataclass(eq=False)
class Pair:
    """A model/guide pair, whatever form it came in, with what owns its parameters.

    ``module`` is the ``nn.Module`` whose parameters the pair trains (an object with ``model``
    and ``guide`` methods, or the object bound methods belong to); ``owner`` is what its
    :class:`ParamScope` belongs to (the module, or the model function of a plain-function pair).
    """

    model: Callable
    guide: Callable
    module: torch.nn.Module | None = None
    owner: Any = None

    @property
    def scope(self) -> ParamScope:
        return _scope_of(self.owner if self.owner is not None else self.model)

    def new_scope(self) -> ParamScope:
        """A fresh parameter scope for this pair (``fit`` of a plain-function pair)."""
        return _scope_of(self.owner if self.owner is not None else self.model, fresh=True)

    @property
    def name(self) -> str:
        if self.module is not None:
            return type(self.module).__name__
        return getattr(self.model, "__qualname__", getattr(self.model, "__name__", "model"))

    def scoped_names(self, param_names: tuple[str, ...]) -> tuple[str, ...]:
        """The ``pyro.param`` names whose tensors are not the module's own (what a checkpoint
        keeps beside the module's state)."""
        own = {id(p) for p in self.module.parameters()} if self.module is not None else set()
        return tuple(
            n
            for n, p in zip(param_names, self.scope.unconstrained(param_names))
            if id(p) not in own
        )


def param_scope(model: Any, guide: Callable | None = None) -> ParamScope:
    """The :class:`ParamScope` holding a pair's ``pyro.param`` values.

    Example:
        >>> import sys; sys.path.insert(0, "models")
        >>> from ppca import PPCA
        >>> with param_scope(PPCA(4, 2)).active():  # pyro.param reads this model's values
        ...     pass
    """
    if guide is None and not isinstance(model, (Pair, tuple)) and not hasattr(model, "guide"):
        if callable(model):  # the model function of a plain pair: its scope is the model's
            owner = _owner_module(model)
            return _scope_of(owner if owner is not None else model)
    return as_pair(model, guide).scope


def as_pair(model: Any, guide: Callable | None = None) -> Pair:
    """A :class:`Pair` from any form Pyro users write one in.

    Accepted: a :class:`Pair`; an object with ``model`` and ``guide`` methods
    (:class:`~pyrogen.model.GenerativeModel`, any ``nn.Module``); a ``(model, guide)`` tuple; or
    the model callable with ``guide=``.
    """
    if isinstance(model, Pair):
        return model
    if isinstance(model, tuple):
        if len(model) != 2 or not all(callable(f) for f in model):
            raise ConfigError("a pair given as a tuple must be (model, guide), two callables")
        model, guide = model
    elif guide is None:
        m, g = getattr(model, "model", None), getattr(model, "guide", None)
        if callable(m) and callable(g):
            module = model if isinstance(model, torch.nn.Module) else None
            return Pair(m, g, module, model)
        raise ConfigError(
            f"{type(model).__name__} is not a model/guide pair: pass (model, guide, *args), a "
            "(model, guide) tuple, or an object with model and guide methods"
        )
    if not callable(model) or not callable(guide):
        raise ConfigError("the model and the guide must be callables")
    module = _owner_module(model) or _owner_module(guide)
    return Pair(model, guide, module, module if module is not None else model)


def take_rows(args: tuple, kwargs: dict, n: int, rows: Any) -> tuple[tuple, dict]:
    """The arguments for some rows of N data points (a slice or an index tensor): every tensor
    whose first dimension is N is cut; anything else passes unchanged."""

    def cut(a: Any) -> Any:
        return a[rows] if _is_batch(a, n) else a

    return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}


def data_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The first tensor argument with rows (the data x), or None."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor) and a.dim():
            return a
    return None


def data_rows(args: tuple, kwargs: dict) -> int:
    """N, the rows of the data: the first dimension of the first tensor argument."""
    x = data_tensor(args, kwargs)
    if x is None:
        raise ConfigError("no data: the pair's arguments hold no tensor with rows")
    return int(x.shape[0])


def split_pair(first: Any, rest: tuple) -> tuple[Pair, tuple]:
    """``(pair, args)`` from a call's positional arguments: ``(model, guide, *args)`` as in
    Pyro's ``SVI``, or ``(pair, *args)`` with any form :func:`as_pair` takes."""
    if isinstance(first, (Pair, tuple)) or (
        callable(getattr(first, "model", None)) and callable(getattr(first, "guide", None))
    ):
        return as_pair(first), rest
    if rest and callable(rest[0]) and not isinstance(rest[0], torch.Tensor):
        return as_pair(first, rest[0]), rest[1:]
    raise ConfigError(
        "expected (model, guide, *args), a (model, guide) tuple or an object with model and "
        "guide methods, then the data"
    )


# -- the layout of a pair --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What :func:`probe` learnt about a pair from one run on a real batch."""

    nesting: int  # the pair's own plate depth (Pyro's max_plate_nesting)
    data_plate: str
    data_dim: int  # the (negative) tensor dim of the data plate
    size: int  # rows in the probed batch
    batched: tuple[bool, ...]  # per positional argument: sliced with the data
    batched_kwargs: frozenset[str]
    latent: tuple[str, ...]  # model latent sites the guide samples
    observed: tuple[str, ...]
    enumerated: tuple[str, ...] = ()  # model sites summed out
    discrete: tuple[str, ...] = ()  # guide sites without rsample
    params: tuple[str, ...] = ()  # pyro.param sites of model and guide
    vectorized: bool = True  # particles in a plate (False: one after another)
    value_dims: tuple[tuple[str, int], ...] = field(default=())  # a guide value's own dims
    shared: tuple[str, ...] = ()  # latent sites outside the data plate (training only)

    def rows(self, args: tuple, kwargs: dict) -> int:
        """How many data points the arguments hold (the first batched argument's length)."""
        for a, b in zip(args, self.batched):
            if b:
                return int(a.shape[0])
        for k in self.batched_kwargs:
            if k in kwargs:
                return int(kwargs[k].shape[0])
        return self.size


def _frames(site: dict) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE]


def _find_data_plate(model_tr: poutine.Trace, args: tuple, kwargs: dict, data_plate: str | None):
    observed = [
        s
        for s in model_tr.nodes.values()
        if s["type"] == "sample" and s["is_observed"] and _counts(s)
    ]
    if not observed:
        raise ContractError("the model has no observed site: pass the data with obs=x")
    plates: dict[str, Any] = {}
    for s in model_tr.nodes.values():
        if s["type"] == "sample":
            for f in _frames(s):
                plates.setdefault(f.name, f)
    if data_plate is not None:
        if data_plate not in plates:
            raise ConfigError(
                f"data_plate={data_plate!r} is not a plate of the model "
                f"(its plates: {', '.join(plates) or 'none'})"
            )
        return plates[data_plate]
    around_all = [
        f
        for name, f in plates.items()
        if all(name in {g.name for g in _frames(s)} for s in observed)
    ]
    if not around_all:
        site = next(s for s in observed if not _frames(s))
        raise ContractError(
            f"observed site '{site['name']}' is in no plate: put the data points in a "
            "pyro.plate (any name) so that each keeps its own weight"
        )
    x = data_tensor(args, kwargs)
    if len(around_all) > 1 and x is not None:
        sized = [f for f in around_all if (f.full_size or f.size) == x.shape[0]]
        around_all = sized or around_all
    if len(around_all) > 1:
        named = [f for f in around_all if f.name == "data"]
        if len(named) == 1:
            return named[0]
        raise ContractError(
            "several plates could be the data plate ("
            + ", ".join(f"'{f.name}' of size {f.size}" for f in around_all)
            + "): name it with data_plate='...'"
        )
    return around_all[0]


def _check_plates(
    model_tr: poutine.Trace, guide_tr: poutine.Trace, data: Any, per_datapoint: bool
) -> tuple[str, ...]:
    """Refuses a subsampled plate; returns the sites outside the data plate (refused, naming
    the first, where ``per_datapoint``: such a site is shared by every data point)."""
    outside = []
    for tr, who in ((model_tr, "model"), (guide_tr, "guide")):
        for name, s in tr.nodes.items():
            if s["type"] != "sample":
                continue
            if is_subsample(s):
                size, sub = s["fn"].size, s["fn"].subsample_size
                if sub is not None and sub < size:
                    raise ContractError(
                        f"plate '{name}' of the {who} subsamples {sub} of its {size} entries "
                        "(subsample_size): weights would belong to entries drawn at random; "
                        "give the pair the rows to evaluate as its batch instead"
                    )
                continue
            if not _counts(s) or data.name in {f.name for f in _frames(s)}:
                continue
            if per_datapoint or s["is_observed"]:
                kind = "observed" if s["is_observed"] else "latent"
                raise ContractError(
                    f"{kind} site '{name}' of the {who} is outside the data plate "
                    f"'{data.name}': per-datapoint weights are undefined for a site shared by "
                    "all data points"
                )
            outside.append(name)
    return tuple(dict.fromkeys(outside))


def _site_lists(model_tr: poutine.Trace, guide_tr: poutine.Trace) -> tuple[list, list, list, list]:
    def sites(tr: poutine.Trace) -> dict[str, dict]:
        return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and _counts(s)}

    model, guide = sites(model_tr), sites(guide_tr)
    latent, enumerated = [], []
    for name, s in model.items():
        if s["is_observed"]:
            continue
        if name in guide:
            latent.append(name)
            continue
        how = s["infer"].get("enumerate")
        if how == "parallel":
            enumerated.append(name)
        elif how is not None:
            raise ContractError(
                f"model site '{name}' is marked enumerate={how!r}: only parallel enumeration "
                "(config_enumerate's default) can be summed out per data point"
            )
        else:
            hint = ""
            if name.endswith("_unobserved"):
                hint = (
                    f" (obs_mask's imputed entries: Pyro asks the guide for a site "
                    f"'{name}', or leave the entries out with poutine.mask)"
                )
            raise ContractError(
                f"latent site '{name}' of the model has no site in the guide and is not marked "
                f"for enumeration: the guide must sample '{name}', or mark it "
                f"infer={{'enumerate': 'parallel'}}{hint}"
            )
    for name, s in guide.items():
        if s["is_observed"]:
            continue
        if name not in model:
            raise ContractError(
                f"guide site '{name}' is not a site of the model "
                f"(model latent sites: {', '.join(latent + enumerated) or 'none'})"
            )
        if model[name]["is_observed"]:
            raise ContractError(
                f"guide site '{name}' is observed in the model; it cannot be latent"
            )
    observed = [n for n, s in model.items() if s["is_observed"]]
    discrete = [n for n in latent if not guide[n]["fn"].has_rsample]
    return latent, observed, enumerated, discrete


def _nesting(*traces: poutine.Trace) -> int:
    nesting = 0
    for tr in traces:
        for s in tr.nodes.values():
            if s["type"] == "sample":
                for f in _frames(s):
                    nesting = max(nesting, -f.dim)
    return nesting


def _is_batch(a: Any, n: int) -> bool:
    return isinstance(a, torch.Tensor) and a.dim() >= 1 and a.shape[0] == n


def _shape_of(args: tuple, kwargs: dict) -> str:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return f" on a batch of shape {list(a.shape)}"
    return ""


def run_traced(
    pair: Pair, args: tuple, kwargs: dict | None = None, fn: Callable | None = None, what: str = ""
) -> poutine.Trace:
    """One plain run of ``fn`` (default the guide) under ``poutine.trace``, without gradients, in
    the pair's parameter scope; a failure of the user's code becomes a ContractError that says
    what ran on which batch."""
    kwargs = kwargs or {}
    fn = fn or pair.guide
    try:
        with torch.no_grad(), pyro.validation_enabled(False), pyro_checks(), pair.scope.active():
            return poutine.trace(fn).get_trace(*args, **kwargs)
    except ContractError:
        raise
    except (ValueError, RuntimeError, TypeError, IndexError, KeyError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "Shape mismatch inside plate" in first:
            first += " (declare a site's event dims with .to_event(...))"
        raise ContractError(
            f"running the {what or 'guide'}{_shape_of(args, kwargs)} failed: {first}"
        ) from e


def run_model(
    pair: Pair,
    args: tuple,
    kwargs: dict | None = None,
    condition: dict[str, torch.Tensor] | None = None,
    uncondition: bool = False,
    layout: Layout | None = None,
) -> poutine.Trace:
    """The model alone, traced: its latent sites drawn from the prior or fixed by
    ``condition``; with ``uncondition`` its observed sites are drawn too (samples of x). With a
    ``layout``, under a plate of one particle left of the pair's plates (values [1, N, ...])."""
    fn = pair.model
    if condition:
        fn = poutine.condition(fn, data=condition)
    if uncondition:
        fn = poutine.uncondition(fn)
    if layout is not None:
        inner = fn

        def fn(*a: Any, **k: Any) -> Any:
            with _particle_plate(layout, 1):
                return inner(*a, **k)

    return run_traced(pair, args, kwargs, fn, "model")


def trace_pair(
    pair: Pair,
    args: tuple,
    kwargs: dict | None = None,
    check: Callable[[poutine.Trace, poutine.Trace], None] | None = None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """The guide's trace and the model's, replayed on the guide's draws (one particle).

    ``check(guide_trace, prior_trace)`` runs between the two on a run of the model alone, so
    that it can name what disagrees before the model meets the guide's draws.
    """
    guide_tr = run_traced(pair, args, kwargs)
    if check is not None:
        check(guide_tr, run_model(pair, args, kwargs))
    model = poutine.replay(pair.model, trace=guide_tr)
    return guide_tr, run_traced(pair, args, kwargs, model, "model on the guide's draws")


def probe(
    pair: Pair,
    args: tuple,
    kwargs: dict | None = None,
    data_plate: str | None = None,
    check_particles: bool = True,
    per_datapoint: bool = True,
    traces: tuple[poutine.Trace, poutine.Trace] | None = None,
) -> Layout:
    """Runs the pair once on ``args`` (a real batch) and learns its :class:`Layout`.

    With ``per_datapoint`` (the weights, AIS, validation) every latent site must lie in the data
    plate; without it (training by Pyro's ELBOs) a site outside it is recorded in
    ``Layout.shared``.

    Raises:
        ContractError: naming the site, for a latent or observed site outside the data plate, a
            model latent site the guide lacks (and not enumerated), a guide site the model lacks,
            a subsampled plate, or a site name used twice.
    """
    kwargs = kwargs or {}
    if traces is None:
        with torch.random.fork_rng(devices=[]):  # probing leaves the user's random stream be
            traces = trace_pair(pair, args, kwargs)
    guide_tr, model_tr = traces
    data = _find_data_plate(model_tr, args, kwargs, data_plate)
    shared = _check_plates(model_tr, guide_tr, data, per_datapoint)
    latent, observed, enumerated, discrete = _site_lists(model_tr, guide_tr)
    n = int(data.size)
    params = tuple(
        dict.fromkeys(
            n_ for tr in (guide_tr, model_tr) for n_, s in tr.nodes.items() if s["type"] == "param"
        )
    )
    layout = Layout(
        nesting=_nesting(guide_tr, model_tr),
        data_plate=data.name,
        data_dim=int(data.dim),
        size=n,
        batched=tuple(_is_batch(a, n) for a in args),
        batched_kwargs=frozenset(k for k, v in kwargs.items() if _is_batch(v, n)),
        latent=tuple(latent),
        observed=tuple(observed),
        enumerated=tuple(enumerated),
        discrete=tuple(discrete),
        params=params,
        value_dims=tuple((m, int(guide_tr.nodes[m]["value"].dim())) for m in latent),
        shared=shared,
    )
    if check_particles and not shared and not _broadcasts(pair, layout, args, kwargs):
        layout = Layout(**{**layout.__dict__, "vectorized": False})
    return layout


def _broadcasts(pair: Pair, layout: Layout, args: tuple, kwargs: dict) -> bool:
    """Whether the pair runs under a plate of particles with the numbers of a plain run."""
    seq = Layout(**{**layout.__dict__, "vectorized": False})
    with (
        torch.no_grad(),
        pyro.validation_enabled(False),
        torch.random.fork_rng(devices=[]),
        pair.scope.active(),
    ):
        state = torch.get_rng_state()
        try:
            vec = log_weights_chunk(pair, layout, args, kwargs, 1)
        except (RuntimeError, ValueError, IndexError) as e:
            if isinstance(e, ContractError):
                raise
            return False
        torch.set_rng_state(state)
        one = log_weights_chunk(pair, seq, args, kwargs, 1)
    return vec.shape == one.shape and bool(torch.allclose(vec, one, rtol=1e-4, atol=1e-4))


# -- log-densities per particle and data point -----------------------------------------------------


def _per_point(lp: torch.Tensor, site: dict, layout: Layout, particles: bool) -> torch.Tensor:
    """A site's (masked) log-density summed to [P, N] (``particles``) or [N]."""
    width = layout.nesting + (1 if particles else 0)
    if lp.dim() > width:
        raise ContractError(
            f"site '{site['name']}' has log_prob shape {list(lp.shape)} with dims outside any "
            "plate; declare its event dims with .to_event(...)"
        )
    if lp.dim() < width:
        lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    keep = {width + layout.data_dim} | ({0} if particles else set())
    others = [i for i in range(width) if i not in keep]
    return lp.sum(others) if others else lp


def _log_prob(site: dict) -> torch.Tensor:
    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    mask = site["mask"]
    return lp if mask is None else scale_and_mask(lp, mask=mask)


def _sum_sites(sites: list[dict], layout: Layout, particles: bool) -> torch.Tensor | float:
    total: torch.Tensor | float = 0.0
    for site in sites:
        total = total + _per_point(_log_prob(site), site, layout, particles)
    return total


def _contract(sites: list[dict], layout: Layout, particles: bool) -> torch.Tensor:
    """log sum over the enumerated values of prod of the sites' densities, per point: the
    model's log p(x, z) with its enumerated sites summed out (Pyro's tensor contraction)."""
    width = layout.nesting + (1 if particles else 0)
    plate_symbols: dict[str, str] = {}
    enum_symbols: dict[int, str] = {}
    tree: OrderedDict = OrderedDict()

    def symbol_of_plate(name: str) -> str:
        if name not in plate_symbols:
            plate_symbols[name] = get_symbol(len(plate_symbols) + len(enum_symbols))
        return plate_symbols[name]

    for site in sites:
        dim = site["infer"].get("_enumerate_dim")
        if dim is not None and dim not in enum_symbols:
            enum_symbols[dim] = get_symbol(len(plate_symbols) + len(enum_symbols))
    for site in sites:
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        dim_to_symbol = {f.dim: symbol_of_plate(f.name) for f in frames}
        dim_to_symbol.update(enum_symbols)
        lp = _log_prob(site)
        try:
            packed = pack(lp, dim_to_symbol)
        except ValueError as e:
            raise ContractError(
                f"site '{site['name']}' has log_prob shape {list(lp.shape)} that does not fit "
                f"its plates and the enumerated dims: {str(e).splitlines()[0]}"
            ) from None
        ordinal = frozenset(dim_to_symbol[f.dim] for f in frames)
        tree.setdefault(ordinal, []).append(packed)
    target = {symbol_of_plate(layout.data_plate)}
    if particles:
        target.add(symbol_of_plate(PARTICLE_PLATE))
    sizes = {}
    for terms in tree.values():
        for term in terms:
            sizes.update(zip(term._pyro_dims, term.shape))
    for site in sites:  # a plate no term varies along still has its size
        for f in site["cond_indep_stack"]:
            if f.vectorized:
                sizes.setdefault(symbol_of_plate(f.name), f.size)
    ring = LogRing(dim_to_size=sizes)
    result = contract_to_tensor(
        tree, set(enum_symbols.values()), target_ordinal=frozenset(target), ring=ring
    )
    symbol_to_dim = {s: d for d, s in enum_symbols.items()}
    symbol_to_dim[symbol_of_plate(layout.data_plate)] = layout.data_dim
    if particles:
        symbol_to_dim[symbol_of_plate(PARTICLE_PLATE)] = -width
    lp = unpack(result, symbol_to_dim)
    fake = {"name": "the enumerated sum"}
    return _per_point(
        lp.reshape(lp.shape[-width:]) if lp.dim() > width else lp, fake, layout, particles
    )


@dataclass
class Densities:
    """log p(x, z) and log q(z | x) per particle and data point ([P, N] each), and the guide's
    run (its latent messages, to read values and distributions)."""

    log_p: torch.Tensor
    log_q: torch.Tensor | None
    guide_sites: list[dict]

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p if self.log_q is None else self.log_p - self.log_q


def _particle_plate(layout: Layout, size: int) -> Any:
    return pyro.plate(PARTICLE_PLATE, size, dim=-(layout.nesting + 1))


def _model_log_p(model_run: _Recorder, layout: Layout, particles: bool) -> torch.Tensor:
    sites = model_run.counted()
    if layout.enumerated:
        return _contract(sites, layout, particles)
    return _sum_sites(sites, layout, particles)


def _run_once(
    pair: Pair,
    layout: Layout,
    args: tuple,
    kwargs: dict,
    size: int,
    values: dict[str, torch.Tensor] | None,
    with_guide: bool,
    particles: bool,
) -> tuple[Any, Any, _Recorder | None]:
    """One run of the guide (unless ``with_guide`` is False) and of the model on its draws (or on
    ``values``), vectorized over ``size`` particles when ``particles``."""
    plate = _particle_plate(layout, size) if particles else contextlib.nullcontext()
    log_q, guide_run, replay = None, None, dict(values or {})
    if with_guide:
        guide_run = _Recorder(replay)
        with guide_run, plate:
            pair.guide(*args, **kwargs)
        log_q = _sum_sites(guide_run.counted(), layout, particles)
        replay = guide_run.values()
    model_run = _Recorder(replay)
    enum = (
        poutine.enum(first_available_dim=-(layout.nesting + 2 if particles else layout.nesting + 1))
        if layout.enumerated
        else contextlib.nullcontext()
    )
    plate = _particle_plate(layout, size) if particles else contextlib.nullcontext()
    with model_run, enum, plate:
        pair.model(*args, **kwargs)
    return _model_log_p(model_run, layout, particles), log_q, guide_run


def _own_dims(layout: Layout, name: str, v: torch.Tensor) -> torch.Tensor:
    dims = dict(layout.value_dims).get(name, v.dim())
    while v.dim() > dims and v.shape[0] == 1:
        v = v[0]
    return v


def densities(
    pair: Pair,
    layout: Layout,
    args: tuple,
    kwargs: dict,
    size: int,
    values: dict[str, torch.Tensor] | None = None,
    with_guide: bool = True,
) -> Densities:
    """log p(x, z) and log q(z | x), each [size, N], for ``size`` guide draws per point, or at
    given latent ``values`` (a dict by site, the particle dim first).

    With ``with_guide=False`` only the model runs (on ``values``) and ``log_q`` is None.
    """
    n = layout.rows(args, kwargs)
    if layout.vectorized:
        log_p, log_q, run = _run_once(pair, layout, args, kwargs, size, values, with_guide, True)
        log_p = _expand(log_p, size, n)
        log_q = None if log_q is None else _expand(log_q, size, n)
        return Densities(log_p, log_q, run.latent() if run is not None else [])
    ps, qs, runs = [], [], []
    for i in range(size):
        vals = (
            None if values is None else {k: _own_dims(layout, k, v[i]) for k, v in values.items()}
        )
        log_p, log_q, run = _run_once(pair, layout, args, kwargs, 1, vals, with_guide, False)
        ps.append(_expand(log_p, 1, n)[0])
        if log_q is not None:
            qs.append(_expand(log_q, 1, n)[0])
        if run is not None:
            runs.append(run.latent())
    sites = []
    if runs:  # the draws stacked along a leading particle dim, as a vectorized run has them
        for k, site in enumerate(runs[0]):
            stacked = torch.stack([r[k]["value"] for r in runs])
            sites.append({**site, "value": stacked})
    return Densities(torch.stack(ps), torch.stack(qs) if qs else None, sites)


def _expand(t: Any, size: int, n: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(float(t))
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.expand(size, n) if t.dim() == 2 else t.reshape(1, 1).expand(size, n)


def log_weights_chunk(
    pair: Pair, layout: Layout, args: tuple, kwargs: dict, size: int
) -> torch.Tensor:
    """w = log p(x, z) - log q(z | x) for ``size`` fresh guide draws per data point: [size, N]."""
    return densities(pair, layout, args, kwargs, size).log_w


def draw(pair: Pair, layout: Layout, args: tuple, kwargs: dict, size: int) -> list[dict]:
    """``size`` draws of the guide per point: its latent messages (values, distributions,
    plates), the particle dim first."""
    with torch.no_grad():
        return densities(pair, layout, args, kwargs, size).guide_sites


# -- the training ELBO -----------------------------------------------------------------------------


def elbo_surrogate(pair: Pair, args: tuple, kwargs: dict | None = None) -> torch.Tensor | None:
    """``-Trace_ELBO().differentiable_loss`` for one particle of a reparametrized guide, leaner.

    With every guide site reparametrized, Trace_ELBO's surrogate is
    sum_model log p(site) - sum_guide log q(site) over the scaled and masked site log-densities
    (the entropy terms of ``score_parts``). This sums exactly those terms in Trace_ELBO's order,
    so the gradient is bitwise Trace_ELBO's, over lean recordings of the two runs and without
    Trace_ELBO's per-site host syncs. Returns None for a guide site with a score-function term
    (no rsample): the caller then uses Pyro's ELBO itself.
    """
    kwargs = kwargs or {}
    guide_run = _Recorder()
    with guide_run:
        pair.guide(*args, **kwargs)
    model_run = _Recorder(guide_run.values())
    with model_run:
        pair.model(*args, **kwargs)
    log_p_sums = []
    for site in model_run.sites:
        if not is_subsample(site):
            log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            log_p_sums.append(scale_and_mask(log_p, site["scale"], site["mask"]).sum())
    entropy = []
    for site in guide_run.sites:
        if not is_subsample(site):
            parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
            parts = parts.scale_and_mask(site["scale"], site["mask"])
            if not is_identically_zero(parts.score_function):
                return None
            entropy.append(parts.entropy_term)
    surrogate: Any = 0
    for term in log_p_sums:
        surrogate = surrogate + term
    for term in entropy:
        surrogate = surrogate - term.sum()
    return -surrogate
