"""The arguments of the ``pyrogen`` command, --config TOML files and checks of the options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

import torch

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from pyrogen import distributed
from pyrogen.errors import ConfigError
from pyrogen.train.config import TrainConfig, add_train_flags, toml_settings

__all__ = ["COMMAND_KEYS", "DEFAULT_EPOCHS", "MODEL_SHORTCUTS", "TRAIN_KEYS"]

DEFAULT_EPOCHS = TrainConfig().epochs

#: flags for three common model options (each is --model-option KEY=VALUE)
MODEL_SHORTCUTS = {
    "latent_dim": "the latent dimension (= --model-option latent_dim=N)",
    "hidden_dims": "hidden layer widths, e.g. 400 or 200,200 (= --model-option hidden_dims=...)",
    "likelihood": "p(x | z) for models that take it (vae): bernoulli (binary), gaussian or "
    "studentt (real values), poisson (counts) (= --model-option likelihood=...)",
}

#: options of the train and run commands that are not training settings, also allowed in TOML
COMMAND_KEYS = {"out", "quiet", "ks", "eval_particles", "split", "limit"}

TRAIN_KEYS = set(TrainConfig.names()) | set(MODEL_SHORTCUTS) | COMMAND_KEYS | {"particles", "model"}


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ks",
        default="1,10,100,1000",
        help="k of the IWAE bounds, comma-separated; 1 is the ELBO (default %(default)s)",
    )
    p.add_argument(
        "--eval-particles",
        type=int,
        default=None,
        help="pool size K per data point (default: the largest k)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "val", "train"],
        help="data split to evaluate (default %(default)s)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N points")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="models/vae.py, models/vae.py:ClassName, or a zoo name (vae); "
        "with --resume, read from the run directory",
    )
    add_train_flags(p)  # one flag per field of TrainConfig
    for name, text in MODEL_SHORTCUTS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=text)
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA-TIME)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (with --epochs N: to N epochs in all)",
    )
    p.add_argument(
        "--override",
        action="store_true",
        help="with --resume: change the settings given (recorded in config.json)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: data parallel in N processes on this machine (through torchrun)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="a TOML file of these options (a [model] table for the model's); the command "
        "line's win",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    from pyrogen import __version__

    parser = Parser(
        prog="pyrogen",
        description="Deep latent-variable generative models on Pyro with honest likelihoods.",
    )
    parser.add_argument("--version", action="version", version=f"pyrogen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train a model/guide pair by SVI into a run directory")
    _add_train_options(p)

    p = sub.add_parser("run", help="the main job: train, evaluate the bounds, report")
    _add_train_options(p)
    _add_eval_options(p)

    p = sub.add_parser("evaluate", help="ELBO, IWAE_k and log p(x) per data point for a run")
    p.add_argument("run", help="a run directory, or pretrained:NAME")
    _add_eval_options(p)
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also log the bounds table to TensorBoard in DIR (default: the run's own, if any)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="data points per pool; peak memory is proportional to it (default: at most 256, "
        "and at most 2**20 weights per pool)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: shard the points over N processes (through torchrun)",
    )
    # beyond importance sampling (pyrogen.bounds.extra.beyond_is)
    p.add_argument("--ais", action="store_true", help="add AIS estimates of log p(x)")
    p.add_argument(
        "--chains", type=int, default=16, help="AIS chains per point (default %(default)s)"
    )
    p.add_argument(
        "--steps",
        default="500",
        help="AIS intermediate distributions T, e.g. 50,500 (default %(default)s)",
    )
    p.add_argument(
        "--leapfrog",
        type=int,
        default=10,
        help="leapfrog steps per HMC transition (default %(default)s)",
    )
    p.add_argument("--gaps", action="store_true", help="add the amortization/approximation gaps")
    p.add_argument(
        "--gap-steps",
        type=int,
        default=300,
        help="Adam steps fitting the local q* (default %(default)s)",
    )
    p.add_argument("--bdmc", type=int, default=0, metavar="N", help="BDMC on N simulated points")

    p = sub.add_parser("compare", help="put evaluated runs side by side")
    p.add_argument("runs", nargs="+", help="evaluated run directories (or pretrained:NAME)")
    p.add_argument("--out", default=None, help="folder for comparison.csv and comparison.md")

    p = sub.add_parser("sample", help="draw new x from a trained model")
    p.add_argument("run", help="a run directory, or pretrained:NAME")
    p.add_argument(
        "-n", "--num", type=int, default=64, help="how many x to draw (default %(default)s)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="PNG (an image grid; the default for image data), .csv (with a header; the default "
        "otherwise) or .npy",
    )
    p.add_argument(
        "--mean",
        action="store_true",
        help="write the mean of p(x | z) for each z ~ r(z) (default: draws x ~ p(x | z))",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", type=int, default=None, help="class to draw (conditional models)")

    p = sub.add_parser("report", help="write the HTML/Markdown report of one or more runs")
    p.add_argument("runs", nargs="+", help="run directories (or pretrained:NAME)")
    p.add_argument(
        "--out",
        default=None,
        help="HTML file (default RUN/report.html for one run, else report.html)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the model samples")
    p.add_argument(
        "--mmd-samples",
        type=int,
        default=1000,
        help="model samples and test points compared by MMD² (default %(default)s)",
    )
    for a in (parser, *sub.choices.values()):
        if a is not parser:
            a.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )  # keeps `pyrogen --debug CMD` in effect
    return parser


def _apply_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]
) -> argparse.Namespace:
    """Options from --config FILE.toml where the command line did not give them.

    Training settings keep their TOML types (``lr = "fast"`` is an error naming lr); a ``[model]``
    table holds the model's options.
    """
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    settings = toml_settings(values, str(path))
    unknown = sorted(set(settings) - TRAIN_KEYS - {"model_options"})
    if unknown:
        import difflib

        close = [m for k in unknown for m in difflib.get_close_matches(k, TRAIN_KEYS, 1, 0.5)]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"config file {path} has unknown keys: {', '.join(unknown)} "
            f"({hint}known: {', '.join(sorted(TRAIN_KEYS - {'num_particles'}))})"
        )
    options = dict(settings.pop("model_options", {}))
    for name in MODEL_SHORTCUTS:
        if name in settings:
            options[name] = settings.pop(name)
    commands = {k: settings.pop(k) for k in list(settings) if k in COMMAND_KEYS}
    # the command line wins over the file: a flag given there (--ks, --ks=...) is kept
    flags = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for key, value in commands.items():
        if key not in flags:
            setattr(args, key, value)
    args.toml_settings = settings
    args.toml_model_options = options
    return args


def train_settings(args: argparse.Namespace) -> dict:
    """The training settings given: TOML (``--config``) first, the command line over it, and
    the model options of both (``[model]``, ``--model-option``, ``--latent-dim`` ...) merged."""
    from pyrogen.train.config import parse_key_values, settings_from_flags

    given = dict(getattr(args, "toml_settings", {}))
    options = dict(getattr(args, "toml_model_options", {}))
    flags = settings_from_flags(args)
    given_options = dict(flags.get("model_options", {}))
    options.update(flags.pop("model_options", {}))
    for name in MODEL_SHORTCUTS:
        if getattr(args, name, None) is not None:
            value = parse_key_values([f"{name}={getattr(args, name)}"], f"--{name}")[name]
            if name in given_options and given_options[name] != value:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{flag} {value} and --model-option {name}={given_options[name]} disagree: "
                    "give one of them"
                )
            options[name] = value
    given.update(flags)
    if options:
        given["model_options"] = options
    return given


def _default_binarize(data: str) -> str:
    return "dynamic" if data in ("digits", "mnist", "fashion-mnist") else "none"


DEVICE_TYPES = ("cpu", "cuda", "mps")
MAX_SEED = 2**32 - 1  # NumPy's (and so Pyro's) largest seed


def _check_device_name(name: object) -> None:
    """Refuses a device that pyrogen cannot train or evaluate on (meta, xla, a typo, ...)."""
    if not isinstance(name, str):
        raise ConfigError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{name}': use cpu, cuda (or cuda:N) or auto") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"--device {name}: pyrogen runs on cpu, cuda (or cuda:N) or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here (use cpu or auto)")
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA GPUs here"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available here (use cpu or auto)")


def check_common_options(args: argparse.Namespace) -> None:
    """Options several commands share, checked before any work: --seed, --device."""
    seed = getattr(args, "seed", None)  # None: not given (train's flags default to None)
    if isinstance(seed, str):  # train's flags stay text until TrainConfig reads them
        seed = int(seed) if seed.strip().lstrip("+-").isdigit() else seed
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if getattr(args, "device", None) is not None:
        _check_device_name(args.device)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are two lines: the problem, and where to read the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def _resolve_device(name: str) -> torch.device:
    _check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.local_device(torch.device(name))
