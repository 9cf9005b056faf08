"""Data-parallel training and sharded evaluation agree with one process (gloo, 2 CPU processes).

The two-process checks start two ranks once per module with ``torch.multiprocessing.spawn``
(the environment variables torchrun would set, a free localhost port, gloo) and compare what they
computed with the same computation done here in one process.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyro
import pytest
import torch
import torch.multiprocessing as mp
from deterministic import MapFactor

import pyrogen
from pyrogen import distributed
from pyrogen.bounds import evaluate
from pyrogen.runs import read_config
from pyrogen.train import load_checkpoint, objective_loss

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2
TRAIN = {"n": 33, "batch_size": 8, "epochs": 3, "lr": 0.05}  # last batch: 1 row, rank 1 gets none
EVAL = {"n": 23, "ks": (1, 5), "num_particles": 10, "batch_size": 4, "seed": 3}


def train_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x = torch.randn(TRAIN["n"] + 11, 2, generator=g, dtype=torch.float64) @ w.T + 0.3 * torch.randn(
        TRAIN["n"] + 11, 6, generator=g, dtype=torch.float64
    )
    return x[: TRAIN["n"]], x[TRAIN["n"] :]


def map_model() -> MapFactor:
    torch.manual_seed(0)
    return MapFactor().double()


def eval_model():
    from vae import VAE

    torch.manual_seed(0)
    return VAE(12, latent_dim=2, hidden_dims=(16,))


def eval_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.bernoulli(torch.full((EVAL["n"], 12), 0.3), generator=g)


def full_batch_gradient(model: MapFactor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient one process takes on the whole batch x."""
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)
    model.zero_grad(set_to_none=True)
    loss, _ = objective_loss(model, (x,), "elbo", 1, 1, elbo)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def run_tasks(out_dir: str, device: str = "cpu") -> None:
    """What every rank does; rank 0 pickles the results to out_dir/results.pkl."""
    results: dict = {}
    # 1. one data-parallel backward: the all-reduced gradient is the full-batch gradient
    model = map_model().to(device)
    x, _ = train_data()
    x = x.to(device)
    elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)
    step = distributed.data_parallel(
        model, lambda m, a, b: objective_loss(m, a, "elbo", 1, 1, elbo, b), (x[:4],)
    )
    loss, value = step((distributed.shard(x[:11]),), 1.0)
    loss.backward()
    results["grad"] = {n: p.grad.cpu().clone() for n, p in model.named_parameters()}
    del step
    # 2. fit: the whole trajectory, the history and the checkpoint
    model = map_model()
    x, val_x = train_data()
    history = pyrogen.fit(
        model,
        x,
        val_x,
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batch_size"],
        lr=TRAIN["lr"],
        seed=5,
        progress=False,
        out=Path(out_dir) / "run",
        device=device,
    )
    results["history"] = history
    results["state"] = {k: v.cpu() for k, v in model.state_dict().items()}
    # 3. sharded evaluation
    vae = eval_model().to(device)
    ev = evaluate(
        vae.model,
        vae.guide,
        eval_data().to(device),
        ks=EVAL["ks"],
        num_particles=EVAL["num_particles"],
        batch_size=EVAL["batch_size"],
        seed=EVAL["seed"],
    )
    results["points"] = ev.points
    results["summary"] = ev.summary
    results["written_by"] = sorted(p.name for p in (Path(out_dir) / "run").iterdir())
    if distributed.is_main():
        with open(Path(out_dir) / "results.pkl", "wb") as f:
            pickle.dump(results, f)


def _worker(rank: int, world: int, port: int, out_dir: str, device: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "models"))
    assert distributed.init_from_env()
    finished = False
    try:
        run_tasks(out_dir, device)
        finished = True
    finally:
        distributed.destroy(wait=finished)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(tmp: Path, device: str = "cpu") -> dict:
    mp.spawn(_worker, args=(WORLD, free_port(), str(tmp), device), nprocs=WORLD, join=True)
    with open(tmp / "results.pkl", "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    return spawn(tmp_path_factory.mktemp("ddp"))


# --- one process: the helpers are the identity, and evaluation seeds each batch ---------------


def test_helpers_are_the_identity_in_one_process():
    idx = torch.arange(7)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard(idx) is idx
    assert distributed.sum_over_ranks({"objective": 2.5, "count": 3}, ("objective",)) == {
        "objective": 2.5,
        "count": 3,
    }
    assert distributed.max_over_ranks(15) == 15
    assert not distributed.all_ranks(torch.tensor(False))
    assert distributed.gather_in_order([(4, "b"), (0, "a")]) == ["a", "b"]
    assert distributed.rng_states() == {}


def test_strip_option_removes_nproc_in_both_spellings():
    argv = ["train", "vae", "--nproc", "2", "--epochs", "1", "--nproc=3", "--data", "digits"]
    assert distributed.strip_option(argv, "--nproc") == [
        "train",
        "vae",
        "--epochs",
        "1",
        "--data",
        "digits",
    ]


def test_seeded_evaluation_draws_depend_on_the_batch_not_on_what_came_before():
    vae = eval_model()
    x = eval_data()
    kw = dict(
        ks=EVAL["ks"],
        num_particles=EVAL["num_particles"],
        batch_size=EVAL["batch_size"],
        seed=EVAL["seed"],
    )
    full = evaluate(vae.model, vae.guide, x, **kw).points
    torch.manual_seed(123)  # another global state: the seeded draws do not see it
    head = evaluate(vae.model, vae.guide, x[:8], **kw).points
    pd.testing.assert_frame_equal(head, full.iloc[:8], check_exact=True)
    other = evaluate(vae.model, vae.guide, x, **{**kw, "seed": 4}).points
    assert not full["elbo"].equals(other["elbo"]), "the seed must change the draws"


# --- two processes -------------------------------------------------------------------------


def test_all_reduced_gradient_is_the_full_batch_gradient(two_ranks):
    """Trace_ELBO sums over points and DDP averages over ranks: the W-times loss makes them agree.

    Without the factor W the gradient would be half of it; Adam would hide that (it is invariant
    to the gradient's scale), so the gradient itself is compared.
    """
    x, _ = train_data()
    want = full_batch_gradient(map_model(), x[:11])
    for name, g in want.items():
        torch.testing.assert_close(
            two_ranks["grad"][name],
            g,
            rtol=1e-10,
            atol=1e-12,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def test_two_processes_follow_the_single_process_trajectory(two_ranks, tmp_path):
    model = map_model()
    x, val_x = train_data()
    history = pyrogen.fit(
        model,
        x,
        val_x,
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batch_size"],
        lr=TRAIN["lr"],
        seed=5,
        progress=False,
    )
    for name, p in model.state_dict().items():
        torch.testing.assert_close(
            two_ranks["state"][name],
            p,
            rtol=1e-9,
            atol=1e-10,
            msg=lambda m, name=name: f"{name}: {m}",
        )
    cols = ["epoch", "train_elbo", "train_objective", "val_elbo", "kl_weight", "lr", "skipped"]
    pd.testing.assert_frame_equal(two_ranks["history"][cols], history[cols], rtol=1e-10)
    # the parameters moved: the comparison is not between two copies of the initial weights
    start = map_model().state_dict()
    assert any((start[k] - v).abs().max() > 0.05 for k, v in model.state_dict().items())
    assert two_ranks["written_by"] == [
        ".lock",
        "checkpoint.pt",
        "config.json",
        "data.pt",
        "history.csv",
        "model_source",
    ]


def test_sharded_evaluation_equals_single_process_evaluation(two_ranks):
    vae = eval_model()
    ev = evaluate(
        vae.model,
        vae.guide,
        eval_data(),
        ks=EVAL["ks"],
        num_particles=EVAL["num_particles"],
        batch_size=EVAL["batch_size"],
        seed=EVAL["seed"],
    )
    assert len(two_ranks["points"]) == EVAL["n"]
    pd.testing.assert_frame_equal(two_ranks["points"], ev.points, rtol=1e-6, atol=1e-6)
    pd.testing.assert_frame_equal(two_ranks["summary"], ev.summary, rtol=1e-6, atol=1e-6)


# --- the command line through torchrun -----------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pyrogen", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_cli_nproc_trains_resumes_and_evaluates_like_one_process(tmp_path):
    run = tmp_path / "run"
    common = [
        "vae",
        "--data",
        "digits",
        "--latent-dim",
        "2",
        "--hidden-dims",
        "16",
        "--quiet",
        "--out",
        str(run),
    ]
    r = _cli("train", *common, "--epochs", "1", "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run directory:") == 1, r.stdout  # rank 0 alone prints
    cfg = read_config(run)
    assert cfg["world_size"] == 2
    r = _cli(
        "train",
        "--resume",
        "--out",
        str(run),
        "--epochs",
        "2",
        "--quiet",
        "--nproc",
        "2",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert history["train_elbo"].notna().all() and (history["train_elbo"] < 0).all()
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["torch_rng_ranks"].shape[0] == 2

    ev = ["evaluate", str(run), "--ks", "1,10", "--limit", "60", "--quiet", "--seed", "7"]
    r = _cli(*ev, "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sharded = pd.read_csv(run / "points.csv")
    r = _cli(*ev, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    single = pd.read_csv(run / "points.csv")
    assert len(single) == 60
    pd.testing.assert_frame_equal(sharded, single, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_cli_nproc_reports_a_worker_error_in_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    r = _cli(
        "train",
        "vae",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--nproc",
        "2",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert "already exists" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


# --- GPU ----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_fit_and_evaluate_on_the_gpu(tmp_path):
    model = map_model()
    x, val_x = train_data()
    pyrogen.fit(
        model,
        x,
        val_x,
        epochs=2,
        batch_size=8,
        lr=0.05,
        seed=5,
        progress=False,
        out=tmp_path / "run",
        device="cuda",
    )
    assert next(model.parameters()).is_cuda
    cpu = map_model()
    pyrogen.fit(cpu, x, val_x, epochs=2, batch_size=8, lr=0.05, seed=5, progress=False)
    for name, p in cpu.state_dict().items():  # a deterministic guide: same steps on both
        torch.testing.assert_close(model.state_dict()[name].cpu(), p, rtol=1e-6, atol=1e-8)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert all(not v.is_cuda for v in state["model"].values())  # checkpoints load on the CPU
    vae = eval_model().cuda()
    ev = evaluate(
        vae.model,
        vae.guide,
        eval_data().cuda(),
        ks=EVAL["ks"],
        num_particles=EVAL["num_particles"],
        seed=EVAL["seed"],
    )
    assert (
        ev.points["elbo"].notna().all() and (ev.points["elbo"] <= ev.points["log_px"] + 1e-4).all()
    )


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")
def test_two_gpus_follow_the_single_process_trajectory(tmp_path):
    got = spawn(tmp_path, device="cuda")
    model = map_model()
    x, val_x = train_data()
    pyrogen.fit(
        model,
        x,
        val_x,
        epochs=TRAIN["epochs"],
        batch_size=TRAIN["batch_size"],
        lr=TRAIN["lr"],
        seed=5,
        progress=False,
    )
    for name, p in model.state_dict().items():
        torch.testing.assert_close(got["state"][name], p, rtol=1e-6, atol=1e-8)
    assert math.isfinite(got["summary"]["estimate"].iloc[-1])


@pytest.mark.slow
def test_ddp_speed_benchmark_smoke(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ddp_speed

    out = tmp_path / "ddp_speed.csv"
    table = ddp_speed.main(
        [
            "--configs",
            "1x1,2x1",
            "--rows",
            "64",
            "--epochs",
            "1",
            "--repeats",
            "1",
            "--batch-size",
            "32",
            "--out",
            str(out),
        ]
    )
    saved = pd.read_csv(out)
    assert list(saved.columns) == ddp_speed.COLUMNS
    assert list(saved["config"]) == ["1x1", "2x1"]
    assert (saved["examples_per_s"] > 0).all() and (saved["train_elbo"] < 0).all()
    assert table["speedup_vs_1x1"].iloc[0] == pytest.approx(1.0)
