"""Beyond importance sampling on a trained Fashion-MNIST VAE: one table for the README.

On the first ``--points`` test images of the run's data (test split, binarized once as
``pyrogen evaluate`` does), with :func:`pyrogen.bounds.extra.beyond_is`: ELBO[q_phi] and IWAE_K
from K draws of the guide, ELBO[q*] and IS with q* as proposal (K draws), AIS at each T of
``--steps``, the approximation and amortization gaps, the share of points with Pareto k-hat > 0.7
for IS with q_phi and with q*, and BDMC's sandwich gap on ``--bdmc`` points simulated from the
model. Each part is timed.

Usage::

    PYTHONPATH=. python benchmarks/ais_fashion_mnist.py RUN --points 500 --K 5000 \\
        --chains 8 --steps 20,100 --leapfrog 4 --gap-steps 100 --bdmc 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyrogen.bounds.extra import beyond_is  # noqa: E402
from pyrogen.data import load_dataset  # noqa: E402
from pyrogen.runs import load_run  # noqa: E402

__all__ = ["main"]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--points", type=int, default=500)
    p.add_argument("--K", type=int, default=5000)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--steps", default="20,100")
    p.add_argument("--leapfrog", type=int, default=4)
    p.add_argument("--gap-steps", type=int, default=100)
    p.add_argument("--bdmc", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ais_fashion_mnist"))
    args = p.parse_args(argv)
    run = load_run(args.run)
    cfg = run.config
    data = load_dataset(
        cfg["data"],
        "test",
        binarize=cfg.get("binarize"),
        val_fraction=cfg.get("val_fraction", 0.1),
        seed=cfg.get("seed", 0),
    )
    x = data.x[: args.points].reshape(args.points, -1)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    tables = beyond_is(
        run.model,
        x,
        ais_steps=[int(s) for s in args.steps.split(",")],
        chains=args.chains,
        leapfrog_steps=args.leapfrog,
        gaps=True,
        gap_steps=args.gap_steps,
        eval_particles=args.K,
        bdmc_points=args.bdmc,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    g = tables["gaps_summary"].iloc[0]
    a = tables["ais_summary"].sort_values("steps").iloc[-1]
    b = tables["bdmc_summary"].iloc[0]
    row = {
        "run": Path(args.run).name,
        "epochs": len(run.history) if getattr(run, "history", None) is not None else None,
        "points": args.points,
        "K": args.K,
        "elbo": g["elbo"],
        "elbo_stderr": g["elbo_stderr"],
        f"iwae_{args.K}": g["iwae"],
        f"iwae_{args.K}_stderr": g["iwae_stderr"],
        "elbo_star": g["elbo_star"],
        "is_star": g["is_star"],
        "ais": a["estimate"],
        "ais_stderr": a["stderr"],
        "ais_chains": int(a["chains"]),
        "ais_steps": int(a["steps"]),
        "ais_leapfrog": int(a["leapfrog_steps"]),
        "ais_acceptance": a["acceptance"],
        "ais_seconds": a["seconds"],
        "best": g["best"],
        "log_px": g["log_px"],
        "approximation_gap": g["approximation_gap"],
        "approximation_gap_data_stderr": g["approximation_gap_data_stderr"],
        "amortization_gap": g["amortization_gap"],
        "amortization_gap_data_stderr": g["amortization_gap_data_stderr"],
        "khat_gt_0.7_q_phi": g["khat_gt_0.7"],
        "khat_gt_0.7_q_star": g["khat_star_gt_0.7"],
        "gaps_seconds": g["seconds"],
        "q_star_steps": args.gap_steps,
        "bdmc_points": int(b["num_points"]),
        "bdmc_lower": b["lower"],
        "bdmc_upper": b["upper"],
        "bdmc_gap": b["gap"],
        "bdmc_gap_stderr": b["gap_stderr"],
        "bdmc_seconds": b["seconds"],
        "total_seconds": time.perf_counter() - started,
    }
    table = pd.DataFrame([row])
    table.to_csv(out.with_suffix(".csv"), index=False)
    print(table.T.to_string(header=False, float_format=lambda v: f"{v:.4f}"))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
