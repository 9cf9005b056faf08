"""Shared fixtures: every test starts from fixed seeds and an empty Pyro param store."""

import os
import sys
from pathlib import Path

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
os.environ.setdefault("PYROGEN_MODELS", str(ROOT / "models"))


@pytest.fixture(autouse=True)
def _seed_and_clear() -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # seeds torch, numpy and random
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box
    yield
    pyro.clear_param_store()
