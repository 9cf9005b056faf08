"""Beyond importance sampling for a loaded run: the tables ``pyrogen evaluate --ais/--gaps/--bdmc``
stores.

:func:`beyond_is` takes a model and its evaluation data and returns named DataFrames, one per
file of the run directory: ``ais`` (per point and T), ``ais_summary`` (one row per T),
``gaps`` and ``gaps_summary``, ``bdmc`` and ``bdmc_summary``. It writes nothing; the caller
decides where the tables live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from pyrogen.bounds.ais import ais as run_ais_estimate
from pyrogen.bounds.bdmc import bdmc as run_bdmc
from pyrogen.bounds.gaps import inference_gaps
from pyrogen.errors import ConfigError

__all__ = ["beyond_is", "parse_steps"]


def parse_steps(text: str) -> list[int]:
    """Parses ``--steps 50,500`` into sorted distinct positive integers."""
    try:
        steps = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ConfigError(f"--steps must be comma-separated integers, got '{text}'") from None
    if not steps or steps[0] < 1:
        raise ConfigError(f"--steps needs positive integers, got '{text}'")
    return steps


def beyond_is(
    model: Any,
    x: torch.Tensor,
    *args: Any,
    ais_steps: Sequence[int] = (),
    chains: int = 16,
    leapfrog_steps: int = 10,
    gaps: bool = False,
    gap_steps: int = 300,
    eval_particles: int = 1000,
    bdmc_points: int = 0,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """AIS at each T of ``ais_steps``, the gap decomposition and BDMC, as tables to store.

    Arguments:
        model: a :class:`~pyrogen.GenerativeModel` (its ``model`` and ``guide``).
        x, args: the evaluation data (and labels, for a conditional model).
        ais_steps: the numbers of intermediate distributions T to run AIS with (empty: none);
            the largest one is the AIS estimate the gaps use.
        chains, leapfrog_steps: AIS chains per point and leapfrog steps per transition.
        gaps: compute the decomposition (with the largest-T AIS as a candidate best estimate).
        gap_steps, eval_particles: Adam steps fitting q*; draws per point for the ELBOs and IS.
        bdmc_points: simulate this many points and sandwich them (0: none), at the largest T.
        seed: seeds every part.

    Returns:
        A dict of DataFrames by file stem.
    """
    tables: dict[str, pd.DataFrame] = {}
    best = None
    rows, frames = [], []
    for t in sorted(set(int(s) for s in ais_steps)):
        r = run_ais_estimate(
            model.model,
            model.guide,
            x,
            *args,
            num_chains=chains,
            num_steps=t,
            leapfrog_steps=leapfrog_steps,
            seed=seed,
        )
        rows.append(r.summary())
        f = r.to_frame()
        f.insert(0, "steps", t)
        f.insert(0, "point", range(len(f)))
        frames.append(f)
        best = r
    if rows:
        tables["ais"] = pd.concat(frames, ignore_index=True)
        tables["ais_summary"] = pd.DataFrame(rows)
    if gaps:
        g = inference_gaps(
            model.model,
            model.guide,
            x,
            *args,
            steps=gap_steps,
            eval_particles=eval_particles,
            ais=best,
            seed=seed,
        )
        tables["gaps"] = g.points.reset_index()
        tables["gaps_summary"] = g.summary
    if bdmc_points > 0:
        if args:
            raise ValueError("BDMC simulates x alone: not for a conditional model")
        steps = max(ais_steps) if ais_steps else 500
        b = run_bdmc(
            model.model,
            model.guide,
            bdmc_points,
            data_dim=int(x[0].numel()),
            num_chains=chains,
            num_steps=steps,
            leapfrog_steps=leapfrog_steps,
            seed=seed,
        )
        tables["bdmc"] = b.to_frame().rename_axis("point").reset_index()
        tables["bdmc_summary"] = pd.DataFrame([b.summary()])
    return tables
