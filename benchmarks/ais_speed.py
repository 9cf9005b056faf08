r"""AIS speed and memory: ``pyrogen.ais`` against a hand-written vectorized PyTorch HMC loop.

Both anneal the same MLP VAE (``models/vae.py``, 784-400-20 by default, random weights) on the
same binary rows from q(z | x) to the posterior through

.. math:: f_t(z) = q_\phi(z \mid x)^{1 - \beta_t}\, p_\theta(x, z)^{\beta_t}

with the same sigmoid schedule, C chains per point, L leapfrog steps per transition, the same
fixed step size and the same diagonal mass (the guide's scale), vectorized over points x chains.
The hand-written loop runs the encoder once and, per leapfrog step, one decoder pass and one
backward pass of f_t; ``pyrogen.ais`` runs the model through Pyro (the guide's distribution is
kept, the model replayed at each step). Runs alternate and the table gives the median over repeats
of milliseconds per transition and of pyrogen's time over the hand-written time of the same repeat.

Memory: ``pyrogen.ais`` on the same points with more and more chains, each in a fresh process;
the peak resident memory above the process's memory before AIS stays flat because points and
chains are processed in chunks of bounded size.

Usage::

    PYTHONPATH=. python benchmarks/ais_speed.py --points 100 --chains 16 --steps 30 --repeats 5

References:
    | Annealed Importance Sampling (Neal, 2001) | https://arxiv.org/abs/physics/9803008
    | On the Quantitative Analysis of Decoder-Based Generative Models (Wu et al., 2017)
    | https://arxiv.org/abs/1611.04273
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from vae import VAE  # noqa: E402

import pyrogen  # noqa: E402
from pyrogen.bounds.ais import annealing_schedule  # noqa: E402

__all__ = ["hand_ais", "main"]


@torch.no_grad()
def hand_ais(
    vae: VAE, x: torch.Tensor, chains: int, steps: int, leapfrog: int, step_size: float
) -> torch.Tensor:
    """AIS written directly in PyTorch for this VAE: log p^(x) per point [N]."""
    betas = annealing_schedule(steps).tolist()
    loc, scale = vae.encoder(x)
    q = torch.distributions.Normal(loc, scale)
    prior = torch.distributions.Normal(0.0, 1.0)
    z = q.sample((chains,))

    def parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = vae.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        return prior.log_prob(z).sum(-1) + log_lik.sum(-1), q.log_prob(z).sum(-1)

    def state(z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """log p, log q and their gradients (log q's in closed form: one backward pass)."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_p, log_q = parts(z)
            (grad_p,) = torch.autograd.grad(log_p.sum(), z)
        return log_p.detach(), log_q.detach(), grad_p, -(z.detach() - loc) / scale**2

    def log_f(s: tuple, b: float) -> torch.Tensor:
        return (1 - b) * s[1] + b * s[0]

    def grad(s: tuple, b: float) -> torch.Tensor:
        return (1 - b) * s[3] + b * s[2]

    eps = step_size * torch.ones(x.shape[0], 1)
    inv_mass = scale**2
    log_w = torch.zeros(chains, x.shape[0], dtype=torch.float64)
    cur = state(z)
    for i in range(1, len(betas)):
        log_w += (betas[i] - betas[i - 1]) * (cur[0] - cur[1]).double()
        if i == len(betas) - 1:
            break
        b = betas[i]
        p0 = torch.randn_like(z) / scale
        p = p0 + 0.5 * eps * grad(cur, b)
        zn = z
        for step in range(leapfrog):
            zn = zn + eps * inv_mass * p
            new = state(zn)
            p = p + (0.5 if step == leapfrog - 1 else 1.0) * eps * grad(new, b)
        k0 = 0.5 * (p0**2 * inv_mass).sum(-1)
        k1 = 0.5 * (p**2 * inv_mass).sum(-1)
        log_ratio = torch.nan_to_num((log_f(new, b) - k1) - (log_f(cur, b) - k0), nan=-math.inf)
        accept = torch.rand_like(log_ratio).log() < log_ratio
        z = torch.where(accept[..., None], zn, z)
        cur = tuple(
            torch.where(accept[..., None] if t.dim() == 3 else accept, tn, t)
            for t, tn in zip(cur, new)
        )
    return torch.logsumexp(log_w, 0) - math.log(chains)


def _model(args: argparse.Namespace) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    vae = VAE(args.dim, args.latent, (args.hidden,))
    x = torch.bernoulli(torch.full((args.points, args.dim), 0.3))
    return vae, x


def _memory_child(args: argparse.Namespace) -> None:
    vae, x = _model(args)
    pyrogen.ais(vae.model, vae.guide, x[:2], num_chains=2, num_steps=2, leapfrog_steps=1)
    with open("/proc/self/statm") as f:  # resident now (the peak so far may be higher)
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    pyrogen.ais(
        vae.model,
        vae.guide,
        x,
        num_chains=args.memory_child,
        num_steps=3,
        leapfrog_steps=args.leapfrog,
        adapt="none",
    )
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_mib": before / 1024, "peak_mib": after / 1024}))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--steps", type=int, default=30, help="T, intermediate distributions")
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--step-size", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dim", type=int, default=784)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--memory-chains", default="16,64,256", help="chains per point; '' skips")
    p.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ais_speed.csv"))
    args = p.parse_args(argv)
    if args.memory_child:
        _memory_child(args)
        return pd.DataFrame()
    torch.set_num_threads(1)
    vae, x = _model(args)
    transitions = args.steps - 1
    times: dict[str, list[float]] = {"hand": [], "pyrogen": []}
    estimates: dict[str, float] = {}
    for rep in range(args.repeats):
        order = ["hand", "pyrogen"] if rep % 2 == 0 else ["pyrogen", "hand"]
        for method in order:
            torch.manual_seed(rep)
            start = time.perf_counter()
            if method == "hand":
                est = hand_ais(vae, x, args.chains, args.steps, args.leapfrog, args.step_size)
            else:
                est = pyrogen.ais(
                    vae.model,
                    vae.guide,
                    x,
                    num_chains=args.chains,
                    num_steps=args.steps,
                    leapfrog_steps=args.leapfrog,
                    step_size=args.step_size,
                    adapt="none",
                    seed=None,
                ).log_px
            times[method].append(time.perf_counter() - start)
            estimates[method] = float(est.double().mean())
    ratios = [a / b for a, b in zip(times["pyrogen"], times["hand"])]
    rows = []
    for method in ("hand", "pyrogen"):
        rows.append(
            {
                "measure": "speed",
                "method": method,
                "points": args.points,
                "chains": args.chains,
                "steps": args.steps,
                "leapfrog": args.leapfrog,
                "ms_per_transition": 1e3 * statistics.median(times[method]) / transitions,
                "ratio_to_hand": statistics.median(ratios) if method == "pyrogen" else 1.0,
                "log_px_mean": estimates[method],
            }
        )
    for c in [int(v) for v in args.memory_chains.split(",") if v.strip()]:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            str(c),
            "--points",
            str(args.points),
            "--leapfrog",
            str(args.leapfrog),
            "--dim",
            str(args.dim),
            "--hidden",
            str(args.hidden),
            "--latent",
            str(args.latent),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "measure": "memory",
                "method": "pyrogen",
                "points": args.points,
                "chains": c,
                "leapfrog": args.leapfrog,
                "peak_rss_mib": mem["peak_mib"],
                "extra_mib": mem["peak_mib"] - mem["before_mib"],
            }
        )
    table = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
