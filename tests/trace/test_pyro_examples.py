"""Four model shapes written the way Pyro's own examples write them, trained with pyrogen.fit,
evaluated with pyrogen.evaluate and run through pyrogen.ais, with no wrappers.

- the VAE of Pyro's ``vae.py``: a plain ``nn.Module`` with ``Encoder``/``Decoder`` submodules
  registered with ``pyro.module``;
- ProdLDA (``prodlda.py``): word-count rows, ``pyro.plate("documents")``, a ``BatchNorm1d``
  decoder that cannot broadcast over a leading particle dim, and a Multinomial whose
  ``total_count`` comes from the batch it is given;
- the deep Markov model (``dmm.py``): padded sequences with a mask passed beside them,
  ``pyro.plate("z_minibatch")``, ``pyro.markov`` and a GRU guide over the reversed sequences;
- the M2 semi-supervised VAE (``ss_vae_M2.py``): a discrete label y that is observed, sampled by
  the guide, enumerated in the guide or enumerated in the model.

The pair is passed as the module itself, as a ``(model, guide)`` tuple, or as two callables
(like ``SVI(model, guide, ...)``); the data plate is found by its size, whatever its name. Sizes
are tiny: each test takes seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn

import pyrogen

KS = (1, 10, 100)

# -- data ------------------------------------------------------------------------------------------


def _digits(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n sklearn digits (8 x 8), binarized at half intensity, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data[:n] > 7, dtype=torch.float32)
    y = torch.tensor(d.target[:n], dtype=torch.long)
    return x, y


def _documents(n: int = 200, vocab: int = 30, topics: int = 3) -> torch.Tensor:
    """Word counts [n, vocab] of documents mixing 3 topics (each on its own 10 words), 20 to 80
    words long. The first 8 documents are short (20 to 39 words); the longest (80 words) are
    rows 12 and 150, so neither a probe of the first 8 rows nor any batch that starts at row 0
    sees the largest total first."""
    g = torch.Generator().manual_seed(1)
    topic_words = torch.full((topics, vocab), 0.1 / (vocab - 10))
    for k in range(topics):
        topic_words[k, 10 * k : 10 * k + 10] = 0.09
    mix = torch.softmax(2.0 * torch.randn(n, topics, generator=g), -1)
    probs = mix @ topic_words
    lengths = torch.randint(20, 80, (n,), generator=g)
    lengths[:8] = torch.randint(20, 40, (8,), generator=g)
    lengths[12] = lengths[150] = 80
    docs = torch.stack(
        [
            torch.bincount(
                torch.multinomial(probs[i], int(lengths[i]), replacement=True, generator=g),
                minlength=vocab,
            )
            for i in range(n)
        ]
    ).float()
    return docs


def _sequences(n: int = 120, steps: int = 6, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary sequences [n, steps, dim] (bits that flip with probability 0.2 per step), 3 to
    ``steps`` long, zero-padded, and their mask [n, steps] (bool). Rows 0, 1, 2 have lengths
    3, 6 and 4."""
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(3, steps + 1, (n,), generator=g)
    lengths[:3] = torch.tensor([3, steps, 4])
    mask = torch.arange(steps) < lengths[:, None]
    state = torch.rand(n, dim, generator=g) < 0.5
    rows = []
    for _ in range(steps):
        state = state ^ (torch.rand(n, dim, generator=g) < 0.2)
        rows.append(state)
    seqs = torch.stack(rows, 1).float() * mask[..., None]
    return seqs, mask


# -- checks ----------------------------------------------------------------------------------------


class _OptimizerSpy:
    """A fit callback that keeps the tensors the optimizer was given."""

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []

    def on_train_begin(self, state, config) -> None:
        self.params = [p for group in state.optimizer.param_groups for p in group["params"]]


def _check_history(history: pd.DataFrame, epochs: int, val: bool = False) -> None:
    assert len(history) == epochs
    assert np.isfinite(history["train_elbo"].to_numpy(dtype=float)).all(), history
    if val:
        assert np.isfinite(history["val_elbo"].to_numpy(dtype=float)).all(), history


def _check_evaluation(ev: pyrogen.Evaluation, n: int, ks: tuple[int, ...] = KS) -> None:
    """One row per point and per k, every value finite, ELBO <= IWAE_k up to Monte Carlo error."""
    assert len(ev.points) == n
    s = ev.summary.set_index("k")
    assert list(s.index) == list(ks)
    assert s.loc[1, "bound"] == "ELBO"
    for col in ("estimate", "stderr"):
        assert np.isfinite(s[col].to_numpy(dtype=float)).all(), ev.summary
    for k in ks[1:]:
        assert s.loc[k, "bound"] == f"IWAE_{k}"
        slack = 4 * math.hypot(s.loc[1, "stderr"], s.loc[k, "stderr"]) + 1e-6
        assert s.loc[1, "estimate"] <= s.loc[k, "estimate"] + slack, ev.summary
    assert np.isfinite(ev.points["elbo"].to_numpy(dtype=float)).all()
    assert np.isfinite(ev.points["log_px"].to_numpy(dtype=float)).all()


def _check_ais(r: pyrogen.AISResult, n: int) -> None:
    assert r.log_px.shape == (n,) and r.stderr.shape == (n,)
    assert torch.isfinite(r.log_px).all(), r.log_px
    assert torch.isfinite(r.stderr).all() and (r.stderr >= 0).all(), r.stderr


def _cat(*tensors: torch.Tensor) -> torch.Tensor:
    """torch.cat on the last dim after broadcasting the others (particle and enumeration dims),
    as the ConcatModule of Pyro's ss_vae example does with allow_broadcast."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in tensors], -1)


# -- 1. Pyro's VAE example -------------------------------------------------------------------------


class Encoder(nn.Module):
    def __init__(self, z_dim: int, hidden_dim: int, x_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()
        self.x_dim = x_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(-1, self.x_dim)
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    def __init__(self, z_dim: int, hidden_dim: int, x_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hidden = self.softplus(self.fc1(z))
        return torch.sigmoid(self.fc21(hidden))


class VAE(nn.Module):
    def __init__(self, x_dim: int = 64, z_dim: int = 4, hidden_dim: int = 32) -> None:
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim, x_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        self.z_dim = z_dim
        self.x_dim = x_dim

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, self.x_dim),
            )

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def test_vae_example_steps_each_parameter_once() -> None:
    """pyro.module registers the module's own tensors in the param store: the optimizer must get
    each once (not once as a module parameter and again as a pyro.param site). One Adam step moves
    every element by at most lr; a tensor handed twice would move by up to 2 lr."""
    x, _ = _digits(200)
    vae = VAE()
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    spy = _OptimizerSpy()
    lr = 1e-2
    history = pyrogen.fit(vae, x, epochs=1, batch_size=200, lr=lr, seed=0, callbacks=[spy])
    _check_history(history, 1)

    ids = [id(p) for p in spy.params]
    assert len(ids) == len(set(ids)), "a tensor was handed to the optimizer twice"
    assert set(ids) == {id(p) for p in vae.parameters()}
    assert sum(p.numel() for p in spy.params) == sum(p.numel() for p in vae.parameters())
    for name, p in vae.named_parameters():
        moved = (p.detach() - before[name]).abs().max().item()
        assert moved <= lr * (1 + 1e-3), f"{name} moved {moved:.3g} > lr = {lr} in one step"
        assert moved > 0.5 * lr, f"{name} was not trained (moved {moved:.3g})"


def test_vae_example_fit_evaluate_ais() -> None:
    x, _ = _digits(200)
    vae = VAE()
    history = pyrogen.fit(vae, x[:160], x[160:], epochs=2, batch_size=40, lr=1e-2, seed=0)
    _check_history(history, 2, val=True)

    xt = x[160:180]
    ev = pyrogen.evaluate(vae, xt, ks=KS, seed=0)
    _check_evaluation(ev, 20)
    # the same pair as two callables (like SVI(model, guide, ...)) and as a tuple: same numbers
    ev_fns = pyrogen.evaluate(vae.model, vae.guide, xt, ks=KS, seed=0)
    ev_tuple = pyrogen.evaluate((vae.model, vae.guide), xt, ks=KS, seed=0)
    pd.testing.assert_frame_equal(ev.summary, ev_fns.summary)
    pd.testing.assert_frame_equal(ev.summary, ev_tuple.summary)

    r = pyrogen.ais(vae, x[:5], num_chains=4, num_steps=20, leapfrog_steps=2)
    _check_ais(r, 5)
    r_tuple = pyrogen.ais(
        (vae.model, vae.guide), x[:5], num_chains=4, num_steps=20, leapfrog_steps=2
    )
    _check_ais(r_tuple, 5)


# -- 2. ProdLDA ------------------------------------------------------------------------------------


class LDAEncoder(nn.Module):
    def __init__(self, vocab_size: int, num_topics: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fcmu = nn.Linear(hidden, num_topics)
        self.fclv = nn.Linear(hidden, num_topics)
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.softplus(self.fc1(inputs))
        h = F.softplus(self.fc2(h))
        h = self.drop(h)
        logtheta_loc = self.bnmu(self.fcmu(h))
        logtheta_logvar = self.bnlv(self.fclv(h))
        return logtheta_loc, (0.5 * logtheta_logvar).exp()


class LDADecoder(nn.Module):
    def __init__(self, vocab_size: int, num_topics: int, dropout: float) -> None:
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = self.drop(inputs)
        # as in the example: BatchNorm1d reads dim 1 as the channels and softmax runs over dim 1,
        # so a [particles, batch, topics] input is not welcome here
        return F.softmax(self.bn(self.beta(inputs)), dim=1)


class ProdLDA(nn.Module):
    def __init__(self, vocab_size: int, num_topics: int, hidden: int = 16, dropout: float = 0.2):
        super().__init__()
        self.vocab_size = vocab_size
        self.num_topics = num_topics
        self.encoder = LDAEncoder(vocab_size, num_topics, hidden, dropout)
        self.decoder = LDADecoder(vocab_size, num_topics, dropout)

    def model(self, docs: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", docs.shape[0]):
            logtheta_loc = docs.new_zeros((docs.shape[0], self.num_topics))
            logtheta_scale = docs.new_ones((docs.shape[0], self.num_topics))
            logtheta = pyro.sample(
                "logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1)
            )
            theta = F.softmax(logtheta, -1)
            count_param = self.decoder(theta)
            # the longest document of the batch given: each batch has its own total_count
            total_count = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total_count, count_param), obs=docs)

    def guide(self, docs: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", docs.shape[0]):
            logtheta_loc, logtheta_scale = self.encoder(docs)
            pyro.sample("logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))


def test_prodlda_batchnorm_and_batch_total_count() -> None:
    docs = _documents()
    lengths = docs.sum(-1)
    assert len(set(lengths.tolist())) > 20  # rows have different totals
    assert lengths[:8].max() < lengths.max()  # the longest document is not in the first 8 rows
    lda = ProdLDA(vocab_size=docs.shape[1], num_topics=3)
    history = pyrogen.fit(lda, docs, epochs=2, batch_size=32, lr=1e-2, seed=0)
    _check_history(history, 2)

    batch = docs[:20]  # its longest document is row 12
    assert int(batch.sum(-1).argmax()) == 12
    ev = pyrogen.evaluate(lda, batch, ks=KS, seed=0)
    _check_evaluation(ev, 20)

    r = pyrogen.ais(lda, docs[10:14], num_chains=4, num_steps=20, leapfrog_steps=2)
    _check_ais(r, 4)


# -- 3. Deep Markov model --------------------------------------------------------------------------


def _reverse_sequences(seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence [N, T, D] reversed within its own length (the padding stays at the end);
    its own inverse. A plain padded tensor, no PackedSequence."""
    t = torch.arange(seqs.shape[1], device=seqs.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return seqs.gather(1, idx[..., None].expand_as(seqs))


class Emitter(nn.Module):
    """p(x_t | z_t): Bernoulli probabilities."""

    def __init__(self, input_dim: int, z_dim: int, emission_dim: int) -> None:
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, input_dim)

    def forward(self, z_t: torch.Tensor) -> torch.Tensor:
        h1 = torch.relu(self.lin_z_to_hidden(z_t))
        h2 = torch.relu(self.lin_hidden_to_hidden(h1))
        return torch.sigmoid(self.lin_hidden_to_input(h2))


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): a gated mix of a linear and a nonlinear proposal."""

    def __init__(self, z_dim: int, transition_dim: int) -> None:
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.lin_z_to_loc.weight.copy_(torch.eye(z_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_t_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(
            self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z_t_1)))
        )
        proposed_mean = self.lin_proposed_mean_hidden_to_z(
            torch.relu(self.lin_proposed_mean_z_to_hidden(z_t_1))
        )
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = F.softplus(self.lin_sig(torch.relu(proposed_mean)))
        return loc, scale


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t); z_{t-1} may carry a leading particle dim (it broadcasts)."""

    def __init__(self, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(
        self, z_t_1: torch.Tensor, h_rnn: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        loc = self.lin_hidden_to_loc(h_combined)
        scale = F.softplus(self.lin_hidden_to_scale(h_combined))
        return loc, scale


class DMM(nn.Module):
    def __init__(
        self,
        input_dim: int = 5,
        z_dim: int = 3,
        emission_dim: int = 8,
        transition_dim: int = 8,
        rnn_dim: int = 8,
    ) -> None:
        super().__init__()
        self.emitter = Emitter(input_dim, z_dim, emission_dim)
        self.trans = GatedTransition(z_dim, transition_dim)
        self.combiner = Combiner(z_dim, rnn_dim)
        self.rnn = nn.GRU(input_size=input_dim, hidden_size=rnn_dim, batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, seqs: torch.Tensor, mask: torch.Tensor) -> None:
        T_max = seqs.size(1)
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(seqs.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(seqs)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.trans(z_prev)
                z_t = pyro.sample(
                    f"z_{t}",
                    dist.Normal(z_loc, z_scale).mask(mask[:, t - 1 : t]).to_event(1),
                )
                emission_probs_t = self.emitter(z_t)
                pyro.sample(
                    f"obs_x_{t}",
                    dist.Bernoulli(emission_probs_t).mask(mask[:, t - 1 : t]).to_event(1),
                    obs=seqs[:, t - 1, :],
                )
                z_prev = z_t

    def guide(self, seqs: torch.Tensor, mask: torch.Tensor) -> None:
        T_max = seqs.size(1)
        pyro.module("dmm", self)
        lengths = mask.sum(-1)
        h_0 = self.h_0.expand(1, seqs.size(0), self.rnn.hidden_size).contiguous()
        rnn_output, _ = self.rnn(_reverse_sequences(seqs, lengths), h_0)
        rnn_output = _reverse_sequences(rnn_output, lengths)
        z_prev = self.z_q_0.expand(seqs.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(seqs)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                z_t = pyro.sample(
                    f"z_{t}",
                    dist.Normal(z_loc, z_scale).mask(mask[:, t - 1 : t]).to_event(1),
                )
                z_prev = z_t


def test_dmm_sequences_with_mask() -> None:
    seqs, mask = _sequences()
    dmm = DMM(input_dim=seqs.shape[-1])
    # the mask [N, T] has the data's rows as its first dim: batched alongside the sequences
    history = pyrogen.fit(dmm, seqs, epochs=2, batch_size=32, lr=1e-2, seed=0, model_args=(mask,))
    _check_history(history, 2)

    ev = pyrogen.evaluate(dmm, seqs[:3], mask[:3], ks=KS, seed=0)
    _check_evaluation(ev, 3)
    # the padding is masked out: filling it with ones changes no point's bounds (if the mask
    # went with the wrong rows, or were dropped, the short rows would change)
    filled = torch.where(mask[:3, :, None], seqs[:3], torch.ones_like(seqs[:3]))
    assert not torch.equal(filled, seqs[:3])
    ev_filled = pyrogen.evaluate(dmm, filled, mask[:3], ks=KS, seed=0)
    pd.testing.assert_frame_equal(ev.points, ev_filled.points)

    r = pyrogen.ais(dmm, seqs[:3], mask[:3], num_chains=4, num_steps=20, leapfrog_steps=2)
    _check_ais(r, 3)


# -- 4. M2 semi-supervised VAE (Kingma et al., 2014) ----------------------------------------------


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers[:-1])


class SSVAE(nn.Module):
    """M2 with y sampled by the guide (q(y | x)) where it is not observed."""

    def __init__(self, x_dim: int = 64, y_dim: int = 10, z_dim: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.x_dim, self.y_dim, self.z_dim = x_dim, y_dim, z_dim
        self.encoder_y = _mlp([x_dim, hidden, y_dim])
        self.encoder_z = _mlp([x_dim + y_dim, hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim + y_dim, hidden, x_dim])

    def model(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        n = xs.shape[0]
        with pyro.plate("data", n):
            alpha_prior = xs.new_ones(n, self.y_dim) / self.y_dim
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior), obs=ys)
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(n, self.z_dim), 1.0).to_event(1))
            probs = torch.sigmoid(self.decoder(_cat(zs, ys)))
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                alpha = torch.softmax(self.encoder_y(xs), -1)
                ys = pyro.sample("y", dist.OneHotCategorical(alpha))
            loc, log_scale = self.encoder_z(_cat(xs, ys)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


class SSVAEModelEnum(SSVAE):
    """M2 with y enumerated in the model (summed out exactly); the guide has no y site."""

    def __init__(self, x_dim: int = 64, y_dim: int = 10, z_dim: int = 4, hidden: int = 32) -> None:
        super().__init__(x_dim, y_dim, z_dim, hidden)
        self.encoder_z = _mlp([x_dim, hidden, 2 * z_dim])

    def model(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        n = xs.shape[0]
        with pyro.plate("data", n):
            alpha_prior = xs.new_ones(n, self.y_dim) / self.y_dim
            ys = pyro.sample(
                "y",
                dist.OneHotCategorical(alpha_prior),
                obs=ys,
                infer={"enumerate": "parallel"},
            )
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(n, self.z_dim), 1.0).to_event(1))
            probs = torch.sigmoid(self.decoder(_cat(zs, ys)))
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            loc, log_scale = self.encoder_z(xs).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _trained(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    changed = [n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "training changed no parameter"


def test_m2_guide_samples_y_score_function() -> None:
    x, y = _digits(200)
    m2 = SSVAE()
    before = {n: p.detach().clone() for n, p in m2.named_parameters()}
    history = pyrogen.fit(
        m2, x, epochs=2, batch_size=50, lr=1e-2, seed=0, objective="score-function"
    )
    _check_history(history, 2)
    _trained(before, m2)
    assert not torch.equal(m2.encoder_y[0].weight, before["encoder_y.0.weight"])

    # unlabelled: y drawn by the guide; labelled: y observed, given as the second positional arg
    ev = pyrogen.evaluate(m2, x[:20], ks=KS, seed=0)
    _check_evaluation(ev, 20)
    ys = F.one_hot(y[:20], 10).float()
    ev_labelled = pyrogen.evaluate(m2, x[:20], ys, ks=KS, seed=0)
    _check_evaluation(ev_labelled, 20)

    r = pyrogen.ais(m2, x[:4], ys[:4], num_chains=4, num_steps=20, leapfrog_steps=2)
    _check_ais(r, 4)


def test_m2_guide_enumerated_y() -> None:
    """The same pair with the guide's y enumerated (config_enumerate): objective "enum"
    (TraceEnum_ELBO); the decorated guide is passed as a (model, guide) tuple."""
    x, _ = _digits(200)
    m2 = SSVAE()
    before = {n: p.detach().clone() for n, p in m2.named_parameters()}
    history = pyrogen.fit(
        (m2.model, config_enumerate(m2.guide)),
        x,
        epochs=2,
        batch_size=50,
        lr=1e-2,
        seed=0,
        objective="enum",
    )
    assert len(history) == 2
    assert np.isfinite(history["train_objective"].to_numpy(dtype=float)).all(), history
    _trained(before, m2)
    assert not torch.equal(m2.encoder_y[0].weight, before["encoder_y.0.weight"])

    ev = pyrogen.evaluate(m2, x[:20], ks=KS, seed=0)
    _check_evaluation(ev, 20)


def test_m2_model_enumerated_y_matches_trace_enum_elbo() -> None:
    x, y = _digits(200)
    m2 = SSVAEModelEnum()
    history = pyrogen.fit(m2, x, epochs=2, batch_size=50, lr=1e-2, seed=0, objective="enum")
    assert len(history) == 2
    assert np.isfinite(history["train_objective"].to_numpy(dtype=float)).all(), history

    xe = x[:20]
    n, k = xe.shape[0], 500
    with torch.no_grad():
        lw = pyrogen.log_weights(m2.model, m2.guide, xe, num_particles=k)
    assert lw.shape == (k, n)
    assert torch.isfinite(lw).all()
    # per point, y summed out: E_q[log p(x, z) - log q(z | x)] with p(x, z) = sum_y p(y, z, x).
    # Sampling y from the prior instead (the site left as it is) is off by about -log 10 nats.
    mean = float(lw.double().mean())
    # Monte Carlo error of a mean over k draws per point (the points are the same on both sides)
    se = float((lw.double().var(0).sum() / k).sqrt()) / n
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=k, vectorize_particles=True)
    with torch.no_grad():
        pyro_value = -elbo.loss(m2.model, m2.guide, xe) / n
    assert abs(mean - pyro_value) <= 4 * math.sqrt(2) * se + 1e-6, (mean, pyro_value, se)

    ev = pyrogen.evaluate(m2, xe, ks=KS, seed=0)
    _check_evaluation(ev, 20)
    ev_elbo = ev.summary.set_index("k").loc[1]
    assert abs(ev_elbo["estimate"] - pyro_value) <= 4 * (se + ev_elbo["stderr"]), ev.summary
    ev_labelled = pyrogen.evaluate(m2, xe, F.one_hot(y[:20], 10).float(), ks=KS, seed=0)
    _check_evaluation(ev_labelled, 20)

    r = pyrogen.ais(m2, x[:4], num_chains=4, num_steps=20, leapfrog_steps=2)
    _check_ais(r, 4)


# -- the command line ------------------------------------------------------------------------------

M2_FILE = '''
"""M2 (Kingma et al., 2014) with the label y enumerated in the model, as a pyrogen model file."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyrogen


def _cat(*tensors):
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in tensors], -1)


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Softplus()]
    return nn.Sequential(*layers[:-1])


class M2(pyrogen.GenerativeModel):
    def __init__(self, data_dim, y_dim=10, z_dim=4, hidden=32):
        super().__init__()
        self.data_dim, self.y_dim, self.z_dim = data_dim, y_dim, z_dim
        self.encoder_z = _mlp([data_dim, hidden, 2 * z_dim])
        self.decoder = _mlp([z_dim + y_dim, hidden, data_dim])

    def model(self, xs, ys=None):
        n = xs.shape[0]
        with pyro.plate("data", n):
            alpha_prior = xs.new_ones(n, self.y_dim) / self.y_dim
            ys = pyro.sample(
                "y", dist.OneHotCategorical(alpha_prior), obs=ys, infer={"enumerate": "parallel"}
            )
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(n, self.z_dim), 1.0).to_event(1))
            probs = torch.sigmoid(self.decoder(_cat(zs, ys)))
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            loc, log_scale = self.encoder_z(xs).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
'''


@pytest.mark.slow
def test_m2_command_line_enum(tmp_path: Path) -> None:
    model_file = tmp_path / "m2.py"
    model_file.write_text(textwrap.dedent(M2_FILE))
    run = tmp_path / "RUN"
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyrogen",
            "train",
            str(model_file),
            "--data",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--objective",
            "enum",
            "--out",
            str(run),
            "--quiet",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - started < 120
    config = json.loads((run / "config.json").read_text())
    assert config["objective"] == "enum"
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 1
    assert np.isfinite(history["train_objective"].to_numpy(dtype=float)).all(), history
