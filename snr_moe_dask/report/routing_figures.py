"""Figures of the routing comparison and of the cross-validated alphas.

Each function takes the metrics (as in metrics.json) and writes one PNG, or
returns None when the run has nothing to show (a single routing, no gate,
no cross-validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import plot_calibration
from .canvas import new_figure, save_figure

ROUTING_FIGURES = {
    "confusion": "routing_confusion.png",
    "rho": "routing_rho.png",
    "cv_curves": "cv_curves.png",
    "calibration": "calibration.png",
}


def _by_routing(metrics: Mapping[str, Any]) -> dict:
    return (metrics.get("routings") or {}).get("by_routing") or {}


def plot_confusion(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """Row-normalized confusion matrices of true vs routed bin, one panel per routing
    other than oracle."""
    routed = {r: e for r, e in _by_routing(metrics).items() if r != "oracle"}
    if not routed:
        return None
    fig = new_figure(3.4 * len(routed) + 0.8, 3.4)
    axes = fig.subplots(1, len(routed), squeeze=False)[0]
    for ax, (name, entry) in zip(axes, routed.items()):
        conf = np.asarray(entry["confusion"], dtype=float)
        rows = conf.sum(axis=1, keepdims=True)
        frac = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
        ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
        cols = entry["confusion_columns"]
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(conf.shape[0]), cols[: conf.shape[0]])
        for (i, j), v in np.ndenumerate(conf):
            if v:
                color = "white" if frac[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(v):,}", ha="center", va="center", fontsize=7, color=color)
        ax.set_xlabel("routed bin")
        ax.set_ylabel("true bin")
        ax.set_title(f"{name}: accuracy {entry['accuracy']:.3f}", fontsize=9)
    return save_figure(fig, path)


def plot_rho(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """rho of each routing with its 95% bootstrap CI; 1 = all of the oracle's gain."""
    entries = {r: e for r, e in _by_routing(metrics).items() if e.get("rho") is not None}
    if len(entries) < 2:
        return None
    fig = new_figure(4.8, 3.2)
    ax = fig.subplots()
    names = list(entries)
    rho = [entries[r]["rho"] for r in names]
    ci = [entries[r].get("rho_ci95") or [np.nan, np.nan] for r in names]
    err = np.abs(np.array([[r - c[0], c[1] - r] for r, c in zip(rho, ci)]).T)
    ax.bar(names, rho, color="#4c72b0", yerr=np.nan_to_num(err), capsize=4)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("ρ = ΔR² / ΔR²(oracle)")
    ax.set_title("Share of the oracle's gain kept by each routing", fontsize=9)
    return save_figure(fig, path)


def plot_cv_curves(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """Mean K-fold CV error against alpha for each expert, with the standard error band
    and the chosen and the fixed alpha marked."""
    cv = metrics.get("alpha_cv")
    if not cv:
        return None
    grid = np.asarray(cv["grid"])
    experts = list(cv["curves"])
    fig = new_figure(2.6 * len(experts) + 0.6, 3.0)
    axes = fig.subplots(1, len(experts), squeeze=False)[0]
    for ax, name in zip(axes, experts):
        mean = np.asarray(cv["curves"][name]["mean_mse"], dtype=float)
        se = np.asarray(cv["curves"][name]["se"], dtype=float)
        ax.plot(grid, mean, color="#4c72b0")
        if np.isfinite(se).any():
            ax.fill_between(grid, mean - se, mean + se, color="#4c72b0", alpha=0.25, lw=0)
        ax.axvline(cv["alpha_cv"][name], color="#dd8452", lw=1, label="CV choice")
        ax.axvline(cv["alpha_fixed"], color="grey", lw=1, ls="--", label="fixed")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("alpha")
    gcv = cv.get("method") == "gcv"
    axes[0].set_ylabel("GCV score" if gcv else f"{cv['folds']}-fold CV MSE")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


PLOTTERS = {
    "confusion": plot_confusion,
    "rho": plot_rho,
    "cv_curves": plot_cv_curves,
    "calibration": plot_calibration,
}


def write_routing_figures(metrics: Mapping[str, Any], fig_dir: Path) -> dict[str, Path]:
    """Write the figures that apply to this run; return key to path."""
    out = {}
    for key, plot in PLOTTERS.items():
        path = plot(metrics, fig_dir / ROUTING_FIGURES[key])
        if path is not None:
            out[key] = path
    return out
