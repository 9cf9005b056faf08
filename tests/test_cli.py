"""The `pyrogen` command end to end on digits, with tiny settings."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from pyrogen.cli import main

TINY = ["--epochs", "2", "--latent-dim", "4", "--hidden-dims", "32", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    code = main(
        [
            "run",
            "vae",
            "--data",
            "digits",
            *TINY,
            "--out",
            str(out),
            "--ks",
            "1,10,100",
            "--limit",
            "60",
        ]
    )
    assert code == 0
    return out


def test_run_writes_a_complete_run_directory(run_dir, capsys):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "checkpoint.pt", "history.csv", "bounds.csv", "points.csv"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_class"] == "VAE" and config["data"] == "digits"
    assert config["seed"] == 0 and "torch" in config["versions"]
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    bounds = pd.read_csv(run_dir / "bounds.csv")
    assert list(bounds["k"]) == [1, 10, 100]
    assert (bounds["estimate"] < 0).all() and (bounds["nll"] > 0).all()
    # the bound rises with k beyond its Monte Carlo error
    rise = bounds["estimate"].iloc[-1] - bounds["estimate"].iloc[0]
    assert rise > 3 * (bounds["stderr"].iloc[-1] ** 2 + bounds["stderr"].iloc[0] ** 2) ** 0.5
    points = pd.read_csv(run_dir / "points.csv")
    assert len(points) == 60 and {"label", "elbo", "log_px", "ess", "khat"} <= set(points.columns)


def test_evaluate_prints_the_bounds_table(run_dir, capsys):
    code = main(["evaluate", str(run_dir), "--ks", "1,5,50", "--limit", "30", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    for piece in ["ELBO", "IWAE_5", "IWAE_50", "ess", "khat", "30 test points"]:
        assert piece in out, out
    assert list(pd.read_csv(run_dir / "bounds.csv")["k"]) == [1, 5, 50]


def test_sample_writes_an_image_grid(run_dir, tmp_path):
    png = tmp_path / "s.png"
    assert main(["sample", str(run_dir), "-n", "16", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_puts_runs_side_by_side(run_dir, tmp_path, capsys):
    assert main(["compare", str(run_dir), str(run_dir), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 2 and {"ELBO", "log_px", "nll", "bits_per_dim"} <= set(table.columns)
    assert (tmp_path / "cmp" / "comparison.md").read_text().startswith("| run |")


def test_config_file_sets_options_and_rejects_unknown_keys(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 1\nlatent_dim = 3\nhidden_dims = [16]\nbogus = 2\n")
    code = main(["train", "vae", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    cfg.write_text("epochs = 1\nlatent_dim = 3\nhidden_dims = [16]\n")
    assert (
        main(["train", "vae", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    )
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["epochs"] == 1 and config["model_options"]["latent_dim"] == 3


def test_python_dash_m_and_help():
    res = subprocess.run(
        [sys.executable, "-m", "pyrogen", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0
    for cmd in ["train", "run", "evaluate", "compare", "sample"]:
        assert cmd in res.stdout
