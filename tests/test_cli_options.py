"""The command line over TrainConfig: --resume --epochs / --override, --model-option and [model],
--version, evaluate --batch-size; and a site name used twice."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrogen
from pyrogen.cli import main

TINY = ["--hidden-dims", "8", "--batch-size", "50", "--quiet"]


@pytest.fixture
def ws(bits_ws) -> Path:
    return bits_ws


def train(*extra: str) -> int:
    return main(["train", "vae", "--data", "bits.npy", "--binarize", "none", *TINY, *extra])


def config(run: str) -> dict:
    return json.loads(Path(run, "config.json").read_text())


def test_resume_extends_to_the_epochs_asked_and_refuses_changes_without_override(ws, capsys):
    assert train("--epochs", "2", "--out", "r") == 0
    assert main(["train", "--resume", "--out", "r", "--epochs", "4", "--quiet"]) == 0
    assert len(pyrogen.load_run("r").history) == 4 and config("r")["epochs"] == 4
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--epochs", "3", "--quiet"]) == 2
    assert re.search(r"done 4 epochs", capsys.readouterr().err)
    assert main(["train", "--resume", "--out", "r", "--epochs", "5", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "--override" in err and len(err.strip().splitlines()) <= 2
    assert len(pyrogen.load_run("r").history) == 4  # refused before any step
    args = ["train", "--resume", "--out", "r", "--epochs", "5", "--lr", "0.5", "--override"]
    assert main([*args, "--quiet"]) == 0
    saved = config("r")
    assert saved["lr"] == 0.5 and saved["epochs"] == 5
    assert saved["overrides"][-1]["changes"]["lr"] == [0.001, 0.5]
    assert pyrogen.load_run("r").history["lr"].tolist()[-1] == 0.5


def test_model_options_reach_the_constructor_from_flags_and_toml(ws, capsys):
    assert train("--epochs", "1", "--model-option", "latent_dim=7", "--out", "a") == 0
    assert pyrogen.load_run("a").model.latent_dim == 7
    (ws / "m.toml").write_text("epochs = 1\n[model]\nlatent_dim = 3\n")
    assert train("--config", "m.toml", "--out", "b") == 0
    assert pyrogen.load_run("b").model.latent_dim == 3
    capsys.readouterr()
    assert train("--epochs", "1", "--model-option", "latnt_dim=3", "--out", "c") == 2
    err = capsys.readouterr().err
    assert "latnt_dim" in err and "latent_dim" in err  # the key, and what the constructor takes
    assert not (ws / "c").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyrogen {pyrogen.__version__}"


def test_evaluate_uses_the_batch_size_given(ws):
    assert train("--epochs", "1", "--out", "r") == 0
    for b in (7, 64):
        assert main(["evaluate", "r", "--ks", "1,5", "--batch-size", str(b), "--quiet"]) == 0
        assert pyrogen.RunDir(ws / "r").read_evaluation().meta["batch_size"] == b


class TwoZs(pyrogen.GenerativeModel):
    """Samples the site name ``z`` twice in the model (and once in the guide)."""

    def __init__(self, data_dim: int = 4) -> None:
        super().__init__()
        self.loc = torch.nn.Linear(data_dim, 2)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample(
                "x", dist.Normal(z.sum(-1, keepdim=True).expand_as(x), 1.0).to_event(1), obs=x
            )

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x), 1.0).to_event(1))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_site_name_used_twice_is_an_error_not_a_number(objective):
    m, x = TwoZs(), torch.randn(10, 4)
    with pytest.raises(Exception, match="(?i)multiple sample sites named 'z'|'z'.*twice"):
        pyrogen.log_weights(m.model, m.guide, x, num_particles=3)
    particles = 2 if objective == "iwae" else 1
    with pytest.raises(Exception, match="(?i)multiple sample sites named 'z'|'z'.*twice"):
        pyrogen.fit(m, x, epochs=1, batch_size=5, objective=objective, num_particles=particles)


def test_evaluations_are_kept_per_estimator_and_k_and_the_latest_is_shown(ws):
    assert train("--epochs", "1", "--out", "r") == 0
    assert main(["evaluate", "r", "--ks", "1,5", "--quiet"]) == 0
    first = (ws / "r" / "evaluations" / "is-K5" / "bounds.csv").read_text()
    assert main(["evaluate", "r", "--ks", "1,10", "--quiet"]) == 0
    run = pyrogen.RunDir(ws / "r")
    assert run.evaluation_names() == ["is-K10", "is-K5"]
    assert (ws / "r" / "evaluations" / "is-K5" / "bounds.csv").read_text() == first  # kept
    assert run.read_evaluation().name == "is-K10"  # the latest, which bounds.csv shows
    assert list((ws / "r" / "bounds.csv").read_text().splitlines()[1:]) == list(
        (ws / "r" / "evaluations" / "is-K10" / "bounds.csv").read_text().splitlines()[1:]
    )
    assert pyrogen.compare(["r"])["evaluation"].tolist() == ["is-K10"]
    assert pyrogen.compare(["r"], evaluation="is-K5")["evaluation"].tolist() == ["is-K5"]
