"""Each pair's parameters are its own: pyro.param values in a scope per model, every tensor handed
to the optimizer once, and a run rebuilt with the constructor's arguments by name."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrogen


class Noise(pyrogen.GenerativeModel):
    """x ~ N(W z, sigma^2) with sigma a pyro.param named 'sigma' (the same name in every model)."""

    def __init__(self, data_dim: int, start: float = 1.0) -> None:
        super().__init__()
        self.start = start
        self.dec = nn.Linear(1, data_dim)
        self.enc = nn.Linear(data_dim, 1)

    def model(self, x: torch.Tensor) -> None:
        sigma = pyro.param("sigma", torch.tensor(self.start), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.enc(x), 0.5).to_event(1))


def noisy(n: int = 200, scale: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, generator=g) @ torch.ones(1, 3) + scale * torch.randn(
        n, 3, generator=g
    )


def sigma_of(model: object) -> float:
    return float(pyrogen.param_scope(model).value("sigma").detach())


def test_two_models_with_one_param_name_keep_their_own_values(tmp_path):
    x = noisy()
    a, b = Noise(3), Noise(3, start=0.5)
    pyrogen.fit(a, x, epochs=8, batch_size=50, lr=0.05, out=tmp_path / "a", progress=False)
    trained_a = sigma_of(a)
    assert trained_a > 2.0, trained_a  # moved from 1 toward the noise scale 4

    seen = {}

    class FirstValue(pyrogen.train.hooks.Callback):
        def on_train_begin(self, state, config):
            seen["start"] = float(pyro.param("sigma").detach())  # inside b's scope while b trains

    first = FirstValue()
    pyrogen.fit(b, x[:50], epochs=1, batch_size=50, lr=1e-9, progress=False, callbacks=[first])
    assert seen["start"] == pytest.approx(0.5)  # b's own start, not a's trained value
    assert sigma_of(a) == trained_a  # training b left a alone
    assert "sigma" not in pyro.get_param_store().keys()  # nothing leaked to the global store

    # loading a's run into a fresh model changes neither b's numbers nor its value
    pyro.set_rng_seed(3)
    before = pyrogen.log_weights(b, x[:20], num_particles=4)
    loaded = pyrogen.load_run(tmp_path / "a")
    pyro.set_rng_seed(3)
    after = pyrogen.log_weights(b, x[:20], num_particles=4)
    assert torch.equal(before, after)
    assert sigma_of(loaded.model) == pytest.approx(trained_a, rel=1e-6)
    assert sigma_of(b) == pytest.approx(0.5, rel=1e-6)
    # and the loaded model's weights use its own sigma, not b's
    sigma = sigma_of(loaded.model)
    pyro.set_rng_seed(4)
    lw = pyrogen.log_weights(loaded.model, x[:20], num_particles=1)
    pyro.set_rng_seed(4)
    with torch.no_grad():
        z = dist.Normal(loaded.model.enc(x[:20]), 0.5).sample()
        ref = (
            dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            + dist.Normal(loaded.model.dec(z), sigma).log_prob(x[:20]).sum(-1)
            - dist.Normal(loaded.model.enc(x[:20]), 0.5).log_prob(z).sum(-1)
        )
    assert torch.allclose(lw[0], ref, atol=1e-5)


def test_a_plain_function_pair_trains_in_its_own_scope_and_evaluates_with_it():
    x = noisy(100)

    def model(x):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc + z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    data = x + 3.0
    pyrogen.fit(model, guide, data, epochs=30, batch_size=100, lr=0.2, progress=False)
    loc = pyrogen.param_scope(model, guide).value("loc").detach()
    assert torch.allclose(loc, data.mean(0), atol=0.6), loc  # the loc was trained
    assert "loc" not in pyro.get_param_store().keys()
    # evaluation reads the trained loc: the ELBO is far above that of loc = 0
    trained = pyrogen.evaluate(model, guide, data, ks=(1,), seed=0).summary["estimate"].iloc[0]
    with pyrogen.param_scope(model).active():
        pyro.get_param_store()["loc"] = torch.zeros(3)
    untrained = pyrogen.evaluate(model, guide, data, ks=(1,), seed=0).summary["estimate"].iloc[0]
    assert trained > untrained + 5.0, (trained, untrained)  # 3 dims x 3^2 / 2 = 13.5 nats


class Registered(pyrogen.GenerativeModel):
    """Pyro's idiom: the model and guide register their modules with pyro.module."""

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.decoder = nn.Linear(2, data_dim)
        self.encoder = nn.Linear(data_dim, 2)

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), 1.0).to_event(1))


def test_a_parameter_registered_by_the_module_and_pyro_module_is_stepped_once():
    x = torch.bernoulli(torch.full((64, 5), 0.3), generator=torch.Generator().manual_seed(1))
    m = Registered(5)
    seen = {}

    class Params(pyrogen.train.hooks.Callback):
        def on_train_begin(self, state, config):
            seen["params"] = [p for g in state.optimizer.param_groups for p in g["params"]]

    before = [p.detach().clone() for p in m.parameters()]
    lr = 0.01
    pyrogen.fit(m, x, epochs=1, batch_size=64, lr=lr, progress=False, callbacks=[Params()])
    params = seen["params"]
    assert len({id(p) for p in params}) == len(params)  # no tensor twice
    assert {id(p) for p in params} == {id(p) for p in m.parameters()}
    # one Adam step moves each entry by at most lr; a tensor stepped twice moves up to 2 lr
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(m.parameters(), before))
    assert lr * 0.5 < moved <= lr * 1.001, moved


class Topics(pyrogen.GenerativeModel):
    """A constructor whose first argument is not the data dimension."""

    def __init__(self, num_topics: int, vocab: int = 6) -> None:
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab)
        self.enc = nn.Linear(vocab, num_topics)
        self.num_topics = num_topics

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("documents", x.shape[0]):
            t = pyro.sample("t", dist.Normal(x.new_zeros(self.num_topics), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.beta(t), 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("documents", x.shape[0]):
            pyro.sample("t", dist.Normal(self.enc(x), 1.0).to_event(1))


def test_load_run_rebuilds_with_the_constructors_own_arguments(tmp_path):
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    m = Topics(3)
    pyrogen.fit(m, x, epochs=1, batch_size=20, out=tmp_path / "run", progress=False)
    loaded = pyrogen.load_run(tmp_path / "run").model
    assert loaded.num_topics == 3  # not the data dimension, 6
    for (name, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
