"""Model files and run directories: finding a model class, building it, loading a trained run."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pyrogen.errors import ConfigError, ContractError, RunDirError
from pyrogen.model import GenerativeModel

__all__ = [
    "MissingSetting",
    "Run",
    "RunConfig",
    "build_model",
    "load_model_class",
    "load_run",
    "zoo_dir",
    "zoo_models",
]


def zoo_dir() -> Path:
    """The zoo's folder of model files: ``$PYROGEN_MODELS`` or ``models/`` beside the package."""
    env = os.environ.get("PYROGEN_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def zoo_models() -> list[str]:
    folder = zoo_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _import_file(path: Path) -> Any:
    name = f"pyrogen_user_{path.stem}_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ContractError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise ContractError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except SystemExit as e:  # sys.exit() at import: not a model file pyrogen can use
        del sys.modules[name]
        raise ContractError(
            f"importing {path} called sys.exit({e.code!r}): guard its script part with "
            "if __name__ == '__main__':"
        ) from None
    except Exception as e:
        del sys.modules[name]
        raise ContractError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_model_class(spec: str) -> tuple[type[GenerativeModel], Path]:
    """Finds the model class named by ``spec``.

    Arguments:
        spec: ``path/to/file.py``, ``path/to/file.py:ClassName``, or a zoo name such as ``vae``
            (optionally ``vae:ClassName``).

    Returns:
        (the GenerativeModel subclass, the resolved file path).

    Raises:
        ContractError: the file is missing, not Python, does not import, defines no
            GenerativeModel subclass, or several without ``:ClassName``.
    """
    file_part, _, class_name = spec.rpartition(":")
    if not file_part or not class_name.isidentifier():  # a ':' inside the path, not a class
        file_part, class_name = spec, ""
    if file_part.endswith(".py") or os.sep in file_part or "/" in file_part:
        path = Path(file_part).expanduser()
    else:
        path = zoo_dir() / f"{file_part}.py"
        if not path.is_file():
            raise ContractError(
                f"no model '{file_part}': give a path to a .py file or a zoo model "
                f"({', '.join(zoo_models()) or 'none found in ' + str(zoo_dir())})"
            )
    if not path.is_file():
        hint = ""
        if (zoo_dir() / path.name).is_file():
            hint = f" (the zoo's copy is found by name: {path.stem})"
        raise ContractError(f"model file {path} does not exist{hint}")
    if path.suffix != ".py":
        raise ContractError(f"model file {path} is not a Python file (.py)")
    path = path.resolve()
    module = _import_file(path)
    found = {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, GenerativeModel)
        and obj is not GenerativeModel
        and obj.__module__ == module.__name__
    }
    if class_name:
        if class_name not in found:
            raise ContractError(
                f"{path} has no GenerativeModel subclass '{class_name}' "
                f"(found: {', '.join(found) or 'none'})"
            )
        return found[class_name], path
    if not found:
        raise ContractError(f"{path} defines no subclass of pyrogen.GenerativeModel")
    if len(found) > 1:
        raise ContractError(
            f"{path} defines several models ({', '.join(found)}); choose one with "
            f"{path.name}:ClassName"
        )
    return next(iter(found.values())), path


def build_model(cls: type[GenerativeModel], data_dim: int, **options: Any) -> GenerativeModel:
    """Constructs ``cls(data_dim, **options)``, passing only the options that were set.

    Raises:
        ConfigError: an option the constructor does not take, or a constructor that rejects them.
    """
    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in list(options):
        if key not in params and not takes_any:
            if key == "num_classes":
                del options[key]
                continue
            raise ConfigError(
                f"{cls.__name__} takes no option '{key}' "
                f"(its options: {', '.join(list(params)[2:]) or 'none'})"
            )
    try:
        return cls(data_dim, **options)
    except Exception as e:
        call = ", ".join([f"data_dim={data_dim}", *(f"{k}={v!r}" for k, v in options.items())])
        raise ConfigError(f"{cls.__name__}({call}) failed: {type(e).__name__}: {e}") from e


@dataclass
class Run:
    """A trained run loaded from its directory."""

    path: Path
    config: dict
    model: GenerativeModel
    history: pd.DataFrame | None

    @property
    def name(self) -> str:
        return self.path.name


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunDirError(f"{path} is not a pyrogen run: it has no config.json")
    try:
        values = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise RunDirError(
            f"{cfg_path} holds a JSON {type(values).__name__}, not an object of settings: "
            "restore it, or train the run again with --overwrite"
        )
    return RunConfig(values, cfg_path)


class MissingSetting(RunDirError, KeyError):
    """A setting that a run's config.json lacks (a KeyError, so ``except KeyError`` still works)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RunConfig(dict):
    """The settings of a run's config.json; a missing one raises :class:`MissingSetting`."""

    def __init__(self, values: dict, path: Path) -> None:
        super().__init__(values)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise MissingSetting(
            f"{self.path} lacks the setting '{key}': restore the file, or train the run again "
            "with --overwrite"
        )


def load_run(run_dir: str | os.PathLike) -> Run:
    """Rebuilds the model of a run directory and loads its checkpoint (tensors only)."""
    from pyrogen.train import _first_reason, load_checkpoint

    path = Path(run_dir)
    config = read_config(path)
    if not (path / "checkpoint.pt").is_file():
        raise RunDirError(f"{path} has no checkpoint.pt: train it first (pyrogen train ...)")
    cls, _ = load_model_class(f"{config['model_file']}:{config['model_class']}")
    model = build_model(cls, config["data_dim"], **config.get("model_options", {}))
    state = load_checkpoint(path / "checkpoint.pt")
    if not isinstance(state, dict) or "model" not in state:
        raise RunDirError(f"{path / 'checkpoint.pt'} is not a pyrogen checkpoint")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise RunDirError(
            f"checkpoint {path / 'checkpoint.pt'} does not fit {config['model_class']}: "
            f"{_first_reason(e)[:300]}"
        ) from None
    model.eval()
    history = pd.read_csv(path / "history.csv") if (path / "history.csv").is_file() else None
    return Run(path, config, model, history)
