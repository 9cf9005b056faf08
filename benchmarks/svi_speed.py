r"""Training speed: ``pyrogen.fit`` against a hand-written PyTorch loop and plain Pyro SVI.

All three train the same MLP VAE (``models/vae.py``, 784-400-20 by default) from the same initial
weights on the same statically binarized rows, the same batches in the same order, with
``torch.optim.Adam`` (plain Pyro: ``pyro.optim.Adam``, which wraps it). Per step they compute

.. math::
    \text{elbo:}\quad -\sum_n \big[\log p_\theta(x_n \mid z_n) + \log r(z_n)
    - \log q_\phi(z_n \mid x_n)\big],
    \qquad z_n = \mu_\phi(x_n) + \sigma_\phi(x_n) \odot \epsilon_n,

    \text{iwae:}\quad -\sum_n \Big[\log \tfrac1k \textstyle\sum_{j=1}^k
    \exp\big(\log p_\theta(x_n, z_{jn}) - \log q_\phi(z_{jn} \mid x_n)\big)\Big]

(Kingma & Welling, 2013; Burda et al., 2015): one encoder pass per batch, one decoder pass over the
[k, B, d] draws. ``pyrogen`` is timed as ``pyrogen.fit`` over one epoch of ``steps * batch`` rows
with no validation, so the figure is what a fit user gets, set-up included; ``pyro`` is
``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` (``RenyiELBO(alpha=0)``, Pyro's IWAE bound,
for iwae), the networks registered with ``pyro.module``, validation off as in ``fit``.

Runs alternate (the order rotates every repeat) so that a change in machine load hits all three;
the table gives the median milliseconds per step and the median over repeats of each run's time
over the hand-written run of the same repeat.

Usage::

    PYTHONPATH=. python benchmarks/svi_speed.py --steps 100 --repeats 7 --batch-sizes 16,128,512

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2013) | https://arxiv.org/abs/1312.6114
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from torch.distributions import Normal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from vae import VAE  # noqa: E402

import pyrogen  # noqa: E402

__all__ = ["hand_loss", "load_rows", "main", "run_hand", "run_pyro", "run_pyrogen"]

METHODS = ("hand", "pyrogen", "pyro")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "svi_speed.csv"


def load_rows(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` binary rows [n, 784]: Fashion-MNIST train (static binarization, cycled) or random."""
    if name == "synthetic":
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(torch.rand(n, 784, generator=g) * 0.6, generator=g)
    x = pyrogen.load_dataset(name, "train", binarize="static", download=False).x
    reps = math.ceil(n / x.shape[0])
    return (x.repeat(reps, 1) if reps > 1 else x)[:n].contiguous()


def hand_loss(vae: VAE, xb: torch.Tensor, objective: str, k: int) -> torch.Tensor:
    """The negative ELBO (k = 1) or IWAE_k bound of a batch, summed over its points, by hand."""
    loc, scale = vae.encoder(xb)
    if objective == "elbo":
        z = loc + scale * torch.randn_like(loc)
    else:
        z = loc + scale * torch.randn((k, *loc.shape), dtype=loc.dtype)
    logits = vae.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(
        logits, xb.expand_as(logits), reduction="none"
    ).sum(-1)
    log_pz = Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1)
    log_qz = Normal(loc, scale).log_prob(z).sum(-1)
    lw = log_px + log_pz - log_qz
    if objective == "elbo":
        return -lw.sum()
    return -(torch.logsumexp(lw, 0) - math.log(k)).sum()


def _batches(n: int, batch_size: int, seed: int) -> torch.Tensor:
    # the permutation fit draws for its first epoch
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003))


def run_hand(
    vae: VAE, x: torch.Tensor, batch_size: int, objective: str, k: int, lr: float, seed: int
) -> float:
    """A hand-written training loop over one epoch of ``x``; returns the mean loss per point."""
    pyrogen.train.seed_everything(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr, foreach=True)  # as fit
    perm = _batches(x.shape[0], batch_size, seed)
    total = torch.zeros(())
    for s in range(0, x.shape[0], batch_size):
        xb = x[perm[s : s + batch_size]]
        loss = hand_loss(vae, xb, objective, k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total) / x.shape[0]


def run_pyrogen(
    vae: VAE, x: torch.Tensor, batch_size: int, objective: str, k: int, lr: float, seed: int
) -> float:
    """``pyrogen.fit`` for one epoch of ``x``; returns the mean loss per point."""
    history = pyrogen.fit(
        vae,
        x,
        epochs=1,
        batch_size=batch_size,
        lr=lr,
        objective=objective,
        num_particles=k,
        seed=seed,
        progress=False,
    )
    return -float(history["train_objective"].iloc[-1])


def run_pyro(
    vae: VAE, x: torch.Tensor, batch_size: int, objective: str, k: int, lr: float, seed: int
) -> float:
    """Plain Pyro SVI for one epoch of ``x``; returns the mean loss per point."""
    pyrogen.train.seed_everything(seed)
    pyro.clear_param_store()

    def model(xb: torch.Tensor) -> None:
        pyro.module("decoder", vae.decoder)
        vae.model(xb)

    def guide(xb: torch.Tensor) -> None:
        pyro.module("encoder", vae.encoder)
        vae.guide(xb)

    if objective == "elbo":
        elbo = Trace_ELBO(max_plate_nesting=1)
    else:
        elbo = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    perm = _batches(x.shape[0], batch_size, seed)
    total = 0.0
    with pyro.validation_enabled(False):
        for s in range(0, x.shape[0], batch_size):
            total += svi.step(x[perm[s : s + batch_size]])
    pyro.clear_param_store()
    return total / x.shape[0]


RUNNERS: dict[str, Callable[..., float]] = {
    "hand": run_hand,
    "pyrogen": run_pyrogen,
    "pyro": run_pyro,
}


def _time(
    method: str,
    initial: VAE,
    x: torch.Tensor,
    batch_size: int,
    objective: str,
    k: int,
    lr: float,
    seed: int,
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, mean loss) of one run from ``initial``."""
    vae = copy.deepcopy(initial)
    tick, cpu = time.perf_counter(), time.process_time()
    loss = RUNNERS[method](vae, x, batch_size, objective, k, lr, seed)
    return time.perf_counter() - tick, time.process_time() - cpu, loss


def _paired_ratio(times: list[float], hand: list[float]) -> float:
    """Median over repeats of a run's time over the hand-written run of the same repeat."""
    return statistics.median(t / h for t, h in zip(times, hand))


def main(args: list[str] | None = None) -> pd.DataFrame:
    """Times the three training loops and writes one CSV row per (objective, batch, method)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="alternating runs per method")
    parser.add_argument("--batch-sizes", default="16,128,512")
    parser.add_argument("--objectives", default="elbo,iwae", help="elbo and/or iwae")
    parser.add_argument("--k", type=int, default=5, help="particles of the IWAE objective")
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist or synthetic")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    ns = parser.parse_args(args)
    torch.set_num_threads(ns.threads)
    batch_sizes = [int(b) for b in ns.batch_sizes.split(",") if b.strip()]
    objectives = [o.strip() for o in ns.objectives.split(",") if o.strip()]
    for o in objectives:
        if o not in ("elbo", "iwae"):
            parser.error(f"unknown objective {o!r}: choose elbo and/or iwae")
    x_all = load_rows(ns.data, ns.steps * max(batch_sizes), ns.seed)
    torch.manual_seed(ns.seed)
    initial = VAE(x_all.shape[1], ns.latent, (ns.hidden,))

    rows = []
    for objective in objectives:
        k = 1 if objective == "elbo" else ns.k
        for batch_size in batch_sizes:
            x = x_all[: ns.steps * batch_size]
            for method in METHODS:  # warm-up: allocator, lazy imports, Adam state code paths
                _time(
                    method, initial, x[: 3 * batch_size], batch_size, objective, k, ns.lr, ns.seed
                )
            wall: dict[str, list[float]] = {m: [] for m in METHODS}
            cpu: dict[str, list[float]] = {m: [] for m in METHODS}
            losses: dict[str, float] = {}
            for r in range(ns.repeats):
                order = METHODS[r % 3 :] + METHODS[: r % 3]
                for method in order:
                    w, c, losses[method] = _time(
                        method, initial, x, batch_size, objective, k, ns.lr, ns.seed
                    )
                    wall[method].append(w * 1e3 / ns.steps)
                    cpu[method].append(c * 1e3 / ns.steps)
            for method in METHODS:
                rows.append(
                    {
                        "objective": objective,
                        "k": k,
                        "batch_size": batch_size,
                        "method": method,
                        "ms_per_step": statistics.median(wall[method]),
                        "ratio_to_hand": _paired_ratio(wall[method], wall["hand"]),
                        "cpu_ms_per_step": statistics.median(cpu[method]),
                        "cpu_ratio_to_hand": _paired_ratio(cpu[method], cpu["hand"]),
                        "loss_per_point": losses[method],
                        "steps": ns.steps,
                        "repeats": ns.repeats,
                        "threads": ns.threads,
                        "data": ns.data,
                    }
                )
            line = ", ".join(
                f"{r['method']} {r['ms_per_step']:.2f} ms ({r['ratio_to_hand']:.3f}x, "
                f"cpu {r['cpu_ratio_to_hand']:.3f}x)"
                for r in rows[-3:]
            )
            print(f"{objective} k={k} batch={batch_size}: {line}", flush=True)
    table = pd.DataFrame(rows)
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    print(f"wrote {os.path.relpath(out)}")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
