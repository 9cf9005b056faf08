"""One run as the report sees it: its tables, its model's samples, codes and decodings.

:class:`RunView` loads the model through :func:`pyrogen.runs.load_run` and the test split the run
was evaluated on, draws the samples compared by the MMD², and takes the guide's latent codes; the
functions below turn a view into the image panels of the page.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import torch

from pyrogen.errors import PyrogenError
from pyrogen.model import wants_labels
from pyrogen.report import figures as F
from pyrogen.report.decode import decode, latent_codes, model_samples, reconstruct
from pyrogen.report.mmd import mmd2
from pyrogen.report.tables import RunTables

__all__ = [
    "GRID",
    "MODEL_ERRORS",
    "RunView",
    "images_figure",
    "latent_map_inputs",
    "traversal_panel",
]

GRID = 8  # images per row of a sample grid, and the side of a traversal grid
#: what a user's model may raise when asked for something it does not support; the report then
#: leaves that part out with a note naming the error
MODEL_ERRORS = (PyrogenError, RuntimeError, ValueError, TypeError, NotImplementedError, IndexError)


def _test_data(cfg: dict, cache: dict) -> Any:
    """The test split of a run's data, or a message saying why it cannot be loaded."""
    from pyrogen.data import load_dataset
    from pyrogen.data.scaling import scale_of_run

    key = (
        cfg.get("data"),
        cfg.get("binarize"),
        cfg.get("val_fraction", 0.1),
        cfg.get("seed", 0),
        cfg.get("scale"),
    )
    if cfg.get("data") is None:
        return "the run was trained from tensors given to fit, which have no test split"
    if key not in cache:
        try:
            cache[key] = load_dataset(
                cfg["data"],
                "test",
                binarize=cfg.get("binarize"),
                val_fraction=cfg.get("val_fraction", 0.1),
                seed=cfg.get("seed", 0),
                download=False,
                scale=scale_of_run(cfg),
            )
        except (PyrogenError, KeyError, OSError) as e:
            cache[key] = f"test data of {cfg.get('data')} not available ({e})"
    return cache[key]


def _image_shape(cfg: dict) -> tuple[int, int] | None:
    shape = cfg.get("image_shape")
    if shape and len(shape) == 2 and int(shape[0]) * int(shape[1]) == int(cfg.get("data_dim", 0)):
        return int(shape[0]), int(shape[1])
    return None


class RunView:
    """Everything the page needs from one run, computed once.

    Attributes:
        t: the run's tables; ``colour`` its colour in every figure; ``notes`` what was left out.
        model: the trained model (None when it cannot be loaded).
        x, y: the first ``mmd_samples`` test points [n, D] and labels (or None).
        mmd: :class:`~pyrogen.report.mmd.MMD` of n draws x ~ p(x) against x (None if absent).
        codes: :class:`~pyrogen.report.decode.LatentCodes` of x, None without a latent site.
    """

    def __init__(
        self, tables: RunTables, colour: Any, seed: int, mmd_samples: int, data_cache: dict
    ) -> None:
        from pyrogen.runs import load_run

        self.t, self.colour, self.notes = tables, colour, []
        self.model = self.data = self.mmd = self.codes = None
        self.parameters: int | None = None
        self.shape = _image_shape(tables.config)
        try:
            self.model = load_run(tables.path).model
            self.parameters = sum(p.numel() for p in self.model.parameters())
        except PyrogenError as e:
            self.notes.append(f"{tables.name}: model not loaded, so no samples ({e})")
            return
        data = _test_data(tables.config, data_cache)
        if isinstance(data, str):
            self.notes.append(f"{tables.name}: {data}")
            return
        n = min(mmd_samples, len(data))
        self.x = data.x[:n].reshape(n, -1)
        self.y = data.y[:n] if data.y is not None else None
        self.labelled = wants_labels(self.model.model)
        if self.labelled and self.y is None:
            self.notes.append(f"{tables.name}: conditional model but the test data have no labels")
            return
        self.extra = (self.y,) if self.labelled else ()
        self.data = data
        pyro.set_rng_seed(seed)
        try:
            draws = model_samples(self.model, n, self.y if self.labelled else None, mean=False)
            self.mmd = mmd2(draws, self.x) if n >= 2 else None
        except MODEL_ERRORS as e:
            self.notes.append(
                f"{tables.name}: sampling the model failed, so no MMD² ({type(e).__name__}: {e})"
            )
        try:
            self.codes = latent_codes(self.model, self.x, *self.extra)
        except MODEL_ERRORS as e:
            self.notes.append(f"{tables.name}: no latent codes ({type(e).__name__}: {e})")

    @property
    def name(self) -> str:
        return self.t.name


def images_figure(v: RunView, num_classes: int | None, seed: int) -> bytes:
    """PNG of the run's samples (a row per class for a conditional model) beside test points
    and their reconstructions."""
    pyro.set_rng_seed(seed)
    panels = []
    latent = v.codes is not None
    if v.labelled:
        classes = min(int(num_classes or int(v.y.max()) + 1), 10)
        y = torch.arange(classes).repeat_interleave(GRID)
        samples = model_samples(v.model, len(y), y)
        panels.append(
            {
                "images": samples.numpy(),
                "image_shape": v.shape,
                "ncol": GRID,
                "title": "samples, a row per class",
                "xlabel": "E[x | z, y], z ~ p(z)" if latent else "x ~ p(x | y)",
                "row_labels": [f"y={c}" for c in range(classes)],
            }
        )
    else:
        samples = model_samples(v.model, GRID * GRID)
        panels.append(
            {
                "images": samples.numpy(),
                "image_shape": v.shape,
                "ncol": GRID,
                "title": "samples from the prior" if latent else "samples from the model",
                "xlabel": "E[x | z], z ~ p(z)" if latent else "x ~ p(x)",
            }
        )
    if v.codes is not None:
        m = min(4 * GRID, len(v.x))
        xr = reconstruct(v.model, v.x[:m], *(e[:m] for e in v.extra)).cpu().numpy()
        rows = []
        for start in range(0, m, GRID):
            rows += [v.x[start : start + GRID].numpy(), xr[start : start + GRID]]
        panels.append(
            {
                "images": np.concatenate(rows),
                "image_shape": v.shape,
                "ncol": GRID,
                "title": "test data and reconstructions",
                "row_labels": ["data", "recon."] * math.ceil(m / GRID),
                "xlabel": "E[x | z], z ~ q(z | x)",
            }
        )
    return F.png(F.image_panels, panels, v.name, v.colour)


def traversal_panel(v: RunView) -> tuple[dict | None, str]:
    """A :func:`~pyrogen.report.figures.traversals` panel, or None and the reason there is none."""
    codes = v.codes.values.cpu().numpy()
    if v.codes.num_sites != 1:
        return None, f"{v.name}: no traversal, the model has {v.codes.num_sites} latent sites."
    if codes.shape[1] < 2:
        return None, f"{v.name}: no traversal, the latent space has one dimension."
    draws = v.codes.draws.cpu().numpy()
    dims = sorted(np.argsort(codes.var(0))[::-1][:2].tolist())
    lo, hi = np.quantile(draws[:, dims], [0.02, 0.98], axis=0)
    values = [np.linspace(lo[0], hi[0], GRID), np.linspace(hi[1], lo[1], GRID)]
    za, zb = np.meshgrid(values[0], values[1])  # rows: dims[1], columns: dims[0]
    z = torch.zeros(GRID * GRID, codes.shape[1], dtype=v.codes.values.dtype)
    z[:, dims[0]] = torch.as_tensor(za.ravel(), dtype=z.dtype)
    z[:, dims[1]] = torch.as_tensor(zb.ravel(), dtype=z.dtype)
    extra = (torch.full((len(z),), int(v.y[0]), dtype=v.y.dtype),) if v.labelled else ()
    try:
        images = decode(v.model, v.codes.name, z, v.x.shape[1], *extra).cpu().numpy()
    except MODEL_ERRORS as e:
        return None, f"{v.name}: no traversal, decoding a given z failed ({type(e).__name__})."
    title = v.name + (f" (y = {int(v.y[0])})" if v.labelled else "")
    panel = {
        "images": images,
        "image_shape": v.shape,
        "values": values,
        "dims": dims,
        "title": title,
        "colour": v.colour,
        "axis": v.codes.name,
    }
    return panel, ""


def latent_map_inputs(views: list[RunView], seed: int) -> list[dict]:
    """The 2-D codes of each view for :func:`~pyrogen.report.figures.latent_maps` (PCA of the
    guide means when the latent space has more than two dimensions)."""
    from sklearn.decomposition import PCA

    maps = []
    for v in views:
        codes = v.codes.values.cpu().numpy().astype(float)
        axis = v.codes.name
        subtitle = ""
        if codes.shape[1] > 2:
            codes = PCA(n_components=2, random_state=seed).fit_transform(codes)
            axis, subtitle = f"{axis}: PC", f" (PCA of {v.codes.values.shape[1]} dims)"
        labels = v.y.numpy() if v.y is not None else None
        maps.append(
            {
                "name": v.name,
                "colour": v.colour,
                "codes": codes,
                "labels": labels,
                "axis": axis,
                "subtitle": subtitle,
            }
        )
    return maps
