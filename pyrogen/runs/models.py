"""Model files: finding a model class, importing its file (with its folder importable), parsing
constructor options to their types, and building the model."""

from __future__ import annotations

import collections.abc
import hashlib
import importlib.util
import inspect
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pyrogen.errors import ConfigError, ContractError
from pyrogen.model import GenerativeModel

__all__ = [
    "build_model",
    "coerce_options",
    "load_model_class",
    "model_options_of",
    "source_file_of",
    "zoo_dir",
    "zoo_models",
]


def zoo_dir() -> Path:
    """The zoo's folder of model files: ``$PYROGEN_MODELS``; else, installed from a wheel, the
    copy it carries (``pyrogen/_zoo``); else ``models/`` of the source tree beside the package."""
    from pyrogen._shipped import shipped_dir  # not at `import pyrogen`: read when first needed

    env = os.environ.get("PYROGEN_MODELS")
    return Path(env) if env else shipped_dir("_zoo", "models")


def zoo_models() -> list[str]:
    folder = zoo_dir()
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _import_file(path: Path, folder: Path | None = None) -> Any:
    """Imports the file ``path`` as a module of its own; ``folder`` (default: the file's own) is
    put on ``sys.path`` so that the file imports its sibling modules."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"pyrogen_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = str(folder or path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
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
    except SystemExit as e:  # sys.exit() at import: an empty "success" otherwise
        del sys.modules[name]
        raise ContractError(
            f"importing {path} called sys.exit({e.code!r}): put its script part under "
            "if __name__ == '__main__':"
        ) from None
    except Exception as e:
        del sys.modules[name]
        raise ContractError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_model_class(spec: str, source: Path | None = None) -> tuple[type[GenerativeModel], Path]:
    """Finds the model class named by ``spec``.

    Arguments:
        spec: ``path/to/file.py``, ``path/to/file.py:ClassName``, or a zoo name such as ``vae``
            (optionally ``vae:ClassName``).
        source: import this copy of the file instead (a run's saved source), with the folder of
            the file named in ``spec`` importable for its siblings.

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
    if not path.is_file() and source is not None and source.is_file():
        path = path.expanduser().absolute()  # the original is gone: the saved copy stands in
    elif not path.is_file():
        hint = ""
        if (zoo_dir() / path.name).is_file():
            hint = f" (the zoo's copy is found by name: {path.stem})"
        raise ContractError(f"model file {path} does not exist{hint}")
    if path.suffix != ".py" and source is None:
        raise ContractError(f"model file {path} is not a Python file (.py)")
    path = path.resolve()
    module = _import_file(source, path.parent) if source is not None else _import_file(path)
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


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    for skip in list(params)[:2]:  # self, data_dim
        del params[skip]
    return params


def _target_type(cls: type, param: inspect.Parameter) -> Any:
    """The type an option should have: the annotation, else the default's type."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve here: fall back to the default
        hints = {}
    if param.name in hints:
        return hints[param.name]
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return Any
    return type(default)


def _strip_optional(target: Any) -> tuple[Any, bool]:
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(target) if a is not type(None)]
        optional = len(args) < len(typing.get_args(target))
        return (args[0] if len(args) == 1 else Any), optional
    return target, False


def _parse(value: Any, target: Any, what: str) -> Any:
    target, optional = _strip_optional(target)
    if optional and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(target) or target
    if origin in (tuple, list, collections.abc.Sequence) or target in (tuple, list):
        args = [a for a in typing.get_args(target) if a is not Ellipsis]
        element = args[0] if args else Any
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            items = [items]
        parsed = [_parse(v, element, what) for v in items]
        return list(parsed) if origin is list else tuple(parsed)
    if target is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    if target in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{what} must be {target.__name__}, got {value!r}")
        try:
            number = float(value) if target is float else int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{what} must be {target.__name__}, got {value!r}") from None
        return number
    if target is str:
        return str(value) if not isinstance(value, str) else value
    if isinstance(value, str):  # no type to go by: a number where it reads as one
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    return value


def coerce_options(cls: type[GenerativeModel], options: dict[str, Any]) -> dict[str, Any]:
    """Parses ``options`` (text from ``--model-option``, TOML values) to the types of ``cls``'s
    constructor parameters (annotation, else the default's type).

    Raises:
        ConfigError: an option the constructor does not take (naming its parameters) or a value
            that does not parse.
    """
    params = _parameters(cls)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    out = {}
    for key, value in options.items():
        if key not in params:
            if key == "num_classes":
                continue  # given to every model of labelled data; kept by those that take it
            if not takes_any:
                named = [
                    n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                ]
                raise ConfigError(
                    f"{cls.__name__} takes no option '{key}' "
                    f"(its options: {', '.join(named) or 'none'})"
                )
            out[key] = value
            continue
        out[key] = (
            value
            if value is None
            else _parse(value, _target_type(cls, params[key]), f"option {key} of {cls.__name__}")
        )
    return out


def build_model(cls: type[GenerativeModel], data_dim: int, **options: Any) -> GenerativeModel:
    """Constructs ``cls(data_dim, **options)``, passing only the options that were set, each
    parsed to its parameter's type (:func:`coerce_options`).

    Raises:
        ConfigError: an option the constructor does not take, or a constructor that rejects them.
    """
    options = coerce_options(cls, {k: v for k, v in options.items() if v is not None})
    try:
        return cls(data_dim, **options)
    except Exception as e:
        call = ", ".join([f"data_dim={data_dim}", *(f"{k}={v!r}" for k, v in options.items())])
        raise ConfigError(f"{cls.__name__}({call}) failed: {type(e).__name__}: {e}") from e


def model_options_of(model: GenerativeModel) -> dict[str, Any]:
    """The constructor options a model recorded (``model._pyrogen_options``), if any."""
    return dict(getattr(model, "_pyrogen_options", {}))


def source_file_of(cls: type) -> Path | None:
    """The .py file that defines ``cls``, or None (a class from a notebook or ``__main__``
    without a file)."""
    try:
        path = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    if path is None or not path.endswith(".py") or not os.path.isfile(path):
        return None
    return Path(path).resolve()
