"""The typed backbone: TrainConfig, TrainState (pyro.param sites, finite checkpoints), RunDir
(lock, saved model source, evaluations as one unit), load_run/evaluate_run, and the command line
on top of them. Tiny data (200 x 12 random bits) and tiny models keep every test to seconds."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pytest
import torch

import pyrogen
from pyrogen.cli import main
from pyrogen.errors import ConfigError, ContractError, RunDirError
from pyrogen.runs.models import load_model_class
from pyrogen.train import TrainConfig, TrainingError

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden-dims", "8", "--latent-dim", "2", "--epochs", "2", "--batch-size", "50"]
TINY += ["--quiet"]

#: a small VAE whose Gaussian likelihood scale is a pyro.param site, not a module parameter
SIGMA_MODEL = """
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

import pyrogen


class SigmaVAE(pyrogen.GenerativeModel):
    def __init__(self, data_dim, latent_dim=2, hidden=HIDDEN):
        super().__init__()
        self.latent_dim = latent_dim
        self.dec = torch.nn.Sequential(
            torch.nn.Linear(latent_dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, data_dim)
        )
        self.enc = torch.nn.Linear(data_dim, 2 * latent_dim)

    def model(self, x):
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), sigma).to_event(1), obs=x)

    def guide(self, x):
        loc, log_scale = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
"""


def write_model(folder: Path, hidden: int = 8, name: str = "sigmodel.py") -> Path:
    path = folder / name
    path.write_text(SIGMA_MODEL.replace("HIDDEN", str(hidden)))
    return path


def forget_user_modules() -> None:
    """Drops the model files imported so far, so that the next load imports them again."""
    for name in [n for n in sys.modules if n.startswith("pyrogen_user_")]:
        del sys.modules[name]


def gaussian_data(n: int = 200, scale: float = 5.0) -> torch.Tensor:
    return scale * torch.randn(n, 12, generator=torch.Generator().manual_seed(1))


def fit_sigma_run(tmp_path: Path, epochs: int = 2, **settings) -> tuple[Path, Path]:
    """A run written by pyrogen.fit from a model file in tmp_path; returns (run, model file).
    The trained model is ``fit_sigma_run.model``."""
    file = write_model(tmp_path)
    cls, _ = load_model_class(str(file))
    x = gaussian_data()
    run = tmp_path / "pyrun"
    fit_sigma_run.model = cls(12)
    pyrogen.fit(
        fit_sigma_run.model,
        x[:150],
        x[150:],
        out=run,
        epochs=epochs,
        batch_size=50,
        progress=False,
        **settings,
    )
    return run, file


@pytest.fixture
def bits(tmp_path, monkeypatch) -> Path:
    """200 x 12 random bits in tmp_path (the current folder)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    path = tmp_path / "bits.npy"
    np.save(path, (rng.random((200, 12)) < 0.5).astype(np.float32))
    return path


@pytest.fixture
def cli_run(bits, tmp_path) -> Path:
    """A zoo VAE trained for 2 epochs by ``pyrogen train`` on the bits."""
    run = tmp_path / "run"
    assert main(["train", "vae", "--data", str(bits), *TINY, "--out", str(run)]) == 0
    return run


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ---- 1. pyro.param sites ------------------------------------------------------------------------


def test_pyro_param_sites_are_trained_checkpointed_and_loaded(tmp_path):
    run, _ = fit_sigma_run(tmp_path, epochs=5, lr=0.1)  # data of scale 5, sigma starts at 1
    trained = sigma_of(fit_sigma_run.model)
    assert trained > 1.5, f"sigma moved from 1.0 to {trained} only: the pyro.param is not trained"
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["pyro_params"]["sigma"].item() == pytest.approx(trained, rel=1e-6)

    pyro.clear_param_store()
    forget_user_modules()
    loaded = pyrogen.load_run(run)
    assert "sigma" not in pyro.get_param_store().keys()  # the model's own, not the global store
    assert sigma_of(loaded.model) == pytest.approx(trained, rel=1e-6)
    # the loaded model reads the restored value (its log-weights use sigma = trained)
    x = gaussian_data()[:4]
    lw = pyrogen.log_weights(loaded.model.model, loaded.model.guide, x, num_particles=3)
    assert torch.isfinite(lw).all()
    assert sigma_of(loaded.model) == pytest.approx(trained, rel=1e-6)


def sigma_of(model) -> float:
    """The value of the pyro.param 'sigma' in the model's own parameter scope."""
    return pyrogen.param_scope(model).value("sigma").detach().item()


class Record(pyrogen.train.hooks.Callback):
    """Records the value of the pyro.param 'sigma' as training begins."""

    def on_train_begin(self, state, config):
        self.sigma = pyro.param("sigma").detach().item()


def test_resume_continues_from_the_checkpointed_pyro_param(tmp_path):
    run, file = fit_sigma_run(tmp_path, epochs=2, lr=0.1)
    trained = sigma_of(fit_sigma_run.model)
    assert abs(trained - 1.0) > 0.1
    pyro.clear_param_store()
    cls, _ = load_model_class(str(file))
    x, record = gaussian_data(), Record()
    history = pyrogen.fit(
        cls(12), x[:150], x[150:], out=run, resume=True, epochs=3, progress=False,
        callbacks=[record],
    )  # fmt: skip
    assert record.sigma == pytest.approx(trained, rel=1e-6)
    assert list(history["epoch"]) == [1, 2, 3]


def test_load_run_restores_a_pyro_param_with_its_constraint(tmp_path):
    run, _ = fit_sigma_run(tmp_path, epochs=2, lr=0.1)
    trained = sigma_of(fit_sigma_run.model)
    pyro.clear_param_store()
    forget_user_modules()
    loaded = pyrogen.load_run(run)
    unconstrained = pyrogen.param_scope(loaded.model).unconstrained(["sigma"])[0]
    assert unconstrained.detach().item() == pytest.approx(math.log(trained), rel=1e-5)


# ---- 2. a run from Python, used by the command line ---------------------------------------------


def test_a_run_written_by_fit_is_evaluated_compared_and_reported_by_the_cli(tmp_path, capsys):
    run, _ = fit_sigma_run(tmp_path)
    assert main(["evaluate", str(run), "--ks", "1,5", "--split", "val", "--quiet"]) == 0
    folder = run / "evaluations" / "is-K5-val"
    for name in ("bounds.csv", "points.csv", "meta.json"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["split"] == "val" and meta["ks"] == [1, 5] and meta["points"] == 50
    bounds = pd.read_csv(folder / "bounds.csv")
    assert len(bounds) == 2 and np.isfinite(bounds["estimate"]).all()
    assert len(pd.read_csv(folder / "points.csv")) == 50
    assert main(["compare", str(run)]) == 0
    assert main(["report", str(run), "--mmd-samples", "20"]) == 0
    assert (run / "report.html").is_file()
    error_of(capsys)


# ---- 3. TrainConfig: every bad value named before any work --------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": float("inf")}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"objective": "iwae", "num_particles": 1}, "IWAE_1"),
    ],
)
def test_train_config_names_the_bad_value(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        TrainConfig(**kwargs)


def test_train_config_from_dict_names_an_unknown_key():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("toml", "flags", "name"),
    [
        ('lr = "fast"\n', [], "lr (--lr) must be a number, got the text 'fast'"),
        ('lr = "0.5"\n', [], "lr (--lr) must be a number, got the text '0.5'"),
        ("batch_size = true\n", [], "batch_size (--batch-size) must be a number, got True"),
        ("learning_rate = 0.1\n", [], "unknown keys: learning_rate"),
        ("", ["--epochs", "0"], "epochs (--epochs) must be a positive integer, got 0"),
        ("", ["--lr", "inf"], "lr (--lr) must be a positive finite number, got inf"),
        ("", ["--objective", "iwae", "--particles", "1"], "IWAE_1"),
    ],
    ids=[
        "lr-text",
        "lr-number-as-text",
        "batch-size-bool",
        "unknown-key",
        "epochs-0",
        "lr-inf",
        "iwae-1",
    ],
)
def test_cli_refuses_a_bad_setting_before_any_work(bits, tmp_path, capsys, toml, flags, name):
    argv = ["train", "vae", "--data", str(bits), "--out", str(tmp_path / "run"), "--quiet"]
    if toml:
        (tmp_path / "bad.toml").write_text(toml)
        argv += ["--config", str(tmp_path / "bad.toml")]
    assert main([*argv, *flags]) == 2
    assert name in error_of(capsys)
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "runs").exists()


# ---- 4. the run's lock --------------------------------------------------------------------------

HOLDER = """
import sys, time
from pyrogen.runs import RunDir
with RunDir(sys.argv[1]).lock("train"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_held_lock_refuses_train_and_evaluate_and_dies_with_its_holder(cli_run, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cli_run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        resume = ["train", "--resume", "--out", str(cli_run), "--epochs", "3", "--quiet"]
        assert main(resume) == 2
        err = error_of(capsys)
        assert f"process {holder.pid}" in err
        assert main(["evaluate", str(cli_run), "--ks", "1,2", "--quiet"]) == 2
        assert f"process {holder.pid}" in error_of(capsys)
        assert not (cli_run / "evaluations").exists()
        with pytest.raises(RunDirError, match=f"process {holder.pid}"):
            pyrogen.fit(TwiceZ(12), torch.zeros(10, 12), out=cli_run, resume=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert pyrogen.RunDir(cli_run).holder() is None  # no stale lock
    assert main(["evaluate", str(cli_run), "--ks", "1,2", "--quiet"]) == 0
    assert main(resume) == 0
    assert len(pd.read_csv(cli_run / "history.csv")) == 3


# ---- 5. resume ----------------------------------------------------------------------------------


def test_resume_goes_to_the_total_epochs_and_refuses_fewer(cli_run, capsys):
    resume = ["train", "--resume", "--out", str(cli_run), "--quiet"]
    capsys.readouterr()
    before = (cli_run / "checkpoint.pt").read_bytes()
    assert main([*resume, "--epochs", "1"]) == 2
    err = error_of(capsys)
    assert "has done 2 epochs" in err and "--epochs 1" in err
    assert (cli_run / "checkpoint.pt").read_bytes() == before
    assert json.loads((cli_run / "config.json").read_text())["epochs"] == 2

    assert main([*resume, "--epochs", "3"]) == 0
    assert list(pd.read_csv(cli_run / "history.csv")["epoch"]) == [1, 2, 3]
    config = json.loads((cli_run / "config.json").read_text())
    assert config["epochs"] == 3
    assert len(config["commands"]) == 2
    assert torch.load(cli_run / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_resume_changes_a_setting_only_with_override_and_records_it(cli_run, capsys):
    resume = ["train", "--resume", "--out", str(cli_run), "--epochs", "3", "--quiet"]
    capsys.readouterr()
    assert main([*resume, "--lr", "0.5"]) == 2
    err = error_of(capsys)
    assert "lr" in err and "--override" in err
    assert json.loads((cli_run / "config.json").read_text())["lr"] == pytest.approx(1e-3)
    assert len(pd.read_csv(cli_run / "history.csv")) == 2

    assert main([*resume, "--lr", "0.5", "--override"]) == 0
    config = json.loads((cli_run / "config.json").read_text())
    assert config["lr"] == 0.5
    assert config["overrides"][-1]["changes"] == {"lr": [1e-3, 0.5]}
    assert len(pd.read_csv(cli_run / "history.csv")) == 3


def test_an_overridden_lr_is_the_one_training_uses(cli_run):
    resume = ["train", "--resume", "--out", str(cli_run), "--epochs", "3", "--quiet"]
    assert main([*resume, "--lr", "0.5", "--override"]) == 0
    history = pd.read_csv(cli_run / "history.csv")
    assert list(history["lr"]) == pytest.approx([1e-3, 1e-3, 0.5])


# ---- 6. model options and --version -------------------------------------------------------------


def test_model_option_reaches_the_constructor(bits, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "vae", "--data", str(bits), "--hidden-dims", "8", "--epochs", "1"]
    assert main([*argv, "--quiet", "--out", str(run), "--model-option", "latent_dim=3"]) == 0
    assert json.loads((run / "config.json").read_text())["model_options"]["latent_dim"] == 3
    model = pyrogen.load_run(run).model
    assert model.latent_dim == 3
    guide = pyro.poutine.trace(model.guide).get_trace(torch.zeros(4, 12))
    assert guide.nodes["z"]["value"].shape == (4, 3)


def test_an_unknown_model_option_is_named(bits, tmp_path, capsys):
    argv = ["train", "vae", "--data", str(bits), *TINY, "--out", str(tmp_path / "run")]
    assert main([*argv, "--model-option", "bogus_width=3"]) == 2
    assert "takes no option 'bogus_width' (its options: latent_dim" in error_of(capsys)
    assert not (tmp_path / "run").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert pyrogen.__version__ in capsys.readouterr().out


# ---- 7. duplicate site names --------------------------------------------------------------------


class TwiceZ(pyrogen.GenerativeModel):
    def __init__(self, data_dim):
        super().__init__()
        self.dec = torch.nn.Linear(2, data_dim)
        self.enc = torch.nn.Linear(data_dim, 2)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(x.new_zeros(2), 1.0).to_event(1))
            z = z + pyro.sample("z", pyro.distributions.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = self.dec(z)
            pyro.sample("x", pyro.distributions.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = self.enc(x)
            pyro.sample("z", pyro.distributions.Normal(loc, 1.0).to_event(1))


def test_a_site_sampled_twice_is_an_error_naming_it():
    model = TwiceZ(12)
    x = torch.bernoulli(torch.full((20, 12), 0.5))
    with pytest.raises(ContractError, match="multiple sample sites named 'z'"):
        pyrogen.log_weights(model.model, model.guide, x, num_particles=3)
    with pytest.raises(ContractError, match="'z'"):
        pyrogen.log_weights(model.model, model.guide, x, num_particles=3, max_plate_nesting=1)
    with pytest.raises(ContractError, match="'z'"):
        pyrogen.fit(model, x, epochs=1, batch_size=10, progress=False)


# ---- 8. evaluate --batch-size -------------------------------------------------------------------


def test_evaluate_batch_size_is_honoured(cli_run, capsys):
    # a point's draws depend on the seed and the batch size (pyrogen.bounds.evaluate's seed):
    # the numbers of two batch sizes differ legitimately; the same batch size repeats them
    folder = cli_run / "evaluations" / "is-K8-val"
    argv = ["evaluate", str(cli_run), "--ks", "1,8", "--split", "val", "--quiet"]
    points = []
    for batch in ("7", "20", "7"):
        assert main([*argv, "--batch-size", batch]) == 0
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["batch_size"] == int(batch) and meta["points"] == 18
        points.append(pd.read_csv(folder / "points.csv"))
    pd.testing.assert_frame_equal(points[0], points[2])
    assert not points[0].equals(points[1])


# ---- 9. the saved model source ------------------------------------------------------------------


def test_the_saved_source_outlives_edits_of_the_model_file(tmp_path, capsys):
    run, file = fit_sigma_run(tmp_path)
    saved = run / "model_source" / file.name
    assert saved.read_text() == file.read_text()
    write_model(tmp_path, hidden=5)  # the decoder no longer fits the checkpoint
    forget_user_modules()
    assert pyrogen.load_run(run).model.dec[0].out_features == 8
    assert main(["evaluate", str(run), "--ks", "1,2", "--split", "val", "--quiet"]) == 0
    file.unlink()
    forget_user_modules()
    assert pyrogen.load_run(run).model.dec[0].out_features == 8
    assert main(["evaluate", str(run), "--ks", "1,3", "--split", "val", "--quiet"]) == 0


def test_a_tampered_saved_source_is_refused(tmp_path, capsys):
    run, file = fit_sigma_run(tmp_path)
    saved = run / "model_source" / file.name
    saved.write_text(saved.read_text() + "\n# changed\n")
    forget_user_modules()
    with pytest.raises(RunDirError, match="sha256"):
        pyrogen.load_run(run)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--ks", "1,2", "--split", "val", "--quiet"]) == 2
    assert "changed after training" in error_of(capsys)
    assert not (run / "evaluations").exists()


# ---- 10. non-finite parameters ------------------------------------------------------------------


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


class Poisoned(pyrogen.GenerativeModel):
    """A VAE whose decoder's gradient becomes infinite once ``poisoned`` is set."""

    def __init__(self, data_dim):
        super().__init__()
        self.dec = torch.nn.Linear(2, data_dim)
        self.enc = torch.nn.Linear(data_dim, 4)
        self.poisoned = False

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = self.dec(z)
            if self.poisoned:
                logits = _InfGrad.apply(logits)
            pyro.sample("x", pyro.distributions.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x):
        loc, log_scale = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(loc, log_scale.exp()).to_event(1))


class PoisonAfterFirstEpoch(pyrogen.train.hooks.Callback):
    def __init__(self, model):
        self.model = model

    def on_epoch_end(self, state, row):
        self.model.poisoned = True


def all_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(all_finite(v) for v in value)
    return True


def test_an_infinite_gradient_stops_and_only_finite_parameters_are_checkpointed(tmp_path):
    model = Poisoned(12)
    x = torch.bernoulli(torch.full((200, 12), 0.5))
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="non-finite gradient"):
        pyrogen.fit(
            model,
            x[:150],
            x[150:],
            out=run,
            epochs=3,
            batch_size=50,
            on_nan="stop",
            progress=False,
            callbacks=[PoisonAfterFirstEpoch(model)],
        )
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert all_finite(checkpoint["model"]) and all_finite(checkpoint["optimizer"]["state"])
    assert len(pd.read_csv(run / "history.csv")) == 1


def test_a_state_with_a_non_finite_parameter_is_never_checkpointed():
    from pyrogen.train.state import TrainState

    model = Poisoned(12)
    opt = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = TrainState(model, opt, scheduler)
    assert all_finite(state.checkpoint()["model"])
    with torch.no_grad():
        model.dec.weight[0, 0] = math.nan
    with pytest.raises(TrainingError, match="dec.weight"):
        state.checkpoint()


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(cli_run, capsys):
    path = cli_run / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    name = next(k for k, v in checkpoint["model"].items() if v.is_floating_point())
    checkpoint["model"][name] = torch.full_like(checkpoint["model"][name], math.nan)
    torch.save(checkpoint, path)
    capsys.readouterr()
    assert main(["evaluate", str(cli_run), "--ks", "1,2", "--split", "val", "--quiet"]) == 2
    err = error_of(capsys)
    assert "non-finite parameters" in err and name in err
    assert not (cli_run / "evaluations").exists()


def test_evaluate_refuses_a_checkpoint_with_a_non_finite_pyro_param(tmp_path, capsys):
    run, _ = fit_sigma_run(tmp_path)
    path = run / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["pyro_params"]["sigma"] = torch.tensor(math.nan)
    torch.save(checkpoint, path)
    pyro.clear_param_store()
    forget_user_modules()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--ks", "1,2", "--split", "val", "--quiet"]) == 2
    err = error_of(capsys)
    assert not (run / "evaluations").exists()
    assert "non-finite parameters" in err and "sigma" in err
