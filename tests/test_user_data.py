"""The user's own data through the command line: real values, counts and binary, by support."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pyrogen.cli import main
from pyrogen.data import load_dataset
from pyrogen.errors import DataError

TINY = ["--epochs", "2", "--latent-dim", "2", "--hidden-dims", "16", "--quiet"]
EVAL = ["--ks", "1,10,50", "--quiet"]


def _real_csv(path):
    """A standardized real-valued table: 2-D factors seen through 6 noisy columns, with header."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 2))
    x = z @ rng.normal(size=(2, 6)) + 0.3 * rng.normal(size=(200, 6))
    x = (x - x.mean(0)) / x.std(0)
    pd.DataFrame(x, columns=list("abcdef")).to_csv(path, index=False)
    return path


def _counts_npz(path):
    """Integer counts stored as uint8 (never divided by 255)."""
    rng = np.random.default_rng(1)
    rate = np.exp(rng.normal(size=(200, 2)) @ rng.normal(size=(2, 5)) * 0.5 + 1)
    np.savez(path, x=rng.poisson(rate).astype(np.uint8))
    return path


def _train_and_evaluate(data, out, *extra):
    assert main(["train", "vae", "--data", str(data), *TINY, "--out", str(out), *extra]) == 0
    assert main(["evaluate", str(out), *EVAL]) == 0
    bounds = pd.read_csv(out / "bounds.csv")
    assert list(bounds["k"]) == [1, 10, 50]
    assert np.isfinite(bounds["estimate"]).all()
    # IWAE_50 >= ELBO up to Monte Carlo error
    assert bounds["estimate"].iloc[-1] > bounds["estimate"].iloc[0] - 3 * bounds["stderr"].max()
    return json.loads((out / "config.json").read_text()), bounds


@pytest.mark.parametrize("likelihood", ["gaussian", "studentt"])
def test_standardized_csv_trains_and_evaluates(tmp_path, likelihood, capsys):
    data = _real_csv(tmp_path / "real.csv")
    config, _ = _train_and_evaluate(data, tmp_path / likelihood, "--likelihood", likelihood)
    assert config["model_options"]["likelihood"] == likelihood and config["scale"] is None
    assert "khat" in capsys.readouterr().out


def test_integer_counts_train_and_evaluate_with_poisson(tmp_path):
    data = _counts_npz(tmp_path / "counts.npz")
    config, _ = _train_and_evaluate(data, tmp_path / "poisson", "--likelihood", "poisson")
    assert config["model_options"]["likelihood"] == "poisson" and config["scale"] is None


def test_real_values_for_a_bernoulli_say_pick_a_real_valued_likelihood(tmp_path, capsys):
    data = _real_csv(tmp_path / "real.csv")
    assert main(["train", "vae", "--data", str(data), *TINY, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Bernoulli" in err and "--likelihood gaussian or studentt" in err, err
    assert "255" not in err  # no pixel advice for tabular data


def test_counts_for_a_bernoulli_are_not_rescaled_and_say_poisson(tmp_path, capsys):
    data = _counts_npz(tmp_path / "counts.npz")
    assert main(["train", "vae", "--data", str(data), *TINY, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "--likelihood poisson" in err, err


def test_real_values_for_a_poisson_say_counts_are_integers(tmp_path, capsys):
    data = _real_csv(tmp_path / "real.csv")
    argv = ["train", "vae", "--data", str(data), *TINY, "--likelihood", "poisson"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "Poisson" in err and "whole numbers" in err, err


def test_unknown_likelihood_lists_the_known_ones(tmp_path, capsys):
    data = _real_csv(tmp_path / "real.csv")
    argv = ["train", "vae", "--data", str(data), *TINY, "--likelihood", "laplace"]
    assert main([*argv, "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "bernoulli, gaussian, studentt, poisson" in err and "laplace" in err, err


def test_scale_is_applied_only_when_asked_and_recorded(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (60, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "px.npy", pixels)
    out = tmp_path / "scaled"
    argv = ["train", "vae", "--data", str(tmp_path / "px.npy"), *TINY, "--out", str(out)]
    assert main([*argv, "--scale", "255", "--binarize", "dynamic"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["scale"] == "255" and config["binarize"] == "dynamic"
    assert config["image_shape"] == [3, 3]


def test_scale_from_a_toml_file(tmp_path):
    np.savetxt(tmp_path / "wide.csv", np.random.default_rng(3).normal(5, 3, (60, 4)), delimiter=",")
    toml = tmp_path / "run.toml"
    toml.write_text(f'data = "{tmp_path / "wide.csv"}"\nscale = "standardize"\n')
    toml.write_text(toml.read_text() + 'likelihood = "gaussian"\n')
    out = tmp_path / "std"
    assert main(["train", "vae", "--config", str(toml), *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["scale"] == "standardize"


@pytest.mark.parametrize("scale", ["minmax", "standardize"])
def test_scaling_statistics_come_from_the_non_test_rows(tmp_path, scale):
    x = np.random.default_rng(4).normal(10, 4, (100, 3))
    np.save(tmp_path / "x.npy", x)
    rest = load_dataset(str(tmp_path / "x.npy"), "all", scale=scale).x.double()
    test = load_dataset(str(tmp_path / "x.npy"), "test", scale=scale).x
    if scale == "minmax":
        assert torch.allclose(rest.min(0).values, torch.zeros(3, dtype=torch.float64))
        assert torch.allclose(rest.max(0).values, torch.ones(3, dtype=torch.float64))
    else:
        assert torch.allclose(rest.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(rest.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    assert test.shape == (10, 3)


def test_builtin_image_sets_refuse_a_scale():
    with pytest.raises(DataError, match="already scaled"):
        load_dataset("digits", "train", scale="255")
    with pytest.raises(DataError, match="unknown scale"):
        load_dataset("digits", "train", scale="log")


def test_sample_writes_draws_by_default_and_means_with_a_flag(tmp_path, capsys):
    data = _counts_npz(tmp_path / "counts.npz")
    out = tmp_path / "poisson"
    argv = ["train", "vae", "--data", str(data), *TINY, "--likelihood", "poisson"]
    assert main([*argv, "--out", str(out)]) == 0
    assert main(["sample", str(out), "-n", "12"]) == 0
    draws = pd.read_csv(out / "samples.csv")  # the default for data that are not images
    assert list(draws.columns) == [f"x{i}" for i in range(5)] and len(draws) == 12
    assert (draws.to_numpy() == np.round(draws.to_numpy())).all()  # Poisson draws: counts
    assert "draws from p(x)" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "12", "--mean", "--out", str(tmp_path / "m.csv")]) == 0
    means = pd.read_csv(tmp_path / "m.csv")
    assert list(means.columns) == list(draws.columns)
    assert (means.to_numpy() > 0).all() and (means.to_numpy() != means.round().to_numpy()).any()
    assert main(["sample", str(out), "--out", str(tmp_path / "s.png")]) == 2  # not images


def test_runs_written_before_scale_was_recorded_keep_dividing_uint8_by_255(tmp_path):
    from pyrogen.data.scaling import scale_of_run

    np.save(tmp_path / "px.npy", np.zeros((10, 4), dtype=np.uint8))
    np.save(tmp_path / "real.npy", np.zeros((10, 4)))
    assert scale_of_run({"data": str(tmp_path / "px.npy")}) == "255"  # no "scale" key: old run
    assert scale_of_run({"data": str(tmp_path / "real.npy")}) is None
    assert scale_of_run({"data": "digits"}) is None
    assert scale_of_run({"data": str(tmp_path / "px.npy"), "scale": None}) is None
