r"""Data-parallel training speed: examples per second of ``pyrogen.fit`` in 1 and 2 processes.

Every configuration trains the same MLP VAE (``models/vae.py``, 784-400-20, Bernoulli likelihood,
Trace_ELBO, Adam) on the same binary rows with the same *global* batch size, so each optimizer step
is the same computation; with P processes each rank computes the ELBO of B/P points and DDP
all-reduces the 784*400 + 400*40 + 20*400 + 400*784 + biases ~ 0.65 M gradient entries over gloo.
A configuration ``PxT`` runs P processes with T torch threads each (``torch.set_num_threads``,
intra-op): ``2x1`` against ``1x1`` is what a second process buys, ``2x1`` against ``1x2`` compares
two processes with one process given the same number of threads.

Each run is a fresh set of processes started by ``torch.multiprocessing.spawn`` with the
environment torchrun sets (gloo, a free localhost port); it calls ``pyrogen.fit`` for
1 + ``--epochs`` epochs of ``--rows`` rows and reports rows / seconds of each epoch after the first
(the first builds DDP's buckets and warms the allocator), from ``fit``'s own per-epoch step time on
rank 0, which with DDP includes the wait for the all-reduce. Configurations alternate, and the order
rotates every repeat, so a change in machine load hits all of them; the table gives the median.

Usage::

    PYTHONPATH=. python benchmarks/ddp_speed.py --rows 8192 --epochs 3 --repeats 3

References:
    | PyTorch Distributed: Experiences on Accelerating Data Parallel Training (Li et al., 2020)
    | https://arxiv.org/abs/2006.15704
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

__all__ = ["COLUMNS", "load_rows", "main", "parse_configs", "run_config"]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ddp_speed.csv"
COLUMNS = [
    "config",
    "processes",
    "threads_per_process",
    "batch_size",
    "rows_per_epoch",
    "epochs",
    "repeats",
    "examples_per_s",
    "min_examples_per_s",
    "max_examples_per_s",
    "speedup_vs_1x1",
    "ms_per_step",
    "train_elbo",
    "data",
    "cpu_count",
    "load_before",
]


def load_rows(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` binary rows [n, 784]: Fashion-MNIST train (static binarization) or Bernoulli noise."""
    if name == "synthetic":
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(torch.rand(n, 784, generator=g) * 0.6, generator=g)
    import pyrogen

    x = pyrogen.load_dataset(name, "train", binarize="static", download=False).x
    reps = -(-n // x.shape[0])
    return (x.repeat(reps, 1) if reps > 1 else x)[:n].contiguous()


def parse_configs(text: str) -> list[tuple[int, int]]:
    """ "1x1,1x2,2x1" -> [(1, 1), (1, 2), (2, 1)]: (processes, threads per process)."""
    out = []
    for part in text.split(","):
        p, _, t = part.strip().partition("x")
        out.append((int(p), int(t or 1)))
    return out


def _worker(rank: int, world: int, threads: int, port: int, opts: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from vae import VAE

    import pyrogen
    from pyrogen import distributed

    distributed.init_from_env()
    try:
        x = load_rows(opts["data"], opts["rows"])
        torch.manual_seed(0)
        model = VAE(784, latent_dim=20, hidden_dims=(400,))
        history = pyrogen.fit(
            model,
            x,
            epochs=1 + opts["epochs"],
            batch_size=opts["batch_size"],
            lr=1e-3,
            seed=0,
            progress=False,
        )
        if distributed.is_main():
            with open(out, "wb") as f:
                pickle.dump(history, f)
    finally:
        distributed.destroy()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(processes: int, threads: int, opts: dict) -> pd.DataFrame:
    """Runs one configuration in fresh processes; returns fit's history (rank 0)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "history.pkl")
        mp.spawn(_worker, args=(processes, threads, _free_port(), opts, out), nprocs=processes)
        with open(out, "rb") as f:
            return pickle.load(f)


def main(args: list[str] | None = None) -> pd.DataFrame:
    """Times each configuration, prints the table and writes it as CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        default="1x1,1x2,2x1",
        help="PxT: P processes with T threads each, comma-separated",
    )
    parser.add_argument("--rows", type=int, default=8192, help="training rows per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per config")
    parser.add_argument("--data", default="synthetic", help="synthetic or fashion-mnist")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    ns = parser.parse_args(args)
    configs = parse_configs(ns.configs)
    opts = {"rows": ns.rows, "epochs": ns.epochs, "batch_size": ns.batch_size, "data": ns.data}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    elbo: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for r in range(ns.repeats):
        for i in range(len(configs)):
            cfg = configs[(i + r) % len(configs)]
            started = time.perf_counter()
            history = run_config(*cfg, opts)
            timed = history.iloc[1:]
            rates[cfg] += [ns.rows / s for s in timed["seconds"]]
            elbo[cfg].append(float(timed["train_elbo"].iloc[-1]))
            print(
                f"repeat {r + 1} {cfg[0]}x{cfg[1]}: "
                f"{statistics.median(ns.rows / s for s in timed['seconds']):.0f} examples/s "
                f"({time.perf_counter() - started:.1f} s with start-up)",
                flush=True,
            )
    base = statistics.median(rates[(1, 1)]) if (1, 1) in rates else float("nan")
    steps = -(-ns.rows // ns.batch_size)
    rows = []
    for (p, t), values in rates.items():
        med = statistics.median(values)
        rows.append(
            {
                "config": f"{p}x{t}",
                "processes": p,
                "threads_per_process": t,
                "batch_size": ns.batch_size,
                "rows_per_epoch": ns.rows,
                "epochs": ns.epochs,
                "repeats": ns.repeats,
                "examples_per_s": med,
                "min_examples_per_s": min(values),
                "max_examples_per_s": max(values),
                "speedup_vs_1x1": med / base,
                "ms_per_step": 1000 * ns.rows / med / steps,
                "train_elbo": statistics.median(elbo[(p, t)]),
                "data": ns.data,
                "cpu_count": os.cpu_count(),
                "load_before": load,
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.4g")
    print(f"wrote {out}")
    return table


if __name__ == "__main__":
    main()
