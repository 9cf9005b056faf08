"""Training options, checked against their definitions on a model whose ELBO is deterministic.

The model is a linear-Gaussian factor model with a point-mass (Delta) guide, z = A x + c: the
single-sample ELBO -[log p(x, z) - log q(z | x)] then has no Monte Carlo noise, so a step's value,
its gradient and the validation ELBO can be computed here by hand and compared exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from deterministic import MapFactor

import pyrogen
from pyrogen.bounds import log_weights

N, D, K = 20, 6, 2


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, K, generator=g)
    x = torch.randn(N + 10, K, generator=g) @ w.T + 0.5 * torch.randn(N + 10, D, generator=g)
    return x[:N], x[N:]


def fresh() -> MapFactor:
    torch.manual_seed(1)
    return MapFactor(D, K)


class Steps:
    """A callback keeping every step's metrics."""

    def __init__(self) -> None:
        self.metrics: list[dict] = []

    def on_step_end(self, state, metrics) -> None:
        self.metrics.append(dict(metrics))


def test_the_first_step_under_kl_warmup_is_the_elbo_with_latent_sites_scaled_by_beta():
    x, val = data()
    model = fresh()
    with torch.no_grad():
        log_lik, log_prior = model.parts(x)
    model = fresh()
    steps = Steps()
    pyrogen.fit(model, x, val, epochs=1, batch_size=N, kl_warmup=3, lr=1e-9, callbacks=[steps])
    beta = 1 / 3
    expected = float((log_lik + beta * log_prior).sum())  # the Delta guide's log q is 0
    assert steps.metrics[0]["kl_weight"] == pytest.approx(beta)
    assert steps.metrics[0]["surrogate"] == pytest.approx(-expected, rel=1e-5)
    # and not the unscaled ELBO: the two differ by (1 - beta) log p(z), far above the tolerance
    assert abs(float((1 - beta) * log_prior.sum())) > 1e-3 * abs(expected)


@pytest.mark.parametrize(
    "schedule, factor",
    [
        ("constant", lambda s, total: 1.0),
        ("cosine", lambda s, total: 0.5 * (1 + math.cos(math.pi * s / total))),
        ("step", lambda s, total: 0.1 ** ((s >= total // 2) + (s >= 3 * total // 4))),
    ],
)
def test_the_lr_column_follows_the_schedule(schedule, factor):
    x, val = data()
    epochs, per_epoch, lr = 4, 2, 0.01
    history = pyrogen.fit(
        fresh(), x, val, epochs=epochs, batch_size=N // per_epoch, lr=lr, lr_schedule=schedule
    )
    total = epochs * per_epoch
    # each row: the rate after the epoch's last step, i.e. at step 2e of 8
    expected = [lr * factor(per_epoch * e, total) for e in range(1, epochs + 1)]
    assert history["lr"].tolist() == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_clip_norm_bounds_the_update_of_plain_sgd(clip):
    """With SGD at lr 1, the first update is minus the (clipped) gradient: its norm is the
    gradient's norm, or exactly clip_norm when the gradient is longer."""
    x, val = data()
    model = fresh()
    before = [p.detach().clone() for p in model.parameters()]
    steps = Steps()
    pyrogen.fit(
        model,
        x,
        val,
        epochs=1,
        batch_size=N,
        lr=1.0,
        optimizer="sgd",
        clip_norm=clip,
        callbacks=[steps],
    )
    with torch.no_grad():
        moved = math.sqrt(
            sum(float((p - b).pow(2).sum()) for p, b in zip(model.parameters(), before))
        )
    grad_norm = steps.metrics[0]["grad_norm"]
    assert grad_norm > 1.0  # the gradient is long enough for the clip to act
    assert moved == pytest.approx(grad_norm if clip is None else clip, rel=1e-4)


def test_the_validation_elbo_is_the_mean_one_particle_log_weight():
    x, val = data()
    model = fresh()
    history = pyrogen.fit(model, x, val, epochs=2, batch_size=N // 2, lr=0.01)
    with torch.no_grad():
        lw = log_weights(model.model, model.guide, val, num_particles=1)
        log_lik, log_prior = model.parts(val)
    assert history["val_elbo"].iloc[-1] == pytest.approx(float(lw.mean()), rel=1e-6)
    assert float(lw.mean()) == pytest.approx(float((log_lik + log_prior).mean()), rel=1e-5)
