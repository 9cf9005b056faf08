"""The figures of a report, drawn with matplotlib's Agg canvas (no pyplot, no display).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`png` renders one to PNG bytes
under the report's style. Runs keep one colour each across all figures (:func:`run_colours`, keyed
by run order); class labels use a separate palette.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pyrogen.report.tables import RunTables

__all__ = [
    "STYLE",
    "ais_vs_steps",
    "bound_ladder",
    "bounds_vs_k",
    "gap_decomposition",
    "gap_histogram",
    "image_panels",
    "khat_distribution",
    "latent_maps",
    "learning_curves",
    "png",
    "run_colours",
    "tile",
    "traversals",
]

STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
WIDTH = 8.0  # inches; at DPI this is the page width
DPI = 110


def run_colours(n: int) -> list[tuple[float, ...]]:
    """One colour per run, by run order (Dark2 for up to 8 runs, tab20 beyond)."""
    cmap = matplotlib.colormaps["Dark2" if n <= 8 else "tab20"]
    return [tuple(cmap(i % cmap.N)) for i in range(n)]


def png(draw: Callable[..., Figure], *args: Any, **kwargs: Any) -> bytes:
    """Draws a figure under :data:`STYLE` and returns it as PNG bytes."""
    with matplotlib.rc_context(STYLE):
        fig = draw(*args, **kwargs)
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _data_groups(runs: Sequence[RunTables]) -> list[tuple[str, list[int]]]:
    """Runs grouped by the data they model (name and binarization), in run order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault((r.config.get("data"), r.config.get("binarize") or "none"), []).append(i)
    return [(f"{d} (binarize {b})", idx) for (d, b), idx in groups.items()]


def _group_panels(runs: Sequence[RunTables], height: float) -> tuple[Figure, list]:
    """One panel per data group (likelihoods of different data share no scale)."""
    groups = _data_groups(runs)
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel()
    return fig, [
        (ax, title if len(groups) > 1 else "", idx) for ax, (title, idx) in zip(axes, groups)
    ]


def _figure_legend(fig: Figure, axes: Sequence[Any], ncol: int) -> None:
    """One legend below the panels, with each label once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc="outside lower center", ncol=ncol, frameon=False
        )


def _clip_early_outliers(ax: Any) -> None:
    """Keeps the y-axis on the bulk of the curves when a few values (typically the first epoch)
    lie far below, and says on the plot how many are cut off."""
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines])
    values = values[np.isfinite(values)]
    if values.size < 5:
        return
    lo, hi = np.quantile(values, 0.1), values.max()
    if values.min() >= lo - 1.5 * (hi - lo):
        return
    bottom = lo - 0.5 * (hi - lo)
    ax.set_ylim(bottom, hi + 0.05 * (hi - lo))
    cut = int((values < bottom).sum())
    ax.text(
        0.98,
        0.02,
        f"{cut} value{'s' if cut > 1 else ''} below the axis",
        ha="right",
        va="bottom",
        transform=ax.transAxes,
        color="0.4",
        fontsize=9,
    )


def learning_curves(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """Train (solid) and validation (dashed) ELBO per epoch, one colour per run."""
    fig, panels = _group_panels(runs, 4.2 + 0.25 * len(runs))
    for ax, title, idx in panels:
        for i in idx:
            r, c, h = runs[i], colours[i], runs[i].history
            if h is None or not len(h):
                continue
            marker = "o" if len(h) <= 30 else None
            train, what = h["train_elbo"], "train ELBO"
            if not np.isfinite(train.to_numpy(dtype=float)).any():
                train, what = h["train_objective"], f"train {r.config.get('objective', 'loss')}"
            ax.plot(h["epoch"], train, "-", color=c, marker=marker, ms=3, label=f"{r.name}: {what}")
            if np.isfinite(h["val_elbo"].to_numpy(dtype=float)).any():
                ax.plot(
                    h["epoch"],
                    h["val_elbo"],
                    "--",
                    color=c,
                    marker=marker,
                    ms=3,
                    label=f"{r.name}: validation ELBO",
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=title, xlabel="epoch", ylabel="ELBO (nats per data point)")
        _clip_early_outliers(ax)
    fig.suptitle("Learning curves", fontsize=13)
    _figure_legend(fig, [p[0] for p in panels], ncol=min(3, len(runs)))
    return fig


def bounds_vs_k(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """IWAE_k against k (log axis) with ±1 standard-error bands; ELBO (k = 1) as a square and the
    log p̂(x) level (largest k) as a dotted line."""
    fig, panels = _group_panels(runs, 4.4 + 0.25 * len(runs))
    for ax, title, idx in panels:
        kmax = 1
        for i in idx:
            r, c = runs[i], colours[i]
            if r.bounds is None or not len(r.bounds):
                continue
            b = r.bounds
            k, est, se = b["k"].to_numpy(), b["estimate"].to_numpy(), b["stderr"].to_numpy()
            kmax = max(kmax, int(k.max()))
            ax.fill_between(k, est - se, est + se, color=c, alpha=0.25, lw=0)
            ax.plot(k, est, "-o", color=c, ms=4, label=f"{r.name}: IWAE_k")
            elbo = r.bound(1)
            if math.isnan(elbo) and r.points is not None:
                elbo = float(r.points["elbo"].mean())
            ax.plot(
                [1],
                [elbo],
                "s",
                color=c,
                ms=9,
                mec="black",
                mew=1.0,
                label=f"{r.name}: ELBO (k = 1) = {elbo:.4g}",
                zorder=3,
            )
            ax.axhline(
                est[-1],
                color=c,
                ls=":",
                lw=1.5,
                label=f"{r.name}: log p̂(x) = {est[-1]:.4g} (k = {int(k[-1])})",
            )
        ax.set_xscale("log")
        ax.set_xlim(0.8, kmax * 1.25)
        ax.set(
            title=title,
            xlabel="k (importance samples per point, log scale)",
            ylabel="bound (nats per data point)",
        )
    fig.suptitle("Importance-weighted bounds against k", fontsize=13)
    _figure_legend(fig, [p[0] for p in panels], ncol=min(3, len(runs)))
    return fig


def gap_histogram(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """Histogram of the per-datapoint gap log p̂(x) - ELBO, overlaid per run (a panel per data
    set); values beyond the 99.5th percentile are drawn in the last bin."""
    fig, panels = _group_panels(runs, 4.0 + 0.2 * len(runs))
    gaps = [
        r.points["gap"].to_numpy(dtype=float)
        if r.points is not None and "gap" in r.points
        else np.array([])
        for r in runs
    ]
    for ax, title, idx in panels:
        pooled = np.concatenate([gaps[i][np.isfinite(gaps[i])] for i in idx])
        if pooled.size:
            lo, hi = np.quantile(pooled, [0.0, 0.995])
            bins = np.histogram_bin_edges(pooled, bins=40, range=(lo, hi if hi > lo else lo + 1))
        for i in idx:
            g = gaps[i][np.isfinite(gaps[i])]
            if not g.size:
                continue
            w = np.full(g.size, 1.0 / g.size)
            g = np.clip(g, bins[0], bins[-1])
            label = f"{runs[i].name}: mean {gaps[i].mean():.3g} nats, {g.size} points"
            ax.hist(g, bins=bins, weights=w, color=colours[i], alpha=0.25)
            ax.hist(g, bins=bins, weights=w, color=colours[i], histtype="step", lw=1.8, label=label)
        ax.set(title=title, xlabel="log p̂(x) − ELBO (nats)", ylabel="share of data points")
    fig.suptitle("Per-datapoint gap between log p̂(x) and the ELBO", fontsize=13)
    _figure_legend(fig, [p[0] for p in panels], ncol=min(3, len(runs)))
    return fig


def khat_distribution(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """Histogram of the per-datapoint Pareto k-hat with the 0.5 and 0.7 thresholds.

    Constant weights give k-hat = -inf (nothing to fit, a perfect estimate); too few draws for a
    tail fit can give +inf or nan: such points are counted in the legend, not drawn, and the
    shares are of all points.
    """
    fig = Figure(figsize=(WIDTH, 4.0), layout="constrained")
    ax = fig.subplots()
    khats = [
        r.points["khat"].to_numpy(dtype=float)
        if r.points is not None and "khat" in r.points
        else np.array([])
        for r in runs
    ]
    finite = np.concatenate([k[np.isfinite(k)] for k in khats]) if khats else np.array([])
    lo = min(float(finite.min()) if finite.size else -0.5, -0.25)
    hi = max(float(finite.max()) if finite.size else 1.0, 1.0)
    bins = np.linspace(lo, hi, 41)
    for r, c, k in zip(runs, colours, khats):
        if not k.size:
            continue
        shown = k[np.isfinite(k)]
        label = f"{r.name}: {np.mean(k > 0.7):.1%} above 0.7"
        if (k == -np.inf).any():
            label += f"; {int((k == -np.inf).sum())} constant weights (k̂ = −∞)"
        if (k == np.inf).any():
            label += f"; {int((k == np.inf).sum())} with k̂ = +∞"
        if np.isnan(k).any():
            label += f"; {int(np.isnan(k).sum())} without a fit"
        if not shown.size:
            ax.plot([], [], color=c, lw=1.8, label=label)
            continue
        w = np.full(shown.size, 1.0 / k.size)
        ax.hist(shown, bins=bins, weights=w, color=c, alpha=0.25)
        ax.hist(shown, bins=bins, weights=w, color=c, histtype="step", lw=1.8, label=label)
    if not finite.size:
        ax.set_ylim(0, 1)
        ax.text(
            0.5,
            0.5,
            "no finite k̂ to draw (see the legend)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    ax.axvline(0.5, color="0.35", ls="--", lw=1.2, label="0.5: reliable below")
    ax.axvline(0.7, color="black", ls="-", lw=1.2, label="0.7: unreliable above")
    ax.set(
        title="Pareto k̂ of the importance weights per data point",
        xlabel="k̂ (PSIS shape, dimensionless)",
        ylabel="share of data points",
    )
    _figure_legend(fig, [ax], ncol=2)
    return fig


def tile(images: np.ndarray, image_shape: Sequence[int], ncol: int) -> np.ndarray:
    """Tiles rows of ``images`` [n, H*W] into one array, with a 1-pixel NaN gutter."""
    h, w = int(image_shape[0]), int(image_shape[1])
    n = images.shape[0]
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + 1) - 1, ncol * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i].reshape(h, w)
    return grid


def _show_tiles(ax: Any, grid: np.ndarray, title: str, vmax: float = 1.0) -> None:
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.grid(False)
    ax.set_xticks([])
    for side in ("left", "bottom", "top", "right"):
        ax.spines[side].set_visible(False)


def image_panels(panels: Sequence[dict], title: str, colour: Any) -> Figure:
    """Side-by-side image grids. Each panel: ``images`` [n, H*W], ``image_shape``, ``ncol``,
    ``title`` and optional ``row_labels`` (one per image row) and ``xlabel``."""
    fig = Figure(figsize=(WIDTH, 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, p in zip(axes, panels):
        h = int(p["image_shape"][0])
        grid = tile(np.asarray(p["images"], dtype=float), p["image_shape"], p["ncol"])
        vmax = max(1.0, float(np.nanmax(grid))) if np.isfinite(grid).any() else 1.0
        _show_tiles(ax, grid, p["title"], vmax)
        labels = p.get("row_labels")
        if labels:
            ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(len(labels))], labels)
            ax.tick_params(axis="y", length=0)
        else:
            ax.set_yticks([])
        if p.get("xlabel"):
            ax.set_xlabel(p["xlabel"])
    fig.suptitle(title, color=colour, fontsize=13, fontweight="bold")
    return fig


def latent_maps(maps: Sequence[dict], num_classes: int | None) -> Figure:
    """Scatter plots of 2-D latent codes, one panel per run, points coloured by class label.

    Each map: ``name``, ``colour``, ``codes`` [N, 2] (or [N, 1]), ``labels`` [N] or None,
    ``axis`` (the axis-label stem, e.g. "z" or "PC of z") and optional ``subtitle``.
    """
    ncol = min(len(maps), 3)
    nrow = math.ceil(len(maps) / ncol)
    panel = min(WIDTH / ncol, 4.5)
    fig = Figure(figsize=(panel * ncol + 1.2, panel * nrow * 0.95 + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    classes = matplotlib.colormaps["tab10" if (num_classes or 10) <= 10 else "tab20"]
    seen: dict[int, Any] = {}
    for ax, m in zip(axes, maps):
        codes = np.asarray(m["codes"], dtype=float)
        labels = m["labels"]
        yvals = (
            codes[:, 1]
            if codes.shape[1] > 1
            else (labels if labels is not None else np.zeros(len(codes)))
        )
        if labels is None:
            ax.scatter(codes[:, 0], yvals, s=8, color=m["colour"], alpha=0.7, lw=0)
        else:
            for cls in np.unique(labels):
                sel = labels == cls
                seen[int(cls)] = ax.scatter(
                    codes[sel, 0],
                    yvals[sel],
                    s=8,
                    alpha=0.75,
                    lw=0,
                    color=classes(int(cls) % classes.N),
                )
        ax.set_title(m["name"] + m.get("subtitle", ""), color=m["colour"], fontweight="bold")
        ax.set_xlabel(f"{m['axis']} 1")
        ax.set_ylabel(f"{m['axis']} 2" if codes.shape[1] > 1 else "class label")
    for ax in axes[len(maps) :]:
        ax.set_visible(False)
    if seen:
        fig.legend(
            [seen[c] for c in sorted(seen)],
            [str(c) for c in sorted(seen)],
            title="class",
            loc="outside right center",
            markerscale=2,
        )
    fig.suptitle("Latent codes of test points (guide means)", fontsize=13)
    return fig


def traversals(panels: Sequence[dict]) -> Figure:
    """G x G grids of decodings over two latent dimensions, one panel per run.

    Each panel: ``images`` [G*G, H*W] row-major (rows: ``dims[1]``, from its largest value
    down; columns: ``dims[0]``), ``image_shape``, ``values`` (the two value vectors), ``dims``,
    ``title``, ``colour`` and ``axis`` (the latent site's name).
    """
    ncol = min(len(panels), 2)
    nrow = math.ceil(len(panels) / ncol)
    side = min(WIDTH / ncol, 5.0)
    fig = Figure(figsize=(side * ncol, side * nrow + 0.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, p in zip(axes, panels):
        h, w = int(p["image_shape"][0]), int(p["image_shape"][1])
        va, vb = p["values"]
        grid = tile(np.asarray(p["images"], dtype=float), p["image_shape"], len(va))
        _show_tiles(ax, grid, p["title"], max(1.0, float(np.nanmax(grid))))
        ax.set_title(p["title"], color=p["colour"], fontweight="bold")
        ax.set_xticks(
            [c * (w + 1) + (w - 1) / 2 for c in range(len(va))],
            [f"{v:.2g}" for v in va],
            rotation=90 if ncol > 1 else 0,
        )
        ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(len(vb))], [f"{v:.2g}" for v in vb])
        ax.tick_params(length=0)
        ax.set_xlabel(f"{p['axis']}[{p['dims'][0]}]")
        ax.set_ylabel(f"{p['axis']}[{p['dims'][1]}]")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Latent traversals: decoder means E[x | z] (latent values on the axes)", fontsize=13
    )
    return fig


# -- beyond importance sampling -------------------------------------------------------------------


def _ladder_rows(r: RunTables) -> list[tuple[str, float, float]]:
    """(label, mean, standard error) of each bound a run has, from the lowest to the highest."""
    rows = []
    g = r.extra.get("gaps_summary")
    a = r.extra.get("ais_summary")
    if g is not None and len(g):
        g = g.iloc[0]
        rows.append(("ELBO[q_φ]", g["elbo"], g["elbo_stderr"]))
        rows.append(("ELBO[q*]", g["elbo_star"], g["elbo_star_stderr"]))
        rows.append((f"IWAE_{int(g['K'])}", g["iwae"], g["iwae_stderr"]))
        rows.append((f"IS with q* (K={int(g['K'])})", g["is_star"], g["is_star_stderr"]))
    elif r.bounds is not None and len(r.bounds):
        rows.append(("ELBO[q_φ]", r.bound(1), r.bound(1, "stderr")))
        rows.append((f"IWAE_{r.ks[-1]}", r.top("estimate"), r.top("stderr")))
    if a is not None and len(a):
        top = a.sort_values("steps").iloc[-1]
        rows.append(
            (f"AIS (C={int(top['chains'])}, T={int(top['steps'])})", top["estimate"], top["stderr"])
        )
    return rows


def bound_ladder(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """Per run, the ladder ELBO[q_phi] <= ELBO[q*] <= IWAE_K <= AIS on the test points (left)
    and, where BDMC ran, its lower and upper bounds on data simulated from the model (right)."""
    with_bdmc = any(r.extra.get("bdmc_summary") is not None for r in runs)
    fig = Figure(figsize=(WIDTH, 1.2 + 1.6 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 2 if with_bdmc else 1, squeeze=False)
    for i, r in enumerate(runs):
        ax = axes[i, 0]
        rows = _ladder_rows(r)
        for j, (_, value, se) in enumerate(rows):
            ax.errorbar(value, j, xerr=se, fmt="o", color=colours[i], ms=6, capsize=3)
            ax.annotate(
                f"{value:.2f}", (value, j), xytext=(6, 5), textcoords="offset points", fontsize=9
            )
        ax.set_yticks(range(len(rows)), [lab for lab, _, _ in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.margins(x=0.25)
        ax.set(title=f"{r.name}\ntest points", xlabel="nats per data point")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        if with_bdmc:
            ax2 = axes[i, 1]
            b = r.extra.get("bdmc_summary")
            if b is None or not len(b):
                ax2.set_axis_off()
                continue
            b = b.sort_values("steps").iloc[-1] if "steps" in b else b.iloc[-1]
            ax2.errorbar(b["lower"], 0, fmt="o", color=colours[i], ms=6)
            ax2.errorbar(b["upper"], 1, fmt="s", color=colours[i], ms=6)
            ax2.plot([b["lower"], b["upper"]], [0, 1], color=colours[i], lw=1, alpha=0.5)
            ax2.set_yticks([0, 1], ["forward AIS (lower)", "reverse AIS (upper)"])
            ax2.set_ylim(-0.6, 1.6)
            ax2.margins(x=0.4)
            ax2.set(
                title=f"BDMC, {int(b['num_points'])} simulated points, T={int(b['steps'])}\n"
                f"gap {b['gap']:.3g} ± {b['gap_stderr']:.2g} nats",
                xlabel="nats per data point",
            )
            ax2.xaxis.set_major_locator(MaxNLocator(4))
            ax2.ticklabel_format(axis="x", useOffset=False)  # nats as they are, not +2.8e1
    fig.suptitle("The bound ladder: each estimate of log p(x), lowest first", fontsize=13)
    return fig


def gap_decomposition(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """Stacked bars of log p̂(x) - ELBO[q_phi] = approximation gap + amortization gap per run,
    with ±1 standard error (test set) on each part."""
    have = [(i, r) for i, r in enumerate(runs) if r.extra.get("gaps_summary") is not None]
    fig = Figure(figsize=(WIDTH, 1.5 + 0.9 * len(have)), layout="constrained")
    ax = fig.subplots()
    names = []
    bar = {"height": 0.5, "capsize": 3}
    for j, (i, r) in enumerate(have):
        g = r.extra["gaps_summary"].iloc[0]
        approx, amort = g["approximation_gap"], g["amortization_gap"]
        ax.barh(
            j,
            approx,
            color=colours[i],
            alpha=0.9,
            label="approximation gap" if j == 0 else None,
            xerr=g["approximation_gap_data_stderr"],
            **bar,
        )
        ax.barh(
            j,
            amort,
            left=max(approx, 0),
            color=colours[i],
            alpha=0.4,
            hatch="//",
            label="amortization gap" if j == 0 else None,
            xerr=g["amortization_gap_data_stderr"],
            **bar,
        )
        ax.annotate(
            f"approx. {approx:.3g} + amort. {amort:.3g} = {approx + amort:.3g} nats "
            f"(log p̂ from {g['best']})",
            (0, j + 0.3),
            va="bottom",
            fontsize=9,
        )
        names.append(r.name)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.5, len(names) - 0.1)
    ax.set(xlabel="nats per data point")
    _figure_legend(fig, [ax], ncol=2)
    fig.suptitle("log p̂(x) − ELBO[q_φ] = approximation gap + amortization gap", fontsize=13)
    return fig


def ais_vs_steps(runs: Sequence[RunTables], colours: Sequence[Any]) -> Figure:
    """AIS's estimate against the number of intermediate distributions T (log axis), ±1 s.e.,
    with the run's IWAE_K as a dotted line."""
    fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(runs):
        a = r.extra.get("ais_summary")
        if a is None or not len(a):
            continue
        a = a.sort_values("steps")
        t, est, se = a["steps"].to_numpy(), a["estimate"].to_numpy(), a["stderr"].to_numpy()
        ax.errorbar(
            t,
            est,
            yerr=se,
            fmt="-o",
            color=colours[i],
            ms=5,
            capsize=3,
            label=f"{r.name}: AIS, {int(a['chains'].iloc[-1])} chains",
        )
        if r.bounds is not None and len(r.bounds):
            ax.axhline(
                r.top("estimate"),
                color=colours[i],
                ls=":",
                lw=1.5,
                label=f"{r.name}: IWAE_{r.ks[-1]}",
            )
    ax.set_xscale("log")
    ax.set(xlabel="T (intermediate distributions, log scale)", ylabel="log p̂(x) (nats per point)")
    ax.legend(frameon=False, fontsize=9)
    fig.suptitle("AIS estimate of log p(x) against T", fontsize=13)
    return fig
