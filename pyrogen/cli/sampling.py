"""``pyrogen sample``: new x from a trained model, as an image grid or an array."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyrogen.errors import ConfigError

__all__ = ["cmd_sample", "save_image_grid"]


def cmd_sample(args: argparse.Namespace) -> Path:
    from pyrogen.model import wants_labels
    from pyrogen.runs import load_run
    from pyrogen.train import seed_everything

    if args.num < 1:
        raise ConfigError(f"-n must be a positive integer, got {args.num}")
    run = load_run(args.run)
    seed_everything(args.seed)
    y = None
    if wants_labels(run.model.model):
        classes = run.config.get("num_classes") or 10
        y = (
            torch.full((args.num,), args.label)
            if args.label is not None
            else torch.arange(args.num) % classes
        )
    x = run.model.sample(args.num, y=y) if y is not None else run.model.sample(args.num)
    shape = run.config.get("image_shape")
    out = Path(args.out) if args.out else run.path / ("samples.png" if shape else "samples.npy")
    if out.suffix == ".png":
        if not shape:
            raise ConfigError(f"{run.config['data']} is not image data; write .npy or .csv")
        save_image_grid(x.cpu(), tuple(shape), out)
    elif out.suffix == ".csv":
        import numpy as np

        np.savetxt(out, x.cpu().numpy(), delimiter=",")
    else:
        import numpy as np

        np.save(out, x.cpu().numpy())
    print(f"wrote {args.num} samples to {out}")
    return out


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
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
