"""Shared fixtures: every test starts from fixed seeds and an empty Pyro param store."""

import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pyro
import pytest
import torch

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "tests"))  # shared test helpers (tests/deterministic.py)
os.environ.setdefault("PYROGEN_MODELS", str(ROOT / "models"))


@pytest.fixture(autouse=True)
def _seed_and_clear() -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # seeds torch, numpy and random
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box
    yield
    pyro.clear_param_store()


@pytest.fixture
def bits_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder for a test of the command line: tmp_path with ``bits.npy``, 200 x 12
    random bits (P(1) = 0.3), a data file small enough to train on in a second."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "bits.npy", (rng.random((200, 12)) < 0.3).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    return tmp_path
