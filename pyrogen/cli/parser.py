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

__all__ = ["DEFAULT_EPOCHS", "TRAIN_KEYS"]

TRAIN_KEYS = {
    "data",
    "epochs",
    "batch_size",
    "lr",
    "objective",
    "particles",
    "latent_dim",
    "hidden_dims",
    "likelihood",
    "scale",
    "tensorboard",
    "seed",
    "out",
    "binarize",
    "val_fraction",
    "lr_schedule",
    "kl_warmup",
    "clip_norm",
    "patience",
    "on_nan",
    "device",
    "quiet",
    "ks",
    "eval_particles",
    "split",
    "limit",
}


DEFAULT_EPOCHS = 30


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


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
        "with --resume, read from the run's config.json",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits, fashion-mnist, mnist, or a .npy/.npz/.csv/.pt file",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default {DEFAULT_EPOCHS}; with --resume, the run's own",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--objective", default="elbo", help="elbo (Trace_ELBO), mean-field, iwae or iwae-dreg"
    )
    p.add_argument("--particles", type=int, default=1, help="ELBO particles, or k for IWAE")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--hidden-dims", type=_int_list, default=None, help="e.g. 400 or 200,200")
    p.add_argument(
        "--likelihood",
        default=None,
        help="p(x | z) for models that take it (vae): bernoulli (binary), gaussian or studentt "
        "(real values), poisson (counts)",
    )
    p.add_argument(
        "--scale",
        default=None,
        choices=["none", "255", "minmax", "standardize"],
        help="rescale your own data file (default: values as stored; recorded in config.json): "
        "255 (8-bit pixels to [0, 1]), minmax (each column to [0, 1]), standardize",
    )
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also log to TensorBoard event files in DIR (pip install 'pyrogen[tensorboard]')",
    )
    p.add_argument(
        "--binarize",
        default=None,
        choices=["dynamic", "static", "none"],
        help="default: dynamic for digits/mnist/fashion-mnist, none for files",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--lr-schedule", default="constant", help="constant, cosine or step")
    p.add_argument("--kl-warmup", type=int, default=0, help="epochs of KL warm-up")
    p.add_argument("--clip-norm", type=float, default=None)
    p.add_argument("--patience", type=int, default=None, help="early stopping on validation ELBO")
    p.add_argument("--on-nan", default="stop", choices=["stop", "skip"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: data parallel in N processes on this machine (through torchrun)",
    )
    p.add_argument("--config", default=None, help="a TOML file of these options")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyrogen",
        description="Deep latent-variable generative models on Pyro with honest likelihoods.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train a model/guide pair by SVI into a run directory")
    _add_train_options(p)

    p = sub.add_parser("run", help="the main job: train, evaluate the bounds, report")
    _add_train_options(p)
    _add_eval_options(p)

    p = sub.add_parser("evaluate", help="ELBO, IWAE_k and log p(x) per data point for a run")
    p.add_argument("run")
    _add_eval_options(p)
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also log the bounds table to TensorBoard in DIR (default: the run's own, if any)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="data points per pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="N > 1: shard the points over N processes (through torchrun)",
    )
    # beyond importance sampling (pyrogen.bounds.extra.beyond_is)
    p.add_argument("--ais", action="store_true", help="add AIS estimates of log p(x)")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per point")
    p.add_argument("--steps", default="500", help="AIS intermediate distributions T, e.g. 50,500")
    p.add_argument("--leapfrog", type=int, default=10, help="leapfrog steps per HMC transition")
    p.add_argument("--gaps", action="store_true", help="add the amortization/approximation gaps")
    p.add_argument("--gap-steps", type=int, default=300, help="Adam steps fitting the local q*")
    p.add_argument("--bdmc", type=int, default=0, metavar="N", help="BDMC on N simulated points")

    p = sub.add_parser("compare", help="put evaluated runs side by side")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=None, help="folder for comparison.csv and comparison.md")

    p = sub.add_parser("sample", help="draw new x from a trained model")
    p.add_argument("run")
    p.add_argument("-n", "--num", type=int, default=64)
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
    p.add_argument("runs", nargs="+")
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
    """Options from --config FILE.toml, overridden by those given on the command line."""
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    values = {k.replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - TRAIN_KEYS)
    if unknown:
        import difflib

        close = [m for k in unknown for m in difflib.get_close_matches(k, TRAIN_KEYS, 1, 0.5)]
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"config file {path} has unknown keys: {', '.join(unknown)} "
            f"({hint}known: {', '.join(sorted(TRAIN_KEYS))})"
        )
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for key, value in values.items():
        if key not in given:
            if key == "hidden_dims" and isinstance(value, list):
                value = tuple(int(v) for v in value)
            setattr(args, key, value)
    return args


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
    seed = getattr(args, "seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if hasattr(args, "device"):
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


def _check_train_options(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "particles"):
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    from pyrogen.train import OBJECTIVES

    if args.objective not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective '{args.objective}': choose one of {', '.join(OBJECTIVES)}"
        )
    if not 0 < args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
