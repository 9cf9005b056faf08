"""The settings of a training run: :class:`TrainConfig`, the one list of them.

Every setting is a field with its default, its help text and its check. :func:`pyrogen.fit` takes
them as keyword arguments, ``pyrogen train`` generates its flags from them (so ``--help`` shows
every default), ``--config FILE.toml`` and a run's ``config.json`` are read through
:meth:`TrainConfig.from_dict`, and ``--resume`` compares two of them with :meth:`TrainConfig.diff`.
Every bad value is named before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrogen.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig", "add_train_flags"]

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adam-normgrad")
SEED_LIMIT = 2**63


def _number(name: str, value: Any, kind: type, text_ok: bool) -> Any:
    """``value`` as an int or float; strings only where they come from a command line."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        if not text_ok:
            raise ConfigError(f"{name} must be a number, got the text {value!r}")
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            raise ConfigError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            value = int(value)
        return value
    return float(value)


def _check_positive_int(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


def _check_non_negative_int(name: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")


def _check_positive_finite(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")


def _check_seed(name: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{name} must be an integer in [0, 2**63), got {value}")


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"{name} must be in (0, 1), got {value}")


def _choices(*options: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {value!r}")

    return check


def _check_objective(name: str, value: str) -> None:
    from pyrogen.train.objectives import OBJECTIVES

    if value not in OBJECTIVES:
        raise ConfigError(f"unknown objective {value!r}: choose one of {', '.join(OBJECTIVES)}")


def setting(
    default: Any,
    help: str,
    kind: type = str,
    check: Callable[[str, Any], None] | None = None,
    optional: bool = False,
    flag: str | None = None,
    cli_default: Any = None,
) -> Any:
    """A field of :class:`TrainConfig`: its default, help text, type and check."""
    meta = {
        "help": help,
        "kind": kind,
        "check": check,
        "optional": optional,
        "flag": flag,
        "cli_default": cli_default,
    }
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; frozen, checked on construction.

    Example:
        >>> TrainConfig(epochs=5, lr=0.01).lr
        0.01
        >>> TrainConfig(lr=float("inf"))
        Traceback (most recent call last):
        ...
        pyrogen.errors.ConfigError: lr (--lr) must be a positive finite number, got inf
    """

    data: str | None = setting(
        None,
        "digits, fashion-mnist, mnist, or a .npy/.npz/.csv/.pt file (from Python: the name "
        "recorded for the tensors given to fit, so every command can load them again)",
        optional=True,
        cli_default="digits",
    )
    val_fraction: float = setting(
        0.1, "fraction of the training rows held out for validation", float, _check_fraction
    )
    scale: str | None = setting(
        None,
        "rescale your own data file: none, 255 (8-bit pixels to [0, 1]), minmax (each column "
        "to [0, 1]) or standardize",
        check=_choices("none", "255", "minmax", "standardize"),
        optional=True,
    )
    binarize: str | None = setting(
        None,
        "dynamic (a fresh Bernoulli draw per batch), static or none; the command line's "
        "default: dynamic for digits/mnist/fashion-mnist, none for files",
        check=_choices("dynamic", "static", "none"),
        optional=True,
    )
    model_options: dict = setting(
        {},
        "constructor arguments of the model (KEY=VALUE, repeatable; TOML: a [model] table)",
        dict,
        flag="--model-option",
    )
    epochs: int = setting(
        30,
        "passes over the training data (with --resume: the total to reach)",
        int,
        _check_positive_int,
    )
    batch_size: int = setting(
        128, "minibatch size (under torchrun: the global batch)", int, _check_positive_int
    )
    lr: float = setting(1e-3, "learning rate", float, _check_positive_finite)
    optimizer: str = setting(
        "adam",
        f"the torch optimizer: {', '.join(OPTIMIZERS)} (fit also takes a class or factory)",
        check=None,
    )
    objective: str = setting(
        "elbo",
        "elbo (Trace_ELBO), mean-field, iwae, iwae-dreg, score-function (TraceGraph_ELBO), "
        "or one registered with pyrogen.train.register_objective",
        check=_check_objective,
    )
    num_particles: int = setting(
        1,
        "ELBO particles, or k of the IWAE objectives",
        int,
        _check_positive_int,
        flag="--particles",
    )
    lr_schedule: str = setting(
        "constant",
        "constant, cosine (to zero) or step (/10 at 1/2 and 3/4 of training)",
        check=_choices(*SCHEDULES),
    )
    kl_warmup: int = setting(
        0,
        "epochs over which the weight of the latent sites rises linearly to 1",
        int,
        _check_non_negative_int,
    )
    clip_norm: float | None = setting(
        None,
        "clip the global gradient norm to this value",
        float,
        _check_positive_finite,
        optional=True,
    )
    patience: int | None = setting(
        None,
        "stop when the validation ELBO has not improved for this many epochs (>= 1; unset: "
        "never stop early)",
        int,
        _check_positive_int,
        optional=True,
    )
    on_nan: str = setting(
        "stop",
        "a non-finite loss or gradient: stop (keeping the last good checkpoint) or skip the batch",
        check=_choices("stop", "skip"),
    )
    seed: int = setting(0, "seeds torch, Pyro, NumPy and the shuffling", int, _check_seed)
    device: str | None = setting(
        None,
        "cpu, cuda or auto (from Python, unset: where the model's parameters are)",
        optional=True,
        cli_default="cpu",
    )
    tensorboard: str | None = setting(
        None,
        "also log to TensorBoard event files in this folder",
        optional=True,
    )

    def __post_init__(self) -> None:
        for name in ("binarize", "scale"):  # "none" is the command line's spelling of None
            if getattr(self, name) == "none":
                object.__setattr__(self, name, None)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            label = f"{f.name} ({_flag(f)})"  # the name in Python and TOML, and on the command line
            if value is None and f.metadata["optional"]:
                continue
            if value is None:
                raise ConfigError(f"{label} must be set")
            kind = f.metadata["kind"]
            if kind in (int, float):
                value = _number(label, value, kind, text_ok=False)
            elif kind is dict:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{label} must be a table of KEY = VALUE, got {value!r}")
                value = dict(value)
            elif not isinstance(value, str):
                raise ConfigError(f"{label} must be text, got {value!r}")
            if f.metadata["check"] is not None:
                f.metadata["check"](label, value)
            object.__setattr__(self, f.name, value)
        if self.objective.startswith("iwae") and self.num_particles < 2:
            raise ConfigError(
                f"objective {self.objective} with num_particles={self.num_particles} is "
                "IWAE_1, the ELBO: pass --particles k with k >= 2 (e.g. --particles 5)"
            )

    # ---- conversions ----------------------------------------------------------------------

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "the settings") -> TrainConfig:
        """Builds a config from a mapping (JSON, TOML); an unknown key is an error naming it."""
        known = set(cls.names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source} has unknown settings: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text), "the JSON settings")

    @classmethod
    def from_toml(cls, text: str, source: str = "the TOML file") -> TrainConfig:
        """The settings of a TOML file; its ``[model]`` table holds the model's options."""
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source} is not valid TOML: {e}") from None
        return cls.from_dict(toml_settings(values, source), source)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def diff(self, other: TrainConfig, ignore: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
        """Settings that differ: ``{name: (self's value, other's value)}``."""
        skip = set(ignore)
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in self.names()
            if name not in skip and getattr(self, name) != getattr(other, name)
        }


def toml_settings(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The keys of a TOML table as field names (``-`` to ``_``; ``particles``, ``[model]``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name == "model" and isinstance(value, Mapping):
            out["model_options"] = {k.replace("-", "_"): v for k, v in value.items()}
            continue
        out[_FLAG_NAMES.get(name, name)] = value
    return out


def _flag(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


_FLAG_NAMES = {
    _flag(f).lstrip("-").replace("-", "_"): f.name
    for f in dataclasses.fields(TrainConfig)
    if f.metadata["flag"]
}
"""The other spelling of a field's name (``particles`` for ``num_particles``)."""


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; each defaults to None (= not given) and its help
    shows the field's default."""
    for f in dataclasses.fields(TrainConfig):
        default = f.metadata["cli_default"] or f.default
        shown = "unset" if default is None or default is dataclasses.MISSING else default
        if f.metadata["kind"] is dict:
            parser.add_argument(
                _flag(f),
                dest=f.name,
                action="append",
                default=None,
                metavar="KEY=VALUE",
                help=f.metadata["help"],
            )
            continue
        parser.add_argument(
            _flag(f),
            dest=f.name,
            default=None,
            metavar=f.name.upper() if f.metadata["kind"] is not str else None,
            help=f"{f.metadata['help']} (default: {shown})",
        )


def settings_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line, converted from text (``--lr 1e-2``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        kind = f.metadata["kind"]
        if kind is dict:
            value = parse_key_values(value, _flag(f))
        elif kind in (int, float):
            value = _number(f"{f.name} ({_flag(f)})", value, kind, text_ok=True)
        out[f.name] = value
    return out


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (values stay text until the model's
    constructor says their type)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def cli_defaults() -> dict[str, Any]:
    """The command line's defaults where they differ from :class:`TrainConfig`'s."""
    return {
        f.name: f.metadata["cli_default"]
        for f in dataclasses.fields(TrainConfig)
        if f.metadata["cli_default"] is not None
    }
