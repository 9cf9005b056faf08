"""The fast paths of training and evaluation compute the numbers of the plain ones.

* ``fit``'s ELBO step (a lean recording of guide and model instead of Pyro traces) gives
  ``Trace_ELBO().differentiable_loss``'s value and bitwise its gradient, also under KL annealing,
  and ``fit``'s first-epoch objective is Trace_ELBO's loss on the same batch and seed.
* ``log_weights`` (the same lean recording) equals the traced computation it replaced, gives the
  same weights for every chunk size when the guide's draws are the same, and its k=1 mean is
  -Trace_ELBO's loss per point for the same seed.
* Each benchmark script runs with tiny arguments; their hand-written loops and pyrogen agree.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.distributions import normal as torch_normal

import pyrogen
from pyrogen.bounds import log_weights
from pyrogen.trace import Pair, as_pair, elbo_surrogate
from pyrogen.train import _AnnealLatents, objective_loss, seed_everything

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from ppca import PPCA  # noqa: E402
from vae import VAE  # noqa: E402


class TwoLevel(pyrogen.GenerativeModel):
    """z2 -> z1 -> x with a scaled observation: more sites than the VAE, the same contract."""

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.dec = torch.nn.Linear(2, data_dim)
        self.mid = torch.nn.Linear(1, 2)
        self.enc = torch.nn.Linear(data_dim, 6)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(self.mid(z2), 0.5).to_event(1))
            with pyro.poutine.scale(scale=0.7):
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z1)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(h[..., :2], h[..., 2:4].exp()).to_event(1))
            pyro.sample("z2", dist.Normal(h[..., 4:5], h[..., 5:6].exp()).to_event(1))


def _pairs() -> list[tuple[pyrogen.GenerativeModel, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x_bin = torch.bernoulli(torch.full((6, 10), 0.4), generator=g)
    return [
        (VAE(10, 3, (8,)), x_bin),
        (PPCA(5, 2), torch.randn(7, 5, generator=g)),
        (TwoLevel(10), x_bin),
    ]


def _loss_and_grads(model: pyrogen.GenerativeModel, fn, seed: int) -> tuple[torch.Tensor, list]:
    seed_everything(seed)
    loss = fn()
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("pair", range(3), ids=["vae", "ppca", "two-level"])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_fast_elbo_is_trace_elbo(pair: int, beta: float) -> None:
    model, x = _pairs()[pair]
    fn_model, fn_guide = model.model, model.guide
    if beta != 1.0:
        fn_model, fn_guide = _AnnealLatents(beta)(fn_model), _AnnealLatents(beta)(fn_guide)
    elbo = Trace_ELBO(max_plate_nesting=1)
    with pyro.validation_enabled(False):
        ref, ref_grads = _loss_and_grads(
            model, lambda: elbo.differentiable_loss(fn_model, fn_guide, x), seed=5
        )
        fast, fast_grads = _loss_and_grads(
            model, lambda: elbo_surrogate(Pair(fn_model, fn_guide), (x,)), seed=5
        )
    assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-5), (float(fast), float(ref))
    for p, (a, b) in zip(model.state_dict(), zip(fast_grads, ref_grads)):
        assert torch.equal(a, b), f"gradient of {p} differs by {float((a - b).abs().max())}"


def test_fit_objective_is_trace_elbo_on_the_same_batch_and_seed() -> None:
    # identical rows: the batch is the same whatever order fit's shuffling puts them in
    row = torch.bernoulli(torch.full((1, 12), 0.3), generator=torch.Generator().manual_seed(2))
    x = row.repeat(8, 1)
    model = VAE(12, 2, (6,))
    initial = copy.deepcopy(model)
    history = pyrogen.fit(model, x, epochs=1, batch_size=8, seed=11, progress=False)
    seed_everything(11)
    with pyro.validation_enabled(False):
        ref = Trace_ELBO(max_plate_nesting=1).loss(initial.model, initial.guide, x)
    got = float(history["train_elbo"].iloc[0])
    assert got == pytest.approx(-ref / 8, rel=1e-6), (got, -ref / 8)


def test_fit_falls_back_to_trace_elbo_for_a_score_function_site() -> None:
    class Discrete(pyrogen.GenerativeModel):
        def __init__(self) -> None:
            super().__init__()
            self.logit = torch.nn.Parameter(torch.zeros(3))

        def model(self, x: torch.Tensor) -> None:
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))
                pyro.sample("x", dist.Normal(z.unsqueeze(-1).expand(-1, 3), 1.0).to_event(1), obs=x)

        def guide(self, x: torch.Tensor) -> None:
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Bernoulli(logits=(x * self.logit).sum(-1)))

    m, x = Discrete(), torch.randn(4, 3)
    with pyro.validation_enabled(False):
        assert elbo_surrogate(Pair(m.model, m.guide), (x,)) is None
        loss, value = objective_loss(m, (x,), "elbo", 1, 1, Trace_ELBO(max_plate_nesting=1))
    loss.backward()
    # only Trace_ELBO's score-function term carries a gradient to the guide's logits
    assert torch.isfinite(value) and float(m.logit.grad.abs().sum()) > 0


@pytest.mark.parametrize("pair", range(3), ids=["vae", "ppca", "two-level"])
def test_log_weights_equal_the_traced_computation(pair: int) -> None:
    model, x = _pairs()[pair]
    seed_everything(4)
    with pyro.validation_enabled(False), torch.no_grad(), pyro.plate("particles", 5, dim=-2):
        guide_tr = poutine.trace(model.guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x)

    def total(tr: poutine.Trace) -> torch.Tensor:  # raw log-densities, [particles, N]
        sites = [s for s in tr.nodes.values() if s["type"] == "sample" and s["name"] != "data"]
        return sum(s["fn"].log_prob(s["value"]).expand(5, x.shape[0]) for s in sites)

    ref = total(model_tr) - total(guide_tr)
    seed_everything(4)
    lw = log_weights(model.model, model.guide, x, num_particles=5, max_plate_nesting=1)
    assert torch.equal(lw, ref)


def test_log_weights_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _pairs()[0]
    num = 12
    pool = torch.randn(num, x.shape[0], 3, generator=torch.Generator().manual_seed(9))
    offset = [0]

    def from_pool(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # the guide's noise eps, [chunk, N, d], taken in order from one fixed pool
        take = pool[offset[0] : offset[0] + shape[0]]
        assert take.shape == shape, (take.shape, shape)
        offset[0] += shape[0]
        return take.to(dtype=dtype, device=device)

    layout = pyrogen.trace.probe(as_pair(model), (x,))  # the probe's own draws come first
    monkeypatch.setattr(torch_normal, "_standard_normal", from_pool)
    results = {}
    for chunk in (1, 5, 12):
        offset[0] = 0
        results[chunk] = log_weights(
            model.model, model.guide, x, num_particles=num, chunk_size=chunk, layout=layout
        )
        assert offset[0] == num
    for chunk in (1, 5):
        err = float((results[chunk] - results[12]).abs().max())
        assert torch.allclose(results[chunk], results[12], rtol=1e-6, atol=1e-5), (chunk, err)


@pytest.mark.parametrize("pair", range(2), ids=["vae", "ppca"])
def test_one_particle_mean_is_minus_trace_elbo_loss_per_point(pair: int) -> None:
    model, x = _pairs()[pair]
    seed_everything(6)
    lw = log_weights(model.model, model.guide, x, num_particles=1, max_plate_nesting=1)
    seed_everything(6)
    with pyro.validation_enabled(False):
        loss = Trace_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    assert float(lw.mean()) == pytest.approx(-loss / x.shape[0], rel=1e-5, abs=1e-5)


def test_svi_speed_benchmark_runs_and_its_loops_agree(tmp_path: Path) -> None:
    import svi_speed

    out = tmp_path / "svi.csv"
    tiny = "--steps 2 --repeats 1 --batch-sizes 4 --objectives elbo,iwae --k 2 --hidden 8"
    table = svi_speed.main(
        [*tiny.split(), "--latent", "2", "--data", "synthetic", "--out", str(out)]
    )
    read = pd.read_csv(out)
    assert len(read) == len(table) == 6
    assert set(read["method"]) == {"hand", "pyrogen", "pyro"}
    assert (read["ms_per_step"] > 0).all() and (read["ratio_to_hand"] > 0).all()
    for objective, group in read.groupby("objective"):
        loss = group.set_index("method")["loss_per_point"]
        # the same arithmetic from the same weights, batches and seed: the same first-epoch loss
        assert loss["pyrogen"] == pytest.approx(loss["hand"], rel=1e-3), (objective, loss)
        assert loss["pyro"] == pytest.approx(loss["hand"], rel=1e-3), (objective, loss)


def test_eval_speed_benchmark_runs_and_its_passes_agree(tmp_path: Path) -> None:
    import eval_speed

    out = tmp_path / "eval.csv"
    tiny = "--ks 3,7 --points 5 --repeats 1 --hidden 8 --latent 2 --memory-points 0"
    table = eval_speed.main([*tiny.split(), "--data", "synthetic", "--out", str(out)])
    read = pd.read_csv(out)
    assert len(read) == len(table) == 4
    assert set(read["method"]) == {"hand", "pyrogen"}
    assert (read["ms"] > 0).all()
    for k, group in read.groupby("k"):
        bound = group.set_index("method")["iwae_mean"]
        # the same guide draws in both passes: the same IWAE_k
        assert bound["pyrogen"] == pytest.approx(bound["hand"], rel=1e-5), (k, bound)
