"""Training never loses work: interrupted, killed or hit by a NaN, a run resumes exactly.

* SIGINT/SIGTERM: training stops at the next step boundary, writes a mid-epoch checkpoint and
  exits 130/143; ``pyrogen train --resume --out RUN`` ends with the same parameters and history
  (all but the seconds column) as an uninterrupted run with the same seed.
* SIGKILL at any moment: the run directory holds a loadable checkpoint (the previous or the new
  one, written to a temporary file, fsynced and renamed), and resuming from it is exact too.
* A non-finite loss stops training naming the epoch and step, and the run keeps its last good
  checkpoint; ``--on-nan skip`` skips the batch and counts it in the history.

The model file below has two honest triggers, set through the environment: at a given training
step its likelihood's logits are multiplied by NaN (a parameter-free NaN, as an overflowing
decoder would produce), or the process sends itself a signal in the middle of the step.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import pyrogen.train.loop
from pyrogen import cli
from pyrogen.data import load_dataset
from pyrogen.train import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent

MODEL = '''
import os

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen


class Small(pyrogen.GenerativeModel):
    """z ~ N(0, I_2), x | z ~ Bernoulli(sigmoid(W z + b)); q(z | x) diagonal Gaussian."""

    def __init__(self, data_dim, latent_dim=2):
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.dec = nn.Linear(latent_dim, data_dim)
        self.enc = nn.Linear(data_dim, 2 * latent_dim)
        self.nan_at = int(os.environ.get("TEST_NAN_AT", "-1"))
        self.signal_at = int(os.environ.get("TEST_SIGNAL_AT", "-1"))
        self.steps = 0  # training steps seen: calls of model() with gradients on

    def model(self, x):
        scale = 1.0
        if torch.is_grad_enabled():
            if self.steps == self.nan_at:
                scale = float("nan")
            if self.steps == self.signal_at:
                os.kill(os.getpid(), int(os.environ["TEST_SIGNUM"]))
            self.steps += 1
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z) * scale).to_event(1), obs=x)

    def guide(self, x):
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))
'''

TRIGGERS = ("TEST_NAN_AT", "TEST_SIGNAL_AT", "TEST_SIGNUM")


@pytest.fixture
def model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for key in TRIGGERS:
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "small.py"
    path.write_text(MODEL)
    return str(path)


def train(model: str, out: Path, *more: str) -> list[str]:
    return ["train", model, "--data", "digits", "--quiet", "--out", str(out), "--seed", "3", *more]


def steps_per_epoch(batch_size: int) -> int:
    return math.ceil(len(load_dataset("digits", "train", binarize="dynamic")) / batch_size)


def history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv").drop(columns="seconds")


def assert_same_run(run: Path, reference: Path) -> None:
    """Same parameters, bit for bit, and the same history except the seconds column."""
    state, ref = (load_checkpoint(r / "checkpoint.pt") for r in (run, reference))
    assert state["epoch"] == ref["epoch"] and state["step"] == ref["step"] == 0
    assert state["model"].keys() == ref["model"].keys()
    for name, value in ref["model"].items():
        assert torch.equal(state["model"][name], value), f"parameter {name} differs"
    pd.testing.assert_frame_equal(history(run), history(reference), check_exact=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_mid_epoch_and_resume_is_exact(
    signum: int,
    model_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """SIGTERM/SIGINT mid-epoch: exit 143/130, a checkpoint at (epoch, step), exact resume."""
    torch.set_num_threads(1)
    batch, epochs = 128, 3
    per_epoch = steps_per_epoch(batch)
    at = per_epoch + 4  # the 5th step of the 2nd epoch
    options = ("--epochs", str(epochs), "--batch-size", str(batch))
    assert cli.main(train(model_file, tmp_path / "reference", *options)) == 0

    monkeypatch.setenv("TEST_SIGNAL_AT", str(at))
    monkeypatch.setenv("TEST_SIGNUM", str(int(signum)))
    run = tmp_path / "run"
    assert cli.main(train(model_file, run, *options)) == 128 + signum
    assert "checkpoint written" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 5)  # the signalled step completes first
    assert len(state["history"]) == 1

    monkeypatch.delenv("TEST_SIGNAL_AT")
    assert cli.main(["train", "--resume", "--out", str(run), "--quiet"]) == 0  # MODEL optional
    assert_same_run(run, tmp_path / "reference")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    model_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    torch.set_num_threads(1)
    batch = 256
    per_epoch = steps_per_epoch(batch)
    assert (
        cli.main(train(model_file, tmp_path / "one", "--epochs", "1", "--batch-size", str(batch)))
        == 0
    )
    capsys.readouterr()

    monkeypatch.setenv("TEST_NAN_AT", str(per_epoch + 2))  # epoch 2, step 3
    run = tmp_path / "run"
    status = cli.main(train(model_file, run, "--epochs", "3", "--batch-size", str(batch)))
    err = capsys.readouterr().err
    assert status == 2, err
    assert "non-finite loss (nan) at epoch 2, step 3" in err, err
    assert "--on-nan skip" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 0)
    assert_same_run(run, tmp_path / "one")  # the last good checkpoint: after epoch 1


def test_mid_epoch_checkpoints_keep_the_last_good_step_and_resume_exactly(
    model_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a checkpoint after every step (the time-based cadence set to zero), a NaN stop keeps
    the checkpoint of the step before it, and resuming from there (mid-epoch) is exact."""
    torch.set_num_threads(1)
    monkeypatch.setattr(pyrogen.train.loop, "CHECKPOINT_EVERY_S", 0.0)
    batch = 256
    per_epoch = steps_per_epoch(batch)
    options = ("--epochs", "3", "--batch-size", str(batch))
    assert cli.main(train(model_file, tmp_path / "reference", *options)) == 0

    monkeypatch.setenv("TEST_NAN_AT", str(per_epoch + 2))  # epoch 2, step 3
    run = tmp_path / "run"
    assert cli.main(train(model_file, run, *options)) == 2
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 2)  # after step 2 of epoch 2
    monkeypatch.delenv("TEST_NAN_AT")
    assert cli.main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    assert_same_run(run, tmp_path / "reference")


def test_nan_loss_skip_counts_the_batch(
    model_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    batch = 256
    per_epoch = steps_per_epoch(batch)
    monkeypatch.setenv("TEST_NAN_AT", str(per_epoch + 2))
    run = tmp_path / "run"
    assert (
        cli.main(
            train(model_file, run, "--epochs", "3", "--batch-size", str(batch), "--on-nan", "skip")
        )
        == 0
    )
    h = pd.read_csv(run / "history.csv")
    assert h["skipped"].tolist() == [0, 1, 0]
    assert h["train_elbo"].notna().all() and (h["train_elbo"] < 0).all()


SAVE_FOREVER = """
import sys
import torch
from pyrogen.train import save_checkpoint

weights = torch.empty(4_000_000)  # 16 MB, so that a kill often lands mid-write
i = 0
while True:
    save_checkpoint(sys.argv[1], {"i": i, "weights": weights.fill_(i)})
    i += 1
"""


@pytest.mark.slow
def test_sigkill_never_leaves_a_corrupt_checkpoint(tmp_path: Path) -> None:
    """Kill a process that keeps rewriting its checkpoint: the file always loads, consistent."""
    path = tmp_path / "checkpoint.pt"
    rng = random.Random()
    mid_write = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(path)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=subprocess.PIPE,
        )
        _wait_for_new_checkpoint(proc, path, -1)
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.communicate()
        temporaries = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.tmp")]
        mid_write += bool(temporaries)
        for p in temporaries:
            p.unlink()
        state = load_checkpoint(path)  # never corrupt: the old or the new state, whole
        assert bool((state["weights"] == state["i"]).all()), f"a torn checkpoint {state['i']}"
        path.unlink()
    assert mid_write >= 1, "no kill landed while a checkpoint was being written"


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in TRIGGERS:
        env.pop(key, None)
    return subprocess.Popen(
        [sys.executable, "-m", "pyrogen", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_new_checkpoint(
    proc: subprocess.Popen, path: Path, since: int, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_mtime_ns != since):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)


def _kill_and_resume(model_file: str, tmp_path: Path, kills: int, epochs: int, batch: int) -> None:
    torch.set_num_threads(1)
    rng = random.Random()
    run = tmp_path / "run"
    options = ("--epochs", str(epochs), "--batch-size", str(batch))
    ckpt = run / "checkpoint.pt"
    argv = train(model_file, run, *options)
    for i in range(kills):
        done = load_checkpoint(ckpt)["epoch"] if ckpt.exists() else 0
        # the kill lands during epoch target + 1 < epochs, at a random moment within it: a fixed
        # delay in seconds would outlast the run on a fast machine
        last = done + 2 + (epochs - 4 - done) // (kills - i)
        target = rng.randint(done + 2, max(done + 2, last))
        proc = _start(argv, tmp_path)
        stamps = []
        while not stamps or load_checkpoint(ckpt)["epoch"] < target:
            _wait_for_new_checkpoint(proc, ckpt, ckpt.stat().st_mtime_ns if ckpt.exists() else -1)
            stamps.append(time.monotonic())
        epoch_time = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
        delay = rng.uniform(0.0, 0.8 * epoch_time)
        time.sleep(delay)
        still_training = proc.poll() is None
        proc.kill()
        proc.communicate()
        state = load_checkpoint(ckpt)  # the previous or the new checkpoint, never a torn one
        assert still_training, f"kill {i + 1} (after {delay:.2f} s) came after the end"
        assert state["epoch"] < epochs
        argv = ["train", "--resume", "--out", str(run), "--quiet"]
    assert cli.main(argv) == 0  # the last resume, in this process
    assert not list(run.glob(".*.tmp*")), "a killed run's temporary file was left behind"
    assert cli.main(train(model_file, tmp_path / "reference", *options)) == 0
    assert_same_run(run, tmp_path / "reference")


def test_sigkill_then_resume_is_exact(model_file: str, tmp_path: Path) -> None:
    """One SIGKILL at a random moment after the first checkpoint; the resumed run is exact."""
    _kill_and_resume(model_file, tmp_path, kills=1, epochs=6, batch=16)


@pytest.mark.slow
def test_sigkill_three_times_then_resume_is_exact(model_file: str, tmp_path: Path) -> None:
    """Three SIGKILLs at random moments, each followed by --resume; the end is exact."""
    _kill_and_resume(model_file, tmp_path, kills=3, epochs=30, batch=16)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_from_outside_exits_130_or_143(signum: int, model_file: str, tmp_path: Path) -> None:
    """A real signal from another process (Ctrl-C, a scheduler's SIGTERM) mid-training."""
    run = tmp_path / "run"
    proc = _start(train(model_file, run, "--epochs", "200", "--batch-size", "16"), tmp_path)
    _wait_for_new_checkpoint(proc, run / "checkpoint.pt", -1)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err.decode()
    assert "checkpoint written" in err.decode() and b"Traceback" not in err
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["epoch"] < 200
