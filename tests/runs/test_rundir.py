"""The run directory's owner (pyrogen.runs.RunDir): its lock, its refusal of non-finite
parameters, the pyro.param sites it checkpoints, and runs written from Python that every command
reads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrogen
from pyrogen.cli import main
from pyrogen.train import TrainingError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden-dims", "8", "--latent-dim", "2", "--batch-size", "50", "--quiet"]


@pytest.fixture
def ws(bits_ws) -> Path:
    return bits_ws


def train(*extra: str) -> int:
    return main(["train", "vae", "--data", "bits.npy", "--binarize", "none", *TINY, *extra])


# --- the lock -----------------------------------------------------------------------------------

HOLD = """
import sys, time
from pyrogen.runs import RunDir
with RunDir(sys.argv[1]).lock("train"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(
    ws, capsys
):
    assert train("--epochs", "1", "--out", "run") == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ws / "run")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        for argv in (
            ["train", "--resume", "--out", "run", "--epochs", "2", "--quiet"],
            ["evaluate", "run", "--ks", "1,5", "--quiet"],
            ["train", "vae", "--data", "bits.npy", *TINY, "--out", "run", "--overwrite"],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert str(holder.pid) in err and len(err.strip().splitlines()) <= 2, err
        assert len(pyrogen.load_run("run").history) == 1  # nothing was changed meanwhile
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert main(["train", "--resume", "--out", "run", "--epochs", "2", "--quiet"]) == 0
    assert len(pyrogen.load_run("run").history) == 2


# --- non-finite parameters ----------------------------------------------------------------------


class InfGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (from the given step on)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Poisoned(pyrogen.GenerativeModel):
    """A small Gaussian VAE whose decoder's gradient turns infinite once ``poison`` is set: the
    loss stays finite, the step would write inf/NaN into the weights."""

    poison = False

    def __init__(self, data_dim: int = 12, latent_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.loc = nn.Linear(data_dim, latent_dim)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            mean = self.decoder(z)
            if Poisoned.poison:
                mean = InfGradient.apply(mean)
            pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x), 0.5).to_event(1))


class PoisonAt:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state, row) -> None:
        Poisoned.poison = state.epoch >= self.epoch


def test_an_infinite_gradient_stops_the_run_and_the_checkpoint_stays_finite(tmp_path):
    x = torch.randn(60, 12)
    Poisoned.poison = False
    torch.manual_seed(0)
    model = Poisoned()
    try:
        with pytest.raises(TrainingError, match="(?i)finite"):
            pyrogen.fit(
                model,
                x[:50],
                x[50:],
                epochs=4,
                batch_size=25,
                out=tmp_path / "run",
                callbacks=[PoisonAt(2)],
                progress=False,
            )
    finally:
        Poisoned.poison = False
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in saved["model"].values())


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(ws, capsys):
    assert train("--epochs", "1", "--out", "run") == 0
    path = ws / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, path)
    capsys.readouterr()
    assert main(["evaluate", "run", "--ks", "1,5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search("non-finite", err) and name in err, err
    assert not (ws / "run" / "evaluations").exists()  # no blank result written as a success


# --- pyro.param sites ---------------------------------------------------------------------------


class LearnedNoise(pyrogen.GenerativeModel):
    """A linear-Gaussian model whose observation scale is a pyro.param (as in Pyro's tutorials)."""

    def __init__(self, data_dim: int = 4, latent_dim: int = 1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.loc = nn.Linear(data_dim, latent_dim)

    def model(self, x):
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), sigma).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x), 0.3).to_event(1))


def test_a_pyro_param_is_trained_checkpointed_and_restored(tmp_path):
    """Data with noise scale 4 pull sigma far from its initial 1; load_run puts the trained value
    back in Pyro's param store (and a run without it there would read 1.0 again)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, generator=g) @ torch.ones(1, 4) + 4.0 * torch.randn(300, 4, generator=g)
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = LearnedNoise()
    pyrogen.fit(model, x[:250], x[250:], epochs=15, batch_size=50, lr=0.05, out=tmp_path / "run")
    trained = pyrogen.param_scope(model).value("sigma").item()
    assert trained > 2.5, trained  # moved most of the way from 1 toward about 4
    pyro.clear_param_store()
    pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
    fresh = LearnedNoise()
    pyrogen.load_run(tmp_path / "run", model=fresh)
    assert pyrogen.param_scope(fresh).value("sigma").item() == pytest.approx(trained, rel=1e-6)


# --- a run written from Python ------------------------------------------------------------------

MODEL_FILE = """
import pyro, pyro.distributions as dist, torch
from torch import nn
import pyrogen


class Tiny(pyrogen.GenerativeModel):
    def __init__(self, data_dim, latent_dim=2):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.loc = nn.Linear(data_dim, latent_dim)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.loc(x), 0.5).to_event(1))
"""


def test_a_run_written_by_fit_is_evaluated_compared_and_reported_by_the_commands(ws, capsys):
    (ws / "tinymodel.py").write_text(MODEL_FILE)
    sys.path.insert(0, str(ws))
    try:
        from tinymodel import Tiny
    finally:
        sys.path.remove(str(ws))
    x = torch.from_numpy(np.load(ws / "bits.npy"))
    torch.manual_seed(0)
    pyrogen.fit(Tiny(12), x[:150], x[150:], epochs=2, batch_size=50, out=ws / "py", progress=False)
    (ws / "tinymodel.py").write_text("raise ImportError('edited after training')\n")
    assert main(["evaluate", "py", "--split", "val", "--ks", "1,5", "--seed", "3", "--quiet"]) == 0
    ev = pyrogen.evaluate_run("py", split="val", ks=(1, 5), seed=3, write=False)
    written = pyrogen.RunDir(ws / "py").read_evaluation()
    assert written.meta["split"] == "val" and written.meta["points"] == 50
    assert written.bounds["estimate"].tolist() == pytest.approx(
        ev.summary["estimate"].tolist(), rel=1e-12
    )
    assert main(["compare", "py", "--out", "cmp"]) == 0
    assert main(["report", "py", "--mmd-samples", "20"]) == 0
    assert (ws / "py" / "report.html").is_file()
    assert "Tiny" in (ws / "cmp" / "comparison.csv").read_text()


class CtrlC:
    """Presses Ctrl-C ``times`` times at the given step of the given epoch (0-based)."""

    def __init__(self, epoch: int, step: int, times: int) -> None:
        self.at, self.times = (epoch, step), times

    def on_step_end(self, state, metrics) -> None:
        if (state.epoch, state.step_in_epoch) == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("times", [1, 2])
def test_what_an_interrupt_announces_is_what_the_run_keeps(tmp_path, times):
    """One Ctrl-C in epoch 2 checkpoints there; a second one stops at once without a new
    checkpoint, and says the run keeps the one after epoch 1 (which it does)."""
    from pyrogen.train import Interrupted

    x = torch.from_numpy((np.random.default_rng(0).random((120, 12)) < 0.3).astype(np.float32))
    torch.manual_seed(0)
    model = Poisoned()
    with pytest.raises(Interrupted) as stopped:
        pyrogen.fit(
            model,
            x[:100],
            x[100:],
            epochs=3,
            batch_size=20,
            out=tmp_path / "run",
            callbacks=[CtrlC(1, 2, times)],
        )
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    message = str(stopped.value)
    if times == 1:
        assert "checkpoint written" in message and "2 steps of epoch 2" in message
        assert (saved["epoch"], saved["step"]) == (1, 2)  # what the message says
    else:
        assert "no new checkpoint" in message and "after epoch 1)" in message
        assert (saved["epoch"], saved["step"]) == (1, 0)
