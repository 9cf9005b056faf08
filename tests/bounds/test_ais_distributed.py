"""AIS sharded over two processes (gloo) gives the single-process result point for point."""

import os
import pickle
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pyrogen import distributed
from pyrogen.bounds.ais import ais

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(num_chains=3, num_steps=6, leapfrog_steps=2, batch_size=2, seed=3)


def _problem():
    sys.path.insert(0, str(ROOT / "tests" / "bounds"))
    sys.path.insert(0, str(ROOT / "models"))
    from ground_truth import make_ppca, set_diagonal_guide

    m, x = make_ppca(n=7)
    set_diagonal_guide(m, widen=1.5)
    return m, x


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    assert distributed.init_from_env()
    finished = False
    try:
        m, x = _problem()
        r = ais(m.model, m.guide, x, **SETTINGS)
        if distributed.is_main():
            with open(out, "wb") as f:
                pickle.dump((r.log_weights, r.log_px, r.acceptance), f)
        finished = True
    finally:
        distributed.destroy(wait=finished)


@pytest.mark.slow
def test_sharded_ais_equals_single_process_ais(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ais.pkl"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    with open(out, "rb") as f:
        log_w, log_px, acceptance = pickle.load(f)
    m, x = _problem()
    r = ais(m.model, m.guide, x, **SETTINGS)
    assert log_w.shape == (3, 7)  # every rank returns all points, in order
    assert torch.allclose(log_w, r.log_weights, atol=1e-10)
    assert torch.allclose(log_px, r.log_px) and torch.allclose(acceptance, r.acceptance)
