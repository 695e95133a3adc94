"""Figures of experts keyed by variables: ΔR² over a 2-D grid of keys (the source study's
figure 4), and the edge search's CV error for each number of bins.

Each function takes the metrics (as in metrics.json) and writes one PNG, or
returns None when the run has nothing to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from .canvas import MOE_COLOR, new_figure, save_figure
from .cells import grid_cells, key_cell_labels
from .text import as_float, find_bin_ci, label_target

GRID_FIGURES = {"delta_grid": "delta_grid.png", "edge_search": "edge_search.png"}


def plot_delta_grid(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """Heatmap of ΔR² (expert minus global) over a 2-D grid of keys, each cell
    annotated with ΔR², its 95% CI and its test spectra; None unless two keys."""
    rows = grid_cells(metrics)
    if rows is None:
        return None
    first, second = metrics["keys"]
    delta = np.array([[as_float(b.get("delta_r2")) for b in row] for row in rows])
    finite = np.abs(delta[np.isfinite(delta)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    fig = new_figure(1.9 * len(rows[0]) + 2.6, 1.3 * len(rows) + 1.8)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(delta), cmap=cmap, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto"
    )
    for (i, j), value in np.ndenumerate(delta):
        b = rows[i][j]
        ci = find_bin_ci(metrics, b)
        text = "–" if not np.isfinite(value) else f"{value:+.3f}"
        if ci is not None:
            text += f"\n[{ci[0]:+.3f}, {ci[1]:+.3f}]"
        text += f"\nn = {int(b.get('n_test') or 0):,}"
        dark = np.isfinite(value) and abs(value) > 0.6 * vmax
        color = "white" if dark else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
        if b.get("fallback"):
            ax.add_patch(_hatch(j, i))
    ax.set_xticks(range(len(rows[0])), key_cell_labels(second))
    ax.set_yticks(range(len(rows)), key_cell_labels(first))
    ax.set_xlabel(str(second["name"]))
    ax.set_ylabel(str(first["name"]))
    ax.tick_params(length=0)
    ax.set_title(f"{label_target(metrics.get('target'))}: ΔR² of each cell's expert", fontsize=11)
    fig.colorbar(image, ax=ax, label="ΔR² (expert − global)")
    return save_figure(fig, path)


def _hatch(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.4", lw=0)


def plot_edge_search(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """The CV error of the best partition for each number of bins per key: a line for
    one key, a heatmap for two; None without a search."""
    search = metrics.get("edge_search")
    if not search or len(search["keys"]) > 2:
        return None
    alts = {tuple(a["bins"]): a["cv_error"] for a in search["alternatives"]}
    chosen = tuple(search["n_bins"])
    fig = new_figure(5.5, 3.8)
    ax = fig.add_subplot()
    if len(chosen) == 1:
        counts = sorted(alts)
        ax.plot([c[0] for c in counts], [alts[c] for c in counts], "o-", color=MOE_COLOR)
        ax.plot([chosen[0]], [alts[chosen]], "o", ms=12, mfc="none", mec="black")
        ax.set_xlabel(f"coarse bins of {search['keys'][0]['name']}")
        ax.set_ylabel("CV error (MSE)")
        ax.set_xticks([c[0] for c in counts])
    else:
        grid = np.full(chosen, np.nan)
        for (a, b), err in alts.items():
            grid[a - 1, b - 1] = err
        image = ax.imshow(grid, cmap="viridis_r", origin="lower")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.4g}", ha="center", va="center", fontsize=8, color="white")
        ax.set_xticks(range(chosen[1]), [str(b + 1) for b in range(chosen[1])])
        ax.set_yticks(range(chosen[0]), [str(b + 1) for b in range(chosen[0])])
        ax.set_xlabel(f"coarse bins of {search['keys'][1]['name']}")
        ax.set_ylabel(f"coarse bins of {search['keys'][0]['name']}")
        fig.colorbar(image, ax=ax, label="CV error (MSE)")
    ax.set_title(f"{search['folds']}-fold CV error of the best partition", fontsize=10)
    return save_figure(fig, path)


def write_grid_figures(metrics: Mapping[str, Any], fig_dir: Path) -> dict[str, Path]:
    """The figures of this module that apply to the run, by key."""
    out = {}
    for key, plot in (("delta_grid", plot_delta_grid), ("edge_search", plot_edge_search)):
        written = plot(metrics, fig_dir / GRID_FIGURES[key])
        if written is not None:
            out[key] = written
    return out
