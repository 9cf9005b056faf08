"""SVI training: it learns, it resumes exactly, and the IWAE objectives have the right gradients."""

import math

import pandas as pd
import pyro
import pytest
import torch
from ppca import PPCA
from vae import VAE

import pyrogen
from pyrogen.bounds import evaluate, log_weights
from pyrogen.errors import ConfigError, RunDirError
from pyrogen.train import load_checkpoint, objective_loss


@pytest.fixture(scope="module")
def digits():
    return (
        pyrogen.load_dataset("digits", "train", binarize="dynamic"),
        pyrogen.load_dataset("digits", "val", binarize="dynamic"),
    )


def small_vae(seed=0):
    torch.manual_seed(seed)  # the initial weights: a run is reproducible from its seed
    return VAE(64, latent_dim=4, hidden_dims=(64,))


def test_training_raises_the_validation_elbo(digits):
    train, val = digits
    model = small_vae()
    before = evaluate(model.model, model.guide, val.x, ks=[1], num_particles=20).summary
    history = pyrogen.fit(model, train.x, val.x, epochs=6, binarize="dynamic", progress=False)
    after = evaluate(model.model, model.guide, val.x, ks=[1], num_particles=20).summary
    rise = after["estimate"][0] - before["estimate"][0]
    se = math.hypot(after["data_stderr"][0], before["data_stderr"][0])
    assert rise > 4 * se, f"validation ELBO rose by {rise:.2f} nats (se {se:.2f})"
    assert list(history.columns[:4]) == ["epoch", "train_elbo", "train_objective", "val_elbo"]
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert (history["val_elbo"] < 0).all()
    # history's last validation ELBO is a one-draw estimate of the same quantity
    assert abs(history["val_elbo"].iloc[-1] - after["estimate"][0]) < 6 * after["data_stderr"][0]


def test_resuming_gives_the_parameters_of_an_uninterrupted_run(digits, tmp_path):
    train, val = digits
    full = small_vae()
    h_full = pyrogen.fit(
        full,
        train.x,
        val.x,
        epochs=3,
        binarize="dynamic",
        seed=4,
        out=tmp_path / "full",
        progress=False,
    )
    part = small_vae()
    pyrogen.fit(
        part,
        train.x,
        val.x,
        epochs=1,
        binarize="dynamic",
        seed=4,
        out=tmp_path / "part",
        progress=False,
    )
    resumed = small_vae()
    h_res = pyrogen.fit(
        resumed,
        train.x,
        val.x,
        epochs=3,
        binarize="dynamic",
        seed=4,
        out=tmp_path / "part",
        resume=True,
        progress=False,
    )
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    cols = ["epoch", "train_elbo", "val_elbo"]
    pd.testing.assert_frame_equal(h_full[cols], h_res[cols])
    on_disk = pd.read_csv(tmp_path / "part" / "history.csv")
    assert list(on_disk["epoch"]) == [1, 2, 3]


def test_run_directory_and_checkpoint_are_tensors_only(digits, tmp_path):
    train, val = digits
    model = small_vae()
    pyrogen.fit(
        model,
        train.x[:200],
        val.x,
        epochs=1,
        binarize="dynamic",
        out=tmp_path / "r",
        progress=False,
    )
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        ".lock",  # the OS lock of the writer (empty when nobody holds it)
        "config.json",
        "history.csv",
        "checkpoint.pt",
        "data.pt",  # the tensors fit was given (no data set named): every command reads them
        "model_source",
    }
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")  # weights_only=True
    assert state["epoch"] == 1
    with pytest.raises(RunDirError, match="already holds a run"):
        pyrogen.fit(small_vae(), train.x[:200], epochs=1, out=tmp_path / "r", progress=False)


def test_kl_warmup_anneals_the_latent_sites(digits):
    train, _ = digits
    history = pyrogen.fit(
        small_vae(),
        train.x[:256],
        epochs=3,
        batch_size=128,
        kl_warmup=2,
        binarize="dynamic",
        progress=False,
    )
    weights = history["kl_weight"].tolist()
    assert weights[0] == pytest.approx(0.5) and weights[1] == 1.0 and weights[2] == 1.0
    assert math.isnan(history["train_elbo"][0]) and not math.isnan(history["train_elbo"][2])


@pytest.mark.parametrize("objective", ["mean-field", "iwae", "iwae-dreg"])
def test_every_objective_trains(objective, digits):
    train, val = digits
    model = small_vae()
    h = pyrogen.fit(
        model,
        train.x[:512],
        val.x,
        epochs=2,
        objective=objective,
        num_particles=3,
        binarize="dynamic",
        progress=False,
    )
    assert h["train_objective"].notna().all()
    assert h["val_elbo"].iloc[-1] > h["val_elbo"].iloc[0] - 1.0


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_dreg_gives_the_iwae_model_gradient_and_an_unbiased_guide_gradient():
    torch.manual_seed(0)
    m = PPCA(4, 2, diagonal=True).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    guide_params = ("encoder.weight", "encoder.bias", "raw_scale_tril")
    # the model (theta) gradient is the same as IWAE's, draw for draw
    pyro.set_rng_seed(1)
    g_iwae = _grads(m, objective_loss(m, (x,), "iwae", 5, 1)[0])
    pyro.set_rng_seed(1)
    loss, value = objective_loss(m, (x,), "iwae-dreg", 5, 1)
    g_dreg = _grads(m, loss)
    for name in ("weight", "loc", "log_sigma"):
        assert torch.allclose(g_iwae[name], g_dreg[name], atol=1e-10), name
    # the guide (phi) gradients agree in expectation: compare means over many draws
    draws = {"iwae": [], "iwae-dreg": []}
    for objective in draws:
        for _ in range(150):
            g = _grads(m, objective_loss(m, (x,), objective, 5, 1)[0])
            draws[objective].append(torch.cat([g[n].flatten() for n in guide_params]))
    a, b = torch.stack(draws["iwae"]), torch.stack(draws["iwae-dreg"])
    diff = a.mean(0) - b.mean(0)
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    assert (diff.abs() < 4.5 * se + 1e-9).all(), (diff / se).tolist()
    # and DReG's guide gradient has the smaller variance (Tucker et al., 2019)
    assert b.var(0).sum() < a.var(0).sum()


def test_iwae_loss_is_minus_the_iwae_bound():
    torch.manual_seed(0)
    m = PPCA(4, 2).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    pyro.set_rng_seed(2)
    loss, value = objective_loss(m, (x,), "iwae", 7, 1)
    pyro.set_rng_seed(2)
    lw = log_weights(m.model, m.guide, x, num_particles=7, max_plate_nesting=1)
    expected = (torch.logsumexp(lw, 0) - math.log(7)).sum()
    assert torch.allclose(-loss, expected) and torch.allclose(value, expected)


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1, "batch_size": -3}, "batch_size"),
        ({"epochs": 1, "num_particles": 0}, "particles"),
        ({"epochs": 1, "objective": "kl"}, "objective"),
        ({"epochs": 1, "lr_schedule": "weird"}, "schedule"),
    ],
)
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        pyrogen.fit(small_vae(), torch.zeros(8, 64), progress=False, **kwargs)
