"""Installed like a package: the wheel carries the zoo (models/*.py) and the shipped runs
(benchmarks/pretrained/NAME/) as pyrogen/_zoo and pyrogen/_pretrained, and an installed copy
finds them there; a source checkout (or an editable install of one) reads the tree's own folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pyrogen
import pyrogen._shipped
from pyrogen import pretrained
from pyrogen.runs import zoo_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pretrained_is_an_attribute_after_import_pyrogen(monkeypatch: pytest.MonkeyPatch) -> None:
    # as if nothing had imported pyrogen.pretrained yet (monkeypatch puts both back after)
    monkeypatch.delitem(sys.modules, "pyrogen.pretrained", raising=False)
    monkeypatch.delattr(pyrogen, "pretrained", raising=False)
    module = pyrogen.pretrained
    assert module is sys.modules["pyrogen.pretrained"]
    assert "vae-fashion-mnist" in module.available()


def test_the_checkout_reads_its_own_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYROGEN_MODELS", raising=False)
    monkeypatch.delenv("PYROGEN_PRETRAINED", raising=False)
    assert zoo_dir() == ROOT / "models"
    assert pretrained.pretrained_dir() == ROOT / "benchmarks" / "pretrained"
    assert not (ROOT / "pyrogen" / "_zoo").exists()  # one copy of the files: the tree's
    assert not (ROOT / "pyrogen" / "_pretrained").exists()


def test_an_installed_copy_reads_its_package_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "pyrogen"
    monkeypatch.setattr(pyrogen._shipped, "__file__", str(package / "_shipped.py"))
    monkeypatch.delenv("PYROGEN_MODELS", raising=False)
    monkeypatch.delenv("PYROGEN_PRETRAINED", raising=False)
    # no package data beside it: the source tree's folders (as in a checkout)
    assert zoo_dir() == tmp_path / "site-packages" / "models"
    assert pretrained.pretrained_dir() == tmp_path / "site-packages" / "benchmarks" / "pretrained"
    (package / "_zoo").mkdir(parents=True)
    (package / "_pretrained").mkdir()
    assert zoo_dir() == package / "_zoo"
    assert pretrained.pretrained_dir() == package / "_pretrained"
    monkeypatch.setenv("PYROGEN_MODELS", str(tmp_path / "mine"))
    assert zoo_dir() == tmp_path / "mine"


def test_pyproject_lists_every_subpackage_and_maps_the_shipped_folders() -> None:
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pyrogen").rglob("__init__.py")
    }
    mapped = {"pyrogen._zoo": "models", "pyrogen._pretrained": "benchmarks/pretrained"}
    assert set(SETUPTOOLS["packages"]) == on_disk | set(mapped)
    assert SETUPTOOLS["package-dir"] == mapped
    for folder in mapped.values():
        assert (ROOT / folder).is_dir()
    # the model files of the shipped runs are zoo names, found in the installed zoo as well
    for name in pretrained.available():
        config = json.loads((ROOT / "benchmarks" / "pretrained" / name / "config.json").read_text())
        assert (ROOT / "models" / f"{config['model_file']}.py").is_file()
        assert "model_source" not in config or not Path(config["model_source"]).is_absolute()


def _source_copy(target: Path) -> None:
    """The files a build reads, copied away from the checkout (no stale build/ of it)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "evaluations")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for folder in ("pyrogen", "models", "benchmarks/pretrained"):
        shutil.copytree(ROOT / folder, target / folder, ignore=skip)


def _offline_build() -> list[str]:
    """pip's options to build with this environment's setuptools where it has a recent one (it
    writes wheels itself from 70.1 on): no index needed; else pip fetches one as usual."""
    try:
        import setuptools
    except ImportError:
        return []
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return ["--no-build-isolation", "--no-index"] if (major, minor) >= (70, 1) else []


def _run(argv: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_finds_its_zoo_and_pretrained_runs(tmp_path: Path) -> None:
    tmp = tmp_path.resolve()
    src, wheels, site, empty = tmp / "src", tmp / "wheels", tmp / "site", tmp / "empty"
    src.mkdir()
    empty.mkdir()
    _source_copy(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", *_offline_build(), "-w", str(wheels), str(src)], tmp)
    (wheel,) = wheels.glob("pyrogen-*.whl")
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], tmp)
    assert (site / "pyrogen" / "_zoo" / "vae.py").is_file()
    assert (site / "pyrogen" / "_pretrained" / "vae-fashion-mnist" / "checkpoint.pt").is_file()

    # only the installed copy on the path: no PYROGEN_* folders, no checkout, an empty cwd
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYROGEN_", "PYTHON"))}
    env.update(PYTHONPATH=str(site), PYTHONSAFEPATH="1", OMP_NUM_THREADS="1")
    python = [sys.executable, "-s"]  # no user site-packages either
    where = _run(
        [
            *python,
            "-c",
            "import pyrogen, pyrogen.runs; print(pyrogen.__file__); "
            "print(pyrogen.runs.zoo_dir()); print(pyrogen.pretrained.pretrained_dir()); "
            "print(','.join(pyrogen.pretrained.available()))",
        ],
        empty,
        env,
    ).stdout.splitlines()
    installed = site / "pyrogen"
    assert where[:3] == [
        str(installed / "__init__.py"),
        str(installed / "_zoo"),
        str(installed / "_pretrained"),
    ]
    assert {"vae-fashion-mnist", "vamp-fashion-mnist"} <= set(where[3].split(","))

    run = [*python, "-m", "pyrogen", "run", "vae", "--data", "digits", "--epochs", "1", "--quiet"]
    out = _run([*run, "--ks", "1,10", "--limit", "50"], empty, env).stdout
    assert "IWAE_10" in out
    (config,) = (empty / "runs").glob("vae-digits-*/config.json")
    assert json.loads(config.read_text())["model_file"] == str(installed / "_zoo" / "vae.py")
