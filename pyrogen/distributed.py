r"""Data-parallel training and sharded evaluation on ``torch.distributed``.

pyrogen does not schedule processes itself: ``torchrun`` (``torch.distributed.run``) starts them
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_from_env` joins the process group they describe (gloo for CPU tensors, NCCL for CUDA
tensors where a GPU exists). In one process every helper here is the identity, so the library
code calls them unconditionally.

Training is synchronous data-parallel SGD. Each global batch of B points is split across the W
ranks (rank r takes points r, r + W, ...), each rank computes the objective's loss on its share,
and :class:`~torch.nn.parallel.DistributedDataParallel` all-reduces the gradients during
``backward``. Pyro's ``Trace_ELBO`` loss is a *sum* over data points while DDP *averages* the
gradients over ranks, so each rank's loss is multiplied by W:

.. math::
    \frac1W \sum_{r=1}^W \nabla_{\theta,\phi} \Big( W \sum_{n \in B_r} \ell_n \Big)
    = \nabla_{\theta,\phi} \sum_{n \in B} \ell_n,

the gradient one process takes on the whole batch B. With identical starting weights (DDP
broadcasts rank 0's) and identical optimizer steps, W processes follow the single-process
trajectory up to the sampling noise, which each rank draws from its own generator (seed + rank).

References:
    | PyTorch Distributed: Experiences on Accelerating Data Parallel Training (Li et al., 2020)
    | https://arxiv.org/abs/2006.15704
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from pyrogen.errors import ConfigError

__all__ = [
    "all_ranks",
    "barrier",
    "data_parallel",
    "destroy",
    "from_main",
    "gather_in_order",
    "init_from_env",
    "is_main",
    "launch",
    "launched",
    "local_device",
    "max_over_ranks",
    "rank",
    "restore_rng",
    "rng_states",
    "seed_rank",
    "shard",
    "sharded_mean",
    "setup_from_env",
    "strip_option",
    "sum_over_ranks",
    "world_size",
]

T = TypeVar("T")
_OWNED = False  # whether init_from_env created the process group (and destroy may end it)


def world_size() -> int:
    """The number of processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0, the process that writes files and prints."""
    return rank() == 0


def launched() -> bool:
    """True when a launcher such as torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Joins the process group described by torchrun's environment variables.

    The backend is gloo, or ``cpu:gloo,cuda:nccl`` where CUDA and NCCL exist (collectives on CUDA
    tensors then go over NCCL, the rest over gloo); each process uses GPU ``LOCAL_RANK``.

    Returns:
        True when this process is one of several (``WORLD_SIZE`` > 1), else False.
    """
    global _OWNED
    if dist.is_available() and dist.is_initialized():
        return world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available() and dist.is_nccl_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
            backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)
    _OWNED = True
    return True


def destroy(wait: bool = True) -> None:
    """Leaves the process group that :func:`init_from_env` created (others are left alone).

    Args:
        wait: first wait until every rank gets here (the normal end). Pass False on an error
            path, where another rank may be stuck in a collective and never arrive.
    """
    global _OWNED
    if _OWNED and dist.is_initialized():
        if wait:
            # without it, a rank that tore gloo down while another was still connected made that
            # one abort at exit ("terminate called without an active exception"): about one run
            # in four with PyPI's CUDA build of torch 2.13 on Python 3.12, none in 35 with it
            dist.barrier()
        dist.destroy_process_group()
    _OWNED = False


def setup_from_env() -> Callable[[bool], None]:
    """For the command line: joins the group and mutes stdout on every rank but 0.

    Returns:
        The clean-up to call when the command ends, with whether it succeeded: restores stdout,
        leaves the group.
    """
    if not init_from_env():
        return lambda succeeded: None
    saved = sys.stdout
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed by the clean-up

    def cleanup(succeeded: bool) -> None:
        if sys.stdout is not saved:
            sys.stdout.close()
            sys.stdout = saved
        destroy(wait=succeeded)

    return cleanup


def local_device(device: torch.device) -> torch.device:
    """With several processes, "cuda" means this process's GPU (``LOCAL_RANK``); else ``device``."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a picklable value, e.g. a run name made from the time)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Waits for every rank (no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


def shard(items: Sequence[T]) -> Sequence[T]:
    """This rank's share of ``items``: elements rank, rank + W, rank + 2W, ... (all of them in one
    process). Works on tensors (a global batch of indices) and ranges (batch starts)."""
    w = world_size()
    return items if w == 1 else items[rank() :: w]


def seed_rank(seed: int) -> None:
    """Seeds Python, NumPy, torch and Pyro with ``seed + rank``: independent noise per rank."""
    if world_size() > 1:
        import pyro

        pyro.set_rng_seed(seed + rank())  # random, numpy and torch


def _reduce(values: Sequence[float], op: Any) -> list[float]:
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=op)
    return t.tolist()


def sum_over_ranks(sums: dict[str, float], keys: Sequence[str]) -> dict[str, float]:
    """``sums`` with the entries ``keys`` summed over ranks (a copy; the rest unchanged)."""
    out = dict(sums)
    if world_size() > 1:
        for key, v in zip(keys, _reduce([sums[k] for k in keys], dist.ReduceOp.SUM)):
            out[key] = type(sums[key])(v)
    return out


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over ranks: a decision (stop on a signal) every rank takes together."""
    if world_size() == 1:
        return value
    return int(_reduce([value], dist.ReduceOp.MAX)[0])


def all_ranks(flag: bool | torch.Tensor) -> bool:
    """True when ``flag`` holds on every rank (e.g. the loss is finite everywhere)."""
    if world_size() == 1:
        return bool(flag)
    return bool(_reduce([bool(flag)], dist.ReduceOp.MIN)[0])


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Averages the gradients of ``params`` over ranks in place, as DDP does for the module's
    (for parameters outside the module DDP wraps, such as ``pyro.param`` sites)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= world_size()


def sharded_mean(fn: Callable[..., float], x: torch.Tensor, y: torch.Tensor | None) -> float:
    """The mean of a per-row quantity over all rows of x, each rank computing its shard.

    Arguments:
        fn: ``fn(x_shard, y_shard)`` -> the mean over the shard's rows.
        x, y: the full data (and labels or None), the same on every rank.
    """
    if world_size() == 1:
        return fn(x, y)
    xs = shard(x)
    n = xs.shape[0]
    local = fn(xs, shard(y) if y is not None else None) * n if n else 0.0
    total, count = _reduce([local, n], dist.ReduceOp.SUM)
    return total / count


def gather_in_order(pieces: Sequence[tuple[int, T]]) -> list[T]:
    """Gathers (key, item) pairs from every rank; returns all items sorted by key, on every rank."""
    if world_size() == 1:
        return [item for _, item in sorted(pieces, key=lambda p: p[0])]
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, list(pieces))
    merged = [p for part in everyone for p in part]
    return [item for _, item in sorted(merged, key=lambda p: p[0])]


def rng_states() -> dict[str, torch.Tensor]:
    """Checkpoint entries for the torch generator of every rank (empty in one process).

    Collective: every rank calls it; each gets ``{"torch_rng_ranks": [W, S] uint8}``.
    """
    if world_size() == 1:
        return {}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, torch.get_rng_state())
    return {"torch_rng_ranks": torch.stack(everyone)}


def restore_rng(state: dict, seed: int) -> None:
    """Restores this rank's torch generator from a checkpoint written by W processes.

    A checkpoint from another number of processes cannot give each rank its own stream back; the
    ranks are then seeded afresh from (seed, rank, step).
    """
    if world_size() == 1:
        return
    states = state.get("torch_rng_ranks")
    if states is not None and states.shape[0] == world_size():
        torch.set_rng_state(states[rank()].clone())
    else:
        step = int(state.get("epoch", 0)) * 1_000_003 + int(state.get("step", 0))
        seed_rank(seed + 7919 * (step + 1))


class _Objective(nn.Module):
    """The loss of this rank's shard times W, as a module for DDP to wrap."""

    def __init__(self, model: nn.Module, loss_fn: Callable, world: int) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.world = world

    def forward(self, *args: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if args[0].shape[0] == 0:  # a last batch smaller than W: zero gradients, still all-reduced
            zero = sum((p * 0).sum() for p in self.model.parameters())
            return zero, zero.detach()
        loss, value = self.loss_fn(self.model, args, beta)
        return loss * self.world, value


def data_parallel(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, tuple, float], tuple[torch.Tensor, torch.Tensor]],
    probe: tuple | None = None,
) -> Callable[[tuple, float], tuple[torch.Tensor, torch.Tensor]]:
    """The training step's loss, data parallel across ranks when there are several.

    Arguments:
        model: the model whose parameters are trained.
        loss_fn: ``loss_fn(model, args, beta) -> (loss, value)``, both summed over the batch
            (e.g. :func:`pyrogen.train.objective_loss`).
        probe: a small batch; one gradient on it finds parameters the loss does not reach (DDP
            must then search the graph each step).

    Returns:
        ``step(args, beta) -> (loss, value)``. In one process it is ``loss_fn`` itself; with W
        ranks ``loss`` is W times the shard's loss, so the all-reduced (averaged) gradient is the
        gradient of the whole global batch's loss, and ``value`` is the shard's own.
    """
    world = world_size()
    if world == 1:
        return lambda args, beta: loss_fn(model, args, beta)
    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device
    unused = False
    if probe is not None:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            loss, _ = loss_fn(model, probe, 1.0)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        unused = any(g is None for g in grads)
    ddp = DistributedDataParallel(
        _Objective(model, loss_fn, world),
        device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=unused,
    )
    return lambda args, beta: ddp(*args, beta=beta)


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` or ``option=VALUE``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Runs ``pyrogen ARGV`` in ``nproc`` processes on this machine through torchrun.

    Equivalent to ``torchrun --standalone --nproc_per_node NPROC -m pyrogen ARGV``: the launcher
    is ``torch.distributed.run``, in this process; each worker gets ``OMP_NUM_THREADS`` = cores /
    NPROC unless it is set.

    Returns:
        The exit status: 0, or that of the first worker to fail.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    saved = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "pyrogen", *argv])
    # the workers print their own errors; the agent's log lines would only repeat them
    elastic_log = logging.getLogger("torch.distributed.elastic")
    level = elastic_log.level
    elastic_log.setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        if failure.exitcode < 0:
            print(
                f"pyrogen: rank {failed_rank} was killed by {failure.signal_name()}",
                file=sys.stderr,
            )
            return 128 - failure.exitcode
        return failure.exitcode
    finally:
        elastic_log.setLevel(level)
        os.environ.clear()
        os.environ.update(saved)
    return 0
