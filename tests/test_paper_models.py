"""The Exemplar VAE / VampPrior protocol's pieces: paper-sized gated networks, AdamNormGrad, the
protocol's data split, and exact resume of a run trained with a non-default optimizer."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from vae import VAE
from vamp_vae import VampVAE

import pyrogen
from pyrogen.nn import GatedDense
from pyrogen.optim import AdamNormGrad
from pyrogen.train import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _bench():  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(
        "bench_fmnist", ROOT / "benchmarks" / "fashion_mnist.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: VAE(784, latent_dim=40, hidden_dims=(300, 300), gated=True), 1_116_864),
        (
            lambda: VampVAE(784, latent_dim=40, hidden_dims=(300, 300), num_pseudo=500, gated=True),
            1_508_864,
        ),
    ],
    ids=["vae", "vamp"],
)
def test_gated_models_have_the_reference_codes_parameter_counts(build, expected):
    assert _count(build()) == expected


def test_protocol_models_match_the_parameters_the_toml_records():
    bench = _bench()
    proto = bench.load_protocol("exemplar")
    for name, spec in proto["models"].items():
        assert _count(bench.protocol_model(proto, name)) == spec["parameters"], name


def test_gated_dense_is_h_times_sigmoid_g():
    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    expected = (x @ layer.h.weight.T + layer.h.bias) * torch.sigmoid(
        x @ layer.g.weight.T + layer.g.bias
    )
    torch.testing.assert_close(layer(x), expected)


def test_gated_vamp_pseudo_inputs_are_hardtanh_clipped():
    model = VampVAE(784, latent_dim=40, hidden_dims=(300, 300), num_pseudo=500, gated=True)
    with torch.no_grad():
        model.pseudo_logits[0, :3] = torch.tensor([-0.5, 0.3, 1.7])
    torch.testing.assert_close(model.pseudo_inputs[0, :3], torch.tensor([0.0, 0.3, 1.0]))
    init = model.pseudo_logits[1:]
    assert abs(init.mean().item() - 0.05) < 1e-3 and abs(init.std().item() - 0.01) < 1e-3


def test_adam_normgrad_is_adam_on_per_tensor_normalized_gradients():
    """Two steps computed by hand: each tensor's gradient divided by its own L2 norm, then Adam."""
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    b = torch.nn.Parameter(torch.tensor([0.5]))
    lr, (b1, b2), eps = 0.1, (0.9, 0.999), 1e-8
    opt = AdamNormGrad([a, b], lr=lr, betas=(b1, b2), eps=eps)
    grads = [
        (torch.tensor([3.0, 4.0]), torch.tensor([-0.2])),
        (torch.tensor([0.0, 100.0]), torch.tensor([0.05])),
    ]
    want = {id(a): a.detach().clone(), id(b): b.detach().clone()}
    m = {id(a): torch.zeros(2), id(b): torch.zeros(1)}
    v = {id(a): torch.zeros(2), id(b): torch.zeros(1)}
    for t, (ga, gb) in enumerate(grads, start=1):
        a.grad, b.grad = ga.clone(), gb.clone()
        opt.step()
        for p, g in ((a, ga), (b, gb)):
            g = g / (g.norm() + 1e-7)
            m[id(p)] = b1 * m[id(p)] + (1 - b1) * g
            v[id(p)] = b2 * v[id(p)] + (1 - b2) * g * g
            m_hat, v_hat = m[id(p)] / (1 - b1**t), v[id(p)] / (1 - b2**t)
            want[id(p)] = want[id(p)] - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(a.detach(), want[id(a)])
        torch.testing.assert_close(b.detach(), want[id(b)])
    # plain Adam on the raw gradients lands elsewhere (the normalization is what is tested)
    c = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    adam = torch.optim.Adam([c], lr=lr)
    for ga, _ in grads:
        c.grad = ga.clone()
        adam.step()
    assert not torch.allclose(c.detach(), a.detach(), atol=1e-3)


@pytest.fixture(scope="module")
def digits():
    return (
        pyrogen.load_dataset("digits", "train", binarize="dynamic"),
        pyrogen.load_dataset("digits", "val", binarize="dynamic"),
    )


def _small_gated(seed=0):
    torch.manual_seed(seed)
    return VAE(64, latent_dim=4, hidden_dims=(32, 32), gated=True)


def test_adam_normgrad_run_resumes_exactly(digits, tmp_path):
    train, val = digits
    opts = dict(binarize="dynamic", seed=3, kl_warmup=2, optimizer=AdamNormGrad, progress=False)
    full = _small_gated()
    h_full = pyrogen.fit(full, train.x, val.x, epochs=3, out=tmp_path / "full", **opts)
    pyrogen.fit(_small_gated(), train.x, val.x, epochs=1, out=tmp_path / "part", **opts)
    state = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert state["optimizer"]["state"], "the optimizer's moments are checkpointed"
    resumed = _small_gated()
    h_res = pyrogen.fit(
        resumed, train.x, val.x, epochs=3, out=tmp_path / "part", resume=True, **opts
    )
    for (name, x), y in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), name
    assert h_full["val_elbo"].tolist() == h_res["val_elbo"].tolist()


def test_patience_does_not_count_during_kl_warmup(digits):
    """An optimizer with learning rate 0 freezes the weights, so after the first epoch the
    validation ELBO seldom improves: with patience 1 an epoch without improvement after the
    warm-up stops the run, but no epoch inside the 4-epoch warm-up may."""
    train, val = digits
    history = pyrogen.fit(
        _small_gated(),
        train.x[:200],
        val.x,
        epochs=30,
        optimizer=lambda params, lr: torch.optim.SGD(params, lr=0.0),
        kl_warmup=4,
        patience=1,
        binarize="dynamic",
        progress=False,
    )
    assert len(history) > 4, "stopped inside the warm-up"
    assert len(history) < 30, "patience never stopped the run"


def test_protocol_split_is_deterministic_and_binarizes_val_and_test_once():
    from pyrogen.data import find_idx_files, read_idx
    from pyrogen.errors import DataError

    try:
        find_idx_files("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST IDX files are not installed (no download in tests)")
    bench = _bench()
    proto = bench.load_protocol("exemplar")
    one, two = bench.protocol_splits(proto), bench.protocol_splits(proto)
    assert [len(one[k]) for k in ("train", "val", "test")] == [50_000, 10_000, 10_000]
    for k in one:
        assert torch.equal(one[k], two[k]), k
    for k in ("val", "test"):
        assert set(one[k].unique().tolist()) == {0.0, 1.0}, k
    assert len(one["train"].unique()) > 2  # grey levels: binarized afresh each batch
    # the validation set is the last 10,000 training images in file order, Bernoulli(grey)
    files = find_idx_files("fashion-mnist")
    grey = torch.from_numpy(read_idx(files["train_images"])).flatten(1).float() / 255.0
    assert torch.equal(one["train"], grey[:50_000])
    p = grey[50_000:]
    diff = float((one["val"] - p).sum())
    sd = math.sqrt(float((p * (1 - p)).sum()))
    assert abs(diff) < 5 * sd
    assert torch.all(one["val"][p == 0] == 0) and torch.all(one["val"][p == 1] == 1)
