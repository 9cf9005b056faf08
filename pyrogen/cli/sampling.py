"""``pyrogen sample``: new x from a trained model, as an image grid or an array.

By default each row is a draw x ~ p_theta(x | z), z ~ r(z): a sample of the model whose
likelihood ``pyrogen evaluate`` reports (binary images for a Bernoulli likelihood, integers for a
Poisson one). ``--mean`` writes the mean of p_theta(x | z) instead (grey levels, smooth values):
what papers usually show, but not a sample of p_theta(x).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from pyrogen.atomic import check_writable, write_atomically
from pyrogen.cli.outputs import recover_run
from pyrogen.errors import ConfigError

__all__ = ["cmd_sample", "save_image_grid"]


def _available_memory() -> int:
    """Bytes of memory available now (physical memory where the OS does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**34


def cmd_sample(args: argparse.Namespace) -> Path:
    from pyrogen.model import wants_labels
    from pyrogen.runs import load_run
    from pyrogen.train import seed_everything

    if args.num < 1:
        raise ConfigError(f"-n must be a positive integer, got {args.num}")
    recover_run(args.run)
    run = load_run(args.run)
    need = args.num * int(run.config.get("data_dim") or 1) * 4 * 4  # x, its mean, the output
    if need > _available_memory():
        raise ConfigError(
            f"-n {args.num} would need about {need / 2**30:.1f} GiB of memory "
            f"({_available_memory() / 2**30:.1f} GiB available): draw fewer samples"
        )
    shape = run.config.get("image_shape")
    out = Path(args.out) if args.out else run.path / ("samples.png" if shape else "samples.csv")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file name such as {out}/samples.csv")
    if out.suffix not in (".png", ".csv", ".npy"):
        raise ConfigError(f"--out {out}: write a .png (image data), .csv or .npy file")
    if out.suffix == ".png" and not shape:
        raise ConfigError(f"{run.config['data']} is not image data; write .csv or .npy")
    check_writable(out.parent)  # a missing folder or a read-only disk, before drawing
    seed_everything(args.seed)
    y = None
    if wants_labels(run.model.model):
        classes = run.config.get("num_classes") or 10
        y = (
            torch.full((args.num,), args.label)
            if args.label is not None
            else torch.arange(args.num) % classes
        )
    x = _draw(run.model, args.num, y, mean=getattr(args, "mean", False))
    if out.suffix == ".png":
        save_image_grid(x.cpu(), tuple(shape), out)
    elif out.suffix == ".csv":
        write_csv(out, x.cpu(), y)
    else:
        import numpy as np

        write_atomically(out, lambda f: np.save(f, x.cpu().numpy()))
    what = "means of p(x | z)" if getattr(args, "mean", False) else "draws from p(x)"
    print(f"wrote {args.num} samples ({what}) to {out}")
    return out


def _draw(model: torch.nn.Module, num: int, y: torch.Tensor | None, mean: bool) -> torch.Tensor:
    """``model.sample``: draws, or the means of p(x | z) with ``mean=True``."""
    import inspect

    kwargs = {} if y is None else {"y": y}
    if "mean" in inspect.signature(model.sample).parameters:
        kwargs["mean"] = mean
    elif not mean:
        raise ConfigError(
            f"{type(model).__name__}.sample takes no 'mean' argument, so it cannot draw x; "
            "add mean: bool to it, or use --mean"
        )
    return model.sample(num, **kwargs)


def write_csv(path: Path, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Rows of x as a CSV with a header ``x0, x1, ...`` (and ``y`` first, for labels)."""
    import pandas as pd

    from pyrogen.atomic import write_text

    frame = pd.DataFrame(x.numpy(), columns=[f"x{i}" for i in range(x.shape[1])])
    if y is not None:
        frame.insert(0, "y", y.cpu().numpy())
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def save_image_grid(
    x: torch.Tensor, image_shape: tuple[int, int], path: Path, ncol: int | None = None
) -> None:
    """Saves rows of x as a grid of grey images (PNG)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = x.shape[0]
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    h, w = image_shape
    grid = torch.ones(nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = x[
            i
        ].reshape(h, w)
    fig, ax = plt.subplots(
        figsize=(min(10, 0.4 * ncol * w / 8 + 1), min(10, 0.4 * nrow * h / 8 + 1))
    )
    ax.imshow(grid.clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    try:
        write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)
