r"""Evaluation speed and memory: ``pyrogen.log_weights`` against one hand-written vectorized pass.

Both compute, for N points and K guide draws each, the log importance weights of the MLP VAE
(``models/vae.py``, 784-400-20 by default)

.. math::
    w_{kn} = \log p_\theta(x_n \mid z_{kn}) + \log r(z_{kn}) - \log q_\phi(z_{kn} \mid x_n),
    \qquad z_{kn} = \mu_\phi(x_n) + \sigma_\phi(x_n) \odot \epsilon_{kn},

and IWAE_K = log (1/K) sum_k exp(w_kn) (Burda et al., 2015). The hand-written pass calls the
encoder once, draws all K x N noise vectors at once, calls the decoder once on [K, N, d] and takes
the Bernoulli log-likelihood from ``binary_cross_entropy_with_logits`` and the Gaussian
log-densities from ``Normal.log_prob``, under ``torch.no_grad()``. ``pyrogen`` is
``log_weights(vae.model, vae.guide, x, num_particles=K, max_plate_nesting=1)`` with its default
chunking. Runs
alternate; the table gives median milliseconds and the median over repeats of pyrogen's time over
the hand-written pass of the same repeat. With one chunk both passes use the same draws, so their
IWAE_K agree.

Peak memory: ``pyrogen.evaluate`` with ks up to ``--memory-k`` runs in a fresh subprocess on the
first ``--memory-points`` test images (all 10,000 test images are loaded), which reports its peak
resident set size (VmHWM) after each batch. evaluate reduces each batch's weights chunk by chunk,
so when the peak stays flat from batch to batch, the peak for the whole test set is this peak plus
the per-point table (a few MB). ``--memory-sweep 1000,100000,1000000`` measures that peak for each
K in its own subprocess (eval_memory_k.csv): flat in K, since only the largest weights that
k-hat needs are kept.

Usage::

    PYTHONPATH=. python benchmarks/eval_speed.py --ks 100,1000,5000 --points 32 --repeats 5
    PYTHONPATH=. python benchmarks/eval_speed.py --memory-sweep 1000,100000,1000000

References:
    | Importance Weighted Autoencoders (Burda et al., 2015) | https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import argparse
import copy
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
from torch.distributions import Normal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

from vae import VAE  # noqa: E402

import pyrogen  # noqa: E402
from pyrogen import bounds  # noqa: E402

__all__ = ["hand_log_weights", "main", "peak_memory"]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "eval_speed.csv"


@torch.no_grad()
def hand_log_weights(vae: VAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    """log p(x, z) - log q(z | x) for K = ``num_particles`` draws per row of x, one pass: [K, N]."""
    loc, scale = vae.encoder(x)
    z = loc + scale * torch.randn((num_particles, *loc.shape), dtype=loc.dtype)
    logits = vae.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )
    log_pz = Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(-1)
    log_qz = Normal(loc, scale).log_prob(z).sum(-1)
    return log_px + log_pz - log_qz


def _pyrogen_log_weights(vae: VAE, x: torch.Tensor, num_particles: int) -> torch.Tensor:
    # the plate depth given, as evaluate gives it (found once per evaluation, not per batch)
    return pyrogen.log_weights(
        vae.model, vae.guide, x, num_particles=num_particles, max_plate_nesting=1
    )


PASSES = {"hand": hand_log_weights, "pyrogen": _pyrogen_log_weights}


def _load(name: str, split: str, n: int, seed: int) -> torch.Tensor:
    if name == "synthetic":
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(torch.rand(n, 784, generator=g) * 0.6, generator=g)
    return pyrogen.load_dataset(name, split, binarize="static", download=False).x[:n]


def _child(ns: argparse.Namespace) -> None:
    """The memory subprocess: evaluate the first points of the test set, print peak RSS."""
    torch.set_num_threads(ns.threads)
    x = _load(ns.data, "test", 10**9, ns.seed)
    torch.manual_seed(ns.seed)
    vae = VAE(x.shape[1], ns.latent, (ns.hidden,))
    before = _peak_mib()
    # the peak after each batch's pool is reduced: flat after the first batches when memory is
    # per batch, which is what lets a subset stand for the whole test set
    by_batch: list[float] = []
    reduce_pool = bounds.streaming.PoolReducer.table

    def recording(self: bounds.streaming.PoolReducer) -> pd.DataFrame:
        table = reduce_pool(self)
        by_batch.append(_peak_mib())
        return table

    bounds.streaming.PoolReducer.table = recording
    tick = time.perf_counter()
    ks = sorted(k for k in {1, 10, 100, 1000, ns.memory_k} if k <= ns.memory_k)
    ev = pyrogen.evaluate(vae.model, vae.guide, x[: ns.memory_points], ks=ks, seed=ns.seed)
    print(
        json.dumps(
            {
                "points": int(len(ev.points)),
                "batches": len(by_batch),
                "test_rows_loaded": int(x.shape[0]),
                "seconds": time.perf_counter() - tick,
                "rss_before_mib": before,
                "peak_rss_mib": _peak_mib(),
                "peak_by_batch_mib": " ".join(f"{m:.0f}" for m in by_batch),
                "log_px": float(ev.summary["estimate"].iloc[-1]),
            }
        )
    )


def _peak_mib() -> float:
    """This process's peak resident set size in MiB.

    VmHWM, the high-water mark of the process's own memory map: ``ru_maxrss`` would carry over the
    parent's peak through fork and exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_memory(ns: argparse.Namespace) -> dict:
    """Runs the evaluate memory measurement in a fresh interpreter and returns its report."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--data",
        ns.data,
        "--threads",
        str(ns.threads),
        "--hidden",
        str(ns.hidden),
        "--latent",
        str(ns.latent),
        "--seed",
        str(ns.seed),
        "--memory-points",
        str(ns.memory_points),
        "--memory-k",
        str(ns.memory_k),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_sweep(ns: argparse.Namespace) -> pd.DataFrame:
    """Peak memory of evaluate for each K of ``--memory-sweep``: flat in K when it streams."""
    rows = []
    for k in [int(v) for v in ns.memory_sweep.split(",") if v.strip()]:
        ns.memory_k = k
        mem = peak_memory(ns)
        rows.append({"k": k, "data": ns.data, "threads": ns.threads, **mem})
        print(f"K={k}: peak RSS {mem['peak_rss_mib']:.0f} MiB ({mem['seconds']:.1f} s)", flush=True)
    table = pd.DataFrame(rows)
    out = Path(ns.out).with_name("eval_memory_k.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def main(args: list[str] | None = None) -> pd.DataFrame:
    """Times the two passes for each K, optionally measures evaluate's peak memory, writes a CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="100,1000,5000", help="particles per point")
    parser.add_argument("--points", type=int, default=32, help="data points per timed pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--data", default="fashion-mnist", help="fashion-mnist, mnist or synthetic")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-points",
        type=int,
        default=1000,
        help="test points for the peak-memory run of evaluate (0: skip it)",
    )
    parser.add_argument("--memory-k", type=int, default=5000)
    parser.add_argument(
        "--memory-sweep",
        default="",
        help="comma-separated K: peak memory of evaluate on --memory-points points for each K "
        "(fresh subprocess each), written to eval_memory_k.csv beside --out; no timing",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(args)
    if ns.child:
        _child(ns)
        return pd.DataFrame()
    if ns.memory_sweep:
        return memory_sweep(ns)
    torch.set_num_threads(ns.threads)
    ks = [int(k) for k in ns.ks.split(",") if k.strip()]
    x = _load(ns.data, "test", ns.points, ns.seed)
    torch.manual_seed(ns.seed)
    initial = VAE(x.shape[1], ns.latent, (ns.hidden,))

    rows = []
    for k in ks:
        ms: dict[str, list[float]] = {m: [] for m in PASSES}
        bound: dict[str, float] = {}
        for fn in PASSES.values():  # warm-up
            fn(copy.deepcopy(initial), x[:2], 2)
        for r in range(ns.repeats):
            for method in list(PASSES)[r % 2 :] + list(PASSES)[: r % 2]:
                vae = copy.deepcopy(initial)
                torch.manual_seed(ns.seed + k)
                tick = time.perf_counter()
                lw = PASSES[method](vae, x, k)
                ms[method].append((time.perf_counter() - tick) * 1e3)
                bound[method] = float((torch.logsumexp(lw.double(), 0) - math.log(k)).mean())
        for method in PASSES:
            rows.append(
                {
                    "k": k,
                    "points": x.shape[0],
                    "method": method,
                    "ms": statistics.median(ms[method]),
                    "us_per_particle_point": statistics.median(ms[method]) * 1e3 / (k * x.shape[0]),
                    "ratio_to_hand": statistics.median(
                        a / b for a, b in zip(ms[method], ms["hand"])
                    ),
                    "iwae_mean": bound[method],
                    "repeats": ns.repeats,
                    "threads": ns.threads,
                    "data": ns.data,
                }
            )
        print(
            f"K={k}: "
            + ", ".join(
                f"{r['method']} {r['ms']:.1f} ms ({r['ratio_to_hand']:.3f}x)" for r in rows[-2:]
            ),
            flush=True,
        )
    table = pd.DataFrame(rows)
    if ns.memory_points > 0:
        mem = peak_memory(ns)
        print(
            f"evaluate K={ns.memory_k} on {mem['points']} test points: peak RSS "
            f"{mem['peak_rss_mib']:.0f} MiB ({mem['seconds']:.0f} s)",
            flush=True,
        )
        for key, value in mem.items():
            table[f"memory_{key}"] = value
        table["memory_k"] = ns.memory_k
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    print(f"wrote {os.path.relpath(out)}")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
