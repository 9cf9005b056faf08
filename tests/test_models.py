"""Shared checks over every model/guide pair of the zoo (every models/*.py file).

Each pair is built small (``TINY``), on digits-like data (64 pixels): the contract holds; one
training step gives a finite loss and a gradient to every parameter; ELBO <= IWAE_K within Monte
Carlo error; a checkpoint round-trips exactly; ``main`` runs end to end. Model-specific tests check
exact answers: the flow's density integrates to one and its weights are exact (gap 0, ESS = K),
the IAF guide is a normalized density, the VampPrior's fast log-density equals Pyro's, and IWAE_5
training beats ELBO training on the IWAE_5 bound it optimises. A smoke run of
benchmarks/fashion_mnist.py checks its CSV.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyrogen
from pyrogen.model import wants_labels
from pyrogen.runs import load_model_class
from pyrogen.train import load_checkpoint, objective_loss, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MODEL_FILES = sorted(p for p in (ROOT / "models").glob("*.py") if not p.name.startswith("_"))
DATA_DIM = 64  # digits: 8 x 8

#: small sizes per model class, so that every check runs in a fraction of a second; a model
#: missing here is built with its defaults
TINY = {
    "VAE": dict(latent_dim=4, hidden_dims=(16,)),
    "PPCA": dict(latent_dim=2),
    "ConvVAE": dict(latent_dim=4, hidden_dims=(16,), channels=(4, 8)),
    "HVAE": dict(latent_dim=4, top_latent_dim=3, hidden_dim=16, prior="vampprior", num_pseudo=10),
    "SmallHVAE": dict(latent_dim=6, hidden_dims=(16,), top_latent_dim=3, top_hidden_dims=(8,)),
    "IAFVAE": dict(latent_dim=4, hidden_dims=(16,), num_flows=2),
    "VampVAE": dict(latent_dim=4, hidden_dims=(16,), num_pseudo=10),
    "Flow": dict(num_flows=2, hidden_dims=(64,)),
    "CVAE": dict(latent_dim=4, hidden_dims=(16,)),
}
#: models of continuous data: they get grey levels, the others binary pixels
CONTINUOUS = {"PPCA", "Flow"}
#: extra command-line arguments of each file's main (data they need)
MAIN_ARGS: dict[str, list[str]] = {}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def model_class(path: Path) -> type[pyrogen.GenerativeModel]:
    cls, _ = load_model_class(str(path))
    return cls


def build(path: Path, seed: int = 0) -> pyrogen.GenerativeModel:
    cls = model_class(path)
    torch.manual_seed(seed)
    kwargs = dict(TINY.get(cls.__name__, {}))
    if "num_classes" in inspect.signature(cls).parameters:
        kwargs["num_classes"] = 10
    return cls(DATA_DIM, **kwargs)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # these are many small tensor operations: on a busy machine with two cores, two threads
    # contend and run an order of magnitude slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> pyrogen.Dataset:
    return pyrogen.load_dataset("digits", "train")


def batch(model: pyrogen.GenerativeModel, digits: pyrogen.Dataset, n: int = 16) -> tuple:
    """A small batch of model arguments: binary or grey x [n, 64], and labels where wanted."""
    x = digits.x[:n]
    if type(model).__name__ not in CONTINUOUS:
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    return (x, digits.y[:n]) if wants_labels(model.model) else (x,)


def test_every_model_file_is_covered() -> None:
    names = {p.stem for p in MODEL_FILES}
    zoo = {"vae", "ppca", "conv_vae", "hvae", "hvae_small", "iaf_vae", "vamp_vae", "flow", "cvae"}
    assert zoo <= names


@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_contract(path: Path, digits: pyrogen.Dataset) -> None:
    model = build(path)
    args = batch(model, digits)
    info = pyrogen.check_model(model, *args, per_datapoint=True)
    assert info.observed == ("x",)
    assert model.data_dim == DATA_DIM
    doc = sys.modules[type(model).__module__].__doc__ or ""
    for part in (".. math::", "References:", "https://"):
        assert part in doc, f"{path.name}: the module docstring needs '{part}'"


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_training_step_reaches_every_parameter(
    path: Path, objective: str, digits: pyrogen.Dataset
) -> None:
    model = build(path)
    args = batch(model, digits)
    nesting = pyrogen.check_model(model, *args).max_plate_nesting
    elbo = Trace_ELBO(max_plate_nesting=nesting)
    with pyro.validation_enabled(False):
        loss, value = objective_loss(model, args, objective, 3, nesting, elbo)
    assert torch.isfinite(loss), f"{path.name}: loss {float(loss.detach())}"
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_elbo_below_importance_estimate(path: Path, digits: pyrogen.Dataset) -> None:
    model = build(path)
    args = batch(model, digits, n=8)
    ev = pyrogen.evaluate(model.model, model.guide, *args, ks=(1, 100))
    pts = ev.points
    gap = float((pts["log_px"] - pts["elbo"]).mean())
    se = math.sqrt(float((pts["elbo_stderr"] ** 2).sum() + (pts["log_px_stderr"] ** 2).sum()))
    se /= len(pts)
    assert gap >= -3 * se, f"{path.name}: mean log_px - elbo = {gap:.4g} < -3 * {se:.3g}"
    assert np.isfinite(pts["log_px"]).all()


@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_checkpoint_round_trip(path: Path, digits: pyrogen.Dataset, tmp_path: Path) -> None:
    model = build(path, seed=0)
    args = batch(model, digits, n=8)
    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, {"model": model.state_dict()})
    # another seed: other initial weights and, for the flows, other variable orders
    fresh = build(path, seed=1)
    fresh.load_state_dict(load_checkpoint(ckpt)["model"])
    weights = []
    for m in (model, fresh):
        pyro.set_rng_seed(7)
        weights.append(pyrogen.log_weights(m.model, m.guide, *args, num_particles=5))
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=0)


@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_sample_shape(path: Path) -> None:
    model = build(path)
    pyro.set_rng_seed(0)
    if wants_labels(model.model):
        x = model.sample(6, y=torch.arange(6) % 10)
    else:
        x = model.sample(6)
    assert x.shape == (6, DATA_DIM)
    assert torch.isfinite(x).all()


# --- the flow: no latent variable, exact density ------------------------------------------------


def _zoo(name: str) -> type:
    return model_class(ROOT / "models" / f"{name}.py")


def test_flow_weights_are_exact(digits: pyrogen.Dataset) -> None:
    flow = _zoo("flow")(DATA_DIM, **TINY["Flow"])
    x = digits.x[:10]
    k = 50
    lw = pyrogen.log_weights(flow.model, flow.guide, x, num_particles=k)
    assert lw.shape == (k, 10)
    assert bool((lw == lw[0]).all()), "without latents every weight is log p(x)"
    with torch.no_grad():
        log_px = flow.density(x).log_prob(x)
    torch.testing.assert_close(lw[0], log_px)
    ev = pyrogen.evaluate(flow.model, flow.guide, x, ks=(1, 10, k))
    pts = ev.points
    np.testing.assert_allclose(pts["gap"], 0.0, atol=1e-9)
    np.testing.assert_allclose(pts["elbo"], log_px.double().numpy(), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pts["ess"], k, rtol=1e-9)
    np.testing.assert_allclose(pts["ess_10"], 10, rtol=1e-9)
    assert ev.summary["gap"].abs().max() < 1e-9


def test_flow_density_integrates_to_one() -> None:
    """E_{x ~ U(box)}[p(x)] * vol(box) = 1 over the support box, in two dimensions."""
    flow = _zoo("flow")(2, num_flows=2, hidden_dims=(8,), alpha=0.05)
    with torch.no_grad():
        for p in flow.parameters():  # a non-trivial density, not the near-identity start
            p.add_(0.3 * torch.randn_like(p))
    a = flow.alpha
    lo, hi = -a / (1 - 2 * a), 1 + a / (1 - 2 * a)
    n = 200_000
    x = lo + (hi - lo) * torch.rand(n, 2, dtype=torch.float64)
    flow.double()
    with torch.no_grad():
        p = flow.density(x).log_prob(x).exp() * (hi - lo) ** 2
    mean, se = float(p.mean()), float(p.std() / math.sqrt(n))
    assert abs(mean - 1) < 4 * se + 1e-3, f"integral {mean:.4f} +- {se:.4f}, expected 1"


def test_iaf_guide_is_normalized(digits: pyrogen.Dataset) -> None:
    """E_{z ~ N(0, I)}[q(z | x) / N(z; 0, I)] = 1: the IAF log-determinant is right."""
    vae = _zoo("iaf_vae")(DATA_DIM, latent_dim=2, hidden_dims=(16,), num_flows=3)
    with torch.no_grad():
        for p in vae.flows.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = digits.x[:1]
    n = 200_000
    z = 2.0 * torch.randn(n, 1, 2)  # a wide proposal N(0, 4 I) covers q's tails
    with torch.no_grad():
        q = vae.posterior(x)
        log_q = q.log_prob(z)
    log_r = pyro.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
    ratio = (log_q - log_r).double().exp()
    mean, se = float(ratio.mean()), float(ratio.std() / math.sqrt(n))
    assert abs(mean - 1) < 4 * se + 1e-3, f"integral of q {mean:.4f} +- {se:.4f}, expected 1"


def test_iaf_guide_sample_log_prob_matches_inverse(digits: pyrogen.Dataset) -> None:
    """log q at a draw (cached forward pass) equals log q found by inverting the flow."""
    vae = _zoo("iaf_vae")(DATA_DIM, latent_dim=4, hidden_dims=(16,), num_flows=2)
    x = digits.x[:5]
    with torch.no_grad():
        q = vae.posterior(x)
        z = q.rsample()
        cached = q.log_prob(z)
        inverted = vae.posterior(x).log_prob(z.clone())  # a new tensor: no cache hit
    torch.testing.assert_close(cached, inverted, rtol=1e-4, atol=1e-4)


def test_vamp_prior_log_density_equals_mixture() -> None:
    vamp = _zoo("vamp_vae")(DATA_DIM, **TINY["VampVAE"])
    prior = vamp.prior()
    z = 3 * torch.randn(7, 5, 4)
    with torch.no_grad():
        fast = prior.expand([7, 5]).log_prob(z)
        slow = pyro.distributions.MixtureSameFamily.log_prob(prior.expand([7, 5]), z)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)


def test_conv_vae_rejects_non_square_images() -> None:
    with pytest.raises(ValueError, match="data_dim=50"):
        _zoo("conv_vae")(50)
    assert _zoo("conv_vae")(784, **TINY["ConvVAE"]).decode(torch.zeros(3, 2, 4)).shape == (
        3,
        2,
        784,
    )


def test_cvae_samples_one_class_per_row(digits: pyrogen.Dataset) -> None:
    cvae = _zoo("cvae")(DATA_DIM, num_classes=10, **TINY["CVAE"])
    pyro.set_rng_seed(0)
    a = cvae.sample(10)
    pyro.set_rng_seed(0)
    b = cvae.sample(10, y=torch.arange(10))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="0..9"):
        cvae.sample(2, y=torch.tensor([0, 12]))


# --- scripts ------------------------------------------------------------------------------------


def _import(path: Path):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(f"zoo_main_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("path", MODEL_FILES, ids=_ids(MODEL_FILES))
def test_main_runs(path: Path, tmp_path: Path) -> None:
    module = _import(path)
    out = tmp_path / "run"
    args = [
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--ks",
        "1,10",
        "--limit",
        "50",
        *MAIN_ARGS.get(path.stem, []),
    ]
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 0
    bounds = pd.read_csv(out / "bounds.csv")
    assert list(bounds["k"]) == [1, 10]
    assert np.isfinite(bounds["estimate"]).all()
    assert int(bounds["num_points"].iloc[0]) == 50


@pytest.mark.slow
def test_iwae_training_beats_elbo_training_on_iwae_bound() -> None:
    """Burda et al. (2015): IWAE_5 training gives a higher test IWAE_5 than ELBO training."""
    train = pyrogen.load_dataset("digits", "train")
    test = pyrogen.load_dataset("digits", "test", binarize="static")
    vae_cls = _zoo("vae")
    points = {}
    for objective, k in (("elbo", 1), ("iwae", 5)):
        pyro.set_rng_seed(0)
        model = vae_cls(DATA_DIM, latent_dim=8, hidden_dims=(64,))
        pyrogen.fit(
            model,
            train.x,
            epochs=20,
            batch_size=64,
            lr=3e-3,
            objective=objective,
            num_particles=k,
            seed=0,
            binarize="dynamic",
            progress=False,
        )
        pyro.set_rng_seed(1)
        points[objective] = pyrogen.evaluate(
            model.model, model.guide, test.x, ks=(1, 5), num_particles=200
        ).points
    diff = points["iwae"]["iwae_5"] - points["elbo"]["iwae_5"]
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))  # paired: data and Monte Carlo error
    assert diff.mean() > 3 * se, f"IWAE_5 gain {diff.mean():.3f} nats, stderr {se:.3f}"


@pytest.mark.slow
def test_fashion_mnist_benchmark_smoke(tmp_path: Path) -> None:
    from pyrogen.data import find_idx_files
    from pyrogen.errors import DataError

    try:
        find_idx_files("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST IDX files are not installed (no download in tests)")
    bench = _import(ROOT / "benchmarks" / "fashion_mnist.py")
    assert bench.main(["--smoke", "--out", str(tmp_path), "--quiet", "--threads", "1"]) == 0
    table = pd.read_csv(tmp_path / "fashion_mnist_budget.csv")
    assert list(table.columns) == bench.COLUMNS
    assert list(table["model"]) == list(bench.IMAGE_MODELS)
    assert (table["test_points"] == 20).all() and (table["K"] == 20).all()
    slack = 3 * table["stderr"] + 1e-9
    assert (table["test_elbo"] <= table["iwae_K"] + slack).all()
    np.testing.assert_allclose(table["nll"], -table["iwae_K"], rtol=1e-3)
    np.testing.assert_allclose(table["bits_per_dim"], table["nll"] / (784 * math.log(2)), rtol=1e-3)
