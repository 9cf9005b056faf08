"""The two-level HVAE of the VampPrior paper (models/hvae.py): the reference code's parameter
counts, training with pyrogen.fit, per-point importance weights under vectorized particles, the
contract, and the VampPrior mixture's log-density."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from hvae import HVAE, VampMixture

import pyrogen

ROOT = Path(__file__).resolve().parent.parent

# The reference count, by hand from Tomczak's models/HVAE_2level.py (github.com/jmtomczak/
# vae_vampprior) for 784 inputs, z1_size = z2_size = 40 and layers of 300 units.
# nn.Linear(a, b) has (a + 1) b parameters; GatedDense(a, b), two of them (h and g), 2 (a + 1) b.
#   q(z2 | x):     GatedDense(784, 300)  2 * 785 * 300 = 471,000
#                  GatedDense(300, 300)  2 * 301 * 300 = 180,600
#                  mean Linear(300, 40)      301 * 40  =  12,040
#                  log-var Linear(300, 40)   301 * 40  =  12,040   (Hardtanh(-6, 2) after it)
#                                                        675,680
#   q(z1 | x, z2): GatedDense(784, 300) on x             471,000
#                  GatedDense(40, 300) on z2  2 * 41 * 300 = 24,600
#                  GatedDense(600, 300) on the two joined 2 * 601 * 300 = 360,600
#                  mean and log-var Linear(300, 40)       24,080
#                                                        880,280
#   p(z1 | z2):    GatedDense(40, 300) 24,600 + GatedDense(300, 300) 180,600
#                  + mean and log-var Linear(300, 40) 24,080          229,280
#   p(x | z1, z2): GatedDense(40, 300) on z1 24,600 + GatedDense(40, 300) on z2 24,600
#                  + GatedDense(600, 300) 360,600 + mean Linear(300, 784) 301 * 784 = 235,984
#                                                        645,784
#   standard prior:  675,680 + 880,280 + 229,280 + 645,784 = 2,431,024
#   VampPrior:       + the pseudo-input generator Linear(500, 784, bias=False) on the 500 x 500
#                    identity, 500 * 784 = 392,000:                  2,823,024
# (Running the reference code's constructor under torch 2.13 gives the same two numbers.)
REFERENCE_BLOCKS = {
    "q(z2|x)": 675_680,
    "q(z1|x,z2)": 880_280,
    "p(z1|z2)": 229_280,
    "p(x|z1,z2)": 645_784,
}
REFERENCE_STANDARD = 2_431_024
REFERENCE_VAMPPRIOR = 2_823_024
MODULES = {
    "q(z2|x)": ("q_z2",),
    "q(z1|x,z2)": ("q_z1_x", "q_z1_z2", "q_z1_joint"),
    "p(z1|z2)": ("p_z1",),
    "p(x|z1,z2)": ("p_x_z1", "p_x_z2", "p_x_joint"),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _paper(prior: str) -> HVAE:
    return HVAE(784, latent_dim=40, top_latent_dim=40, hidden_dim=300, prior=prior, num_pseudo=500)


def test_reference_arithmetic_adds_up():
    assert sum(REFERENCE_BLOCKS.values()) == REFERENCE_STANDARD
    assert REFERENCE_STANDARD + 500 * 784 == REFERENCE_VAMPPRIOR


@pytest.mark.parametrize(
    ("prior", "expected"),
    [("standard", REFERENCE_STANDARD), ("vampprior", REFERENCE_VAMPPRIOR)],
)
def test_parameter_count_equals_the_reference_codes(prior, expected):
    model = _paper(prior)
    assert _count(model) == expected
    for block, names in MODULES.items():
        assert sum(_count(getattr(model, n)) for n in names) == REFERENCE_BLOCKS[block], block
    if prior == "vampprior":
        assert model.pseudo_logits.shape == (500, 784)
    else:
        assert not hasattr(model, "pseudo_logits")


def test_the_defaults_are_the_papers_standard_prior_model():
    assert _count(HVAE(784)) == REFERENCE_STANDARD


def test_protocol_entries_build_the_reference_models():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_fmnist_hvae", ROOT / "benchmarks" / "fashion_mnist.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    proto = bench.load_protocol("exemplar")
    for name, prior, expected in (
        ("hvae", "standard", REFERENCE_STANDARD),
        ("hvae_vamp", "vampprior", REFERENCE_VAMPPRIOR),
    ):
        entry = proto["models"][name]
        model = bench.protocol_model(proto, name)
        assert type(model).__name__ == "HVAE" and model.prior_name == prior, name
        assert entry["parameters"] == _count(model) == expected, name


def test_log_variances_are_clipped_and_pseudo_inputs_hardtanh():
    model = _paper("vampprior")
    x = 1e3 * torch.randn(4, 784)  # extreme inputs push every head against its clip
    z = 1e3 * torch.randn(4, 40)
    lo, hi = math.exp(-3.0), math.exp(1.0)  # exp(logvar / 2), logvar in [-6, 2]
    with torch.no_grad():
        for _, scale in (model.q_z2(x), model.posterior_z1(x, z), model.p_z1(z)):
            assert bool(((scale >= lo * (1 - 1e-6)) & (scale <= hi * (1 + 1e-6))).all())
        model.pseudo_logits[0, :3] = torch.tensor([-0.5, 0.3, 1.7])
    torch.testing.assert_close(model.pseudo_inputs[0, :3], torch.tensor([0.0, 0.3, 1.0]))
    init = model.pseudo_logits[1:]
    assert abs(init.mean().item() - 0.05) < 1e-3 and abs(init.std().item() - 0.01) < 1e-3


def test_rejects_unknown_options():
    with pytest.raises(ValueError, match="prior"):
        HVAE(784, prior="exemplar")
    with pytest.raises(ValueError, match="likelihood"):
        HVAE(784, likelihood="poisson")
    with pytest.raises(ValueError, match="num_pseudo"):
        HVAE(784, prior="vampprior", num_pseudo=0)


@pytest.fixture
def bits() -> torch.Tensor:
    """64 binarized digit-like rows of 784 pixels (random bits, P(1) = 0.2)."""
    return torch.bernoulli(torch.full((64, 784), 0.2), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("prior", ["standard", "vampprior"])
def test_check_model_passes(prior, bits):
    model = _paper(prior)
    info = pyrogen.check_model(model, bits[:8], per_datapoint=True)
    assert set(info.latent) == {"z1", "z2"} and info.observed == ("x",)
    assert info.max_plate_nesting == 1


@pytest.mark.parametrize("prior", ["standard", "vampprior"])
def test_log_weights_are_per_point_and_finite(prior, bits):
    model = _paper(prior)
    lw = pyrogen.log_weights(model.model, model.guide, bits[:5], num_particles=3)
    assert lw.shape == (3, 5)
    assert torch.isfinite(lw).all()


def test_guide_broadcasts_a_particle_dimension_of_z2(bits):
    """q(z1 | x, z2) with z2 [S, N, d] (particles left of the data plate) equals S separate
    calls with z2 [N, d]: x's features are expanded, not mixed up, when joined with z2's."""
    model = _paper("standard")
    x, z2 = bits[:5], torch.randn(3, 5, 40)
    with torch.no_grad():
        loc, scale = model.posterior_z1(x, z2)
        obs = model.observation(torch.randn(3, 5, 40), z2).base_dist.logits
        for s in range(3):
            loc_s, scale_s = model.posterior_z1(x, z2[s])
            torch.testing.assert_close(loc[s], loc_s)
            torch.testing.assert_close(scale[s], scale_s)
    assert loc.shape == (3, 5, 40) and obs.shape == (3, 5, 784)


def test_fit_trains_the_vampprior_model(bits):
    torch.manual_seed(0)
    model = _paper("vampprior")
    history = pyrogen.fit(
        model, bits, epochs=4, batch_size=32, lr=1e-3, seed=0, binarize="none", progress=False
    )
    objective = history["train_objective"].to_numpy()
    assert len(objective) == 4 and all(math.isfinite(v) for v in objective)
    assert objective[-1] > objective[0], objective  # the ELBO (nats per point) rises
    lw = pyrogen.log_weights(model.model, model.guide, bits[:5], num_particles=3)
    assert lw.shape == (3, 5) and torch.isfinite(lw).all()


def test_vamp_mixture_log_density_equals_pyros_mixture():
    torch.manual_seed(0)
    loc, scale = torch.randn(6, 4), 0.2 + torch.rand(6, 4)
    fast = VampMixture(loc, scale).expand([7, 5])
    slow = dist.MixtureSameFamily(
        dist.Categorical(logits=torch.zeros(6)), dist.Normal(loc, scale).to_event(1)
    ).expand([7, 5])
    z = 2 * torch.randn(7, 5, 4)
    torch.testing.assert_close(fast.log_prob(z), slow.log_prob(z), rtol=1e-5, atol=1e-4)
    # a draw without a particle dimension broadcasts against the batch
    assert fast.log_prob(z[0]).shape == (7, 5)
    pyro.set_rng_seed(0)
    draws = VampMixture(loc, scale).expand([3]).sample((2000,))
    assert draws.shape == (2000, 3, 4)
    torch.testing.assert_close(draws.mean((0, 1)), loc.mean(0), atol=0.1, rtol=0)


@pytest.mark.parametrize("prior", ["standard", "vampprior"])
def test_samples_are_pixel_means(prior):
    pyro.set_rng_seed(0)
    x = _paper(prior).sample(6)
    assert x.shape == (6, 784)
    assert bool(((x >= 0) & (x <= 1)).all())
