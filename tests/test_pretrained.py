"""The shipped converged runs (pyrogen.pretrained): loadable by name, weights only, and they
reproduce the numbers recorded when they were trained and evaluated."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import pyrogen
from pyrogen import pretrained
from pyrogen.cli import main
from pyrogen.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
NAME = "vae-fashion-mnist"
SHIPPED = {"vae-fashion-mnist": (1_116_864, -228.70), "vamp-fashion-mnist": (1_508_864, -227.35)}


def fashion_mnist_or_skip() -> None:
    from pyrogen.data import find_idx_files

    try:
        find_idx_files("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST IDX files are not installed (no download in tests)")


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_run_loads_by_name_as_weights_only(name):
    assert name in pretrained.available()
    info = pretrained.describe(name)
    count, published = SHIPPED[name]
    assert info["protocol"] == "exemplar" and info["published_test_log_px"] == published
    run = pyrogen.load_run(f"pretrained:{name}")
    # the published architectures' counts (Tomczak's code: gated layers of 300, 40 latents, and
    # for the VampPrior 500 pseudo-inputs)
    assert sum(p.numel() for p in run.model.parameters()) == info["parameters"] == count
    assert run.epoch == info["best_epoch"]
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "epoch", "step"}  # no optimizer state, no RNG
    # float32 weights and little else (Adam's two moments would triple it)
    assert (run.path / "checkpoint.pt").stat().st_size < 4 * count + 100_000
    assert len(run.history) == info["epochs_run"]
    assert run.history["val_elbo"].max() == pytest.approx(info["best_val_elbo"], abs=1e-3)


def test_an_unknown_name_lists_the_available_ones(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=NAME):
        pyrogen.load_run("pretrained:vae-mnist")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "pretrained:vae-mnist"]) == 2
    assert NAME in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", SHIPPED)
@torch.no_grad()
def test_the_weights_reproduce_the_recorded_validation_elbo(name):
    """The best epoch's validation ELBO (one draw per point, over the protocol's 10,000
    validation images) is re-estimated with 10 draws per point: the difference must be within
    the Monte Carlo error of both estimates (the recorded one has sqrt(10) times the error)."""
    fashion_mnist_or_skip()
    run = pyrogen.load_run(f"pretrained:{name}")
    val = pyrogen.runs.load_run_data(run.config, "val", run.path).x
    assert val.shape == (10_000, 784) and set(val.unique().tolist()) == {0.0, 1.0}
    ev = pyrogen.evaluate(
        run.model.model, run.model.guide, val, ks=(1,), num_particles=10, batch_size=500, seed=1
    )
    elbo = ev.summary.iloc[0]
    se = float(elbo["stderr"]) * math.sqrt(1 + 10)
    recorded = pretrained.describe(name)["best_val_elbo"]
    assert abs(float(elbo["estimate"]) - recorded) < 4 * se, (elbo["estimate"], recorded, se)
    # an inflated error would make the check above pass anything: 10,000 points, per-point
    # single-draw spread of a few nats, give about 0.03 (measured 0.029)
    assert 0.01 < se < 0.06


@pytest.mark.slow
@torch.no_grad()
def test_the_weights_reproduce_the_tables_iwae_on_the_first_500_test_images():
    """IWAE_5000 on the first 500 test images, afresh, against results/fashion_mnist.csv's
    ``iwae_K_same_points`` (the same images in the full evaluation): within 4 combined Monte
    Carlo errors."""
    fashion_mnist_or_skip()
    table = pd.read_csv(ROOT / "benchmarks" / "results" / "fashion_mnist.csv")
    row = table[(table["model"] == "vae") & (table["protocol"] == "exemplar")].iloc[0]
    run = pyrogen.load_run(f"pretrained:{NAME}")
    test = pyrogen.runs.load_run_data(run.config, "test", run.path).x[: int(row["ais_points"])]
    ev = pyrogen.evaluate(
        run.model.model, run.model.guide, test, ks=(1, 5000), batch_size=50, seed=99
    )
    top = ev.summary.iloc[-1]
    se = float(top["stderr"]) * math.sqrt(2)
    assert abs(float(top["estimate"]) - row["iwae_K_same_points"]) < 4 * se
