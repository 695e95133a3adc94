"""The report's histogram figures: predicted against true target, and the SNR
distributions of the training and test sets, drawn from pre-aggregated 2-D
and 1-D histograms (never per-spectrum data)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.transforms import blended_transform_factory

from .canvas import GLOBAL_COLOR, MOE_COLOR, new_figure, save_figure
from .text import is_missing, label_target, name_model, order_bins, sample_name


def plot_pred_vs_true(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any], path: str | Path
) -> Path:
    """Predicted against true target for the global model and the MoE.

    Drawn from the 2-D histogram in ``figdata["pred_hist"]``; each occupied
    cell is colored by the mean SNR of the spectra in it, which shows where the
    noisy spectra land.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``; uses ``target``, ``routing``
        and ``overall``.
    figdata : mapping
        Needs ``pred_hist`` with ``true_edges`` (nx + 1), ``pred_edges``
        (ny + 1) and arrays of shape (nx, ny) ``count_global``, ``count_moe``,
        ``snr_sum_global``, ``snr_sum_moe``.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        The written PNG.
    """
    hist = figdata.get("pred_hist") or {}
    true_edges = np.asarray(hist.get("true_edges", [0.0, 1.0]), dtype=float)
    pred_edges = np.asarray(hist.get("pred_edges", [0.0, 1.0]), dtype=float)
    overall = metrics.get("overall") or {}
    panels = [
        ("Global Ridge", "global", overall.get("r2_global")),
        (name_model(metrics.get("routing")), "moe", overall.get("r2_moe")),
    ]
    shape = (true_edges.size - 1, pred_edges.size - 1)
    counts = [
        np.asarray(hist.get(f"count_{key}", np.zeros(shape)), dtype=float) for _, key, _ in panels
    ]
    means = [_mean_snr(hist, key, shape) for _, key, _ in panels]
    norm = _shared_norm(means, counts)
    label = label_target(metrics.get("target"))

    fig = new_figure(11.0, 5.0)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    mesh = None
    for ax, (title, _, r2), mean in zip(axes, panels, means, strict=True):
        mesh = ax.pcolormesh(true_edges, pred_edges, mean.T, cmap="viridis", norm=norm)
        lo = min(true_edges[0], pred_edges[0])
        hi = max(true_edges[-1], pred_edges[-1])
        ax.plot([lo, hi], [lo, hi], color="crimson", linewidth=1.2, label="1:1")
        ax.set_xlim(true_edges[0], true_edges[-1])
        ax.set_ylim(pred_edges[0], pred_edges[-1])
        r2_text = "–" if is_missing(r2) else f"{float(r2):.4f}"
        ax.set_title(f"{title} (R² = {r2_text})")
        ax.set_xlabel(f"true {label}")
        ax.legend(loc="upper left")
        if not np.isfinite(mean).any():
            ax.text(
                0.5,
                0.5,
                "no data",
                transform=ax.transAxes,
                ha="center",
                va="center",
                bbox={"facecolor": "white", "edgecolor": "0.7"},
            )
    axes[0].set_ylabel(f"predicted {label}")
    fig.colorbar(mesh, ax=list(axes), label="mean SNR", shrink=0.9, extend=_extend_of(norm, means))
    fig.suptitle(
        f"Predicted vs true {label} on the {sample_name(metrics)} (cells colored by mean SNR)"
    )
    return save_figure(fig, path)


def _mean_snr(hist: Mapping[str, Any], key: str, shape: tuple[int, int]) -> np.ma.MaskedArray:
    count = np.asarray(hist.get(f"count_{key}", np.zeros(shape)), dtype=float)
    snr_sum = np.asarray(hist.get(f"snr_sum_{key}", np.zeros(shape)), dtype=float)
    # Empty cells are masked so they stay blank rather than showing SNR 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, snr_sum / np.where(count > 0, count, 1.0), np.nan)
    return np.ma.masked_invalid(mean)


def _shared_norm(means: Sequence[np.ma.MaskedArray], counts: Sequence[np.ndarray]) -> Normalize:
    # One colour scale for both panels so the same colour means the same SNR.
    # The limits are count-weighted percentiles: a lone bright spectrum in an
    # outlying cell would otherwise stretch the scale and flatten the rest.
    values = np.concatenate([m.filled(np.nan).ravel() for m in means])
    weights = np.concatenate([np.asarray(c, dtype=float).ravel() for c in counts])
    keep = np.isfinite(values) & (weights > 0)
    if not keep.any():
        return Normalize(0.0, 1.0)
    values, weights = values[keep], weights[keep]
    order = np.argsort(values)
    cdf = np.cumsum(weights[order]) / weights.sum()
    lo, hi = np.interp([0.01, 0.99], cdf, values[order])
    return Normalize(float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def _extend_of(norm: Normalize, means: Sequence[np.ma.MaskedArray]) -> str:
    values = np.concatenate([m.compressed() for m in means])
    below = values.size > 0 and values.min() < norm.vmin
    above = values.size > 0 and values.max() > norm.vmax
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (below, above), "both"
    )


def plot_snr_distribution(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any], path: str | Path
) -> Path:
    """Distribution of SNR in the train and test sets, with the bin edges.

    Counts are drawn as densities so that a train set ten times larger than the
    test set still overlays it; the legend gives the absolute numbers.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``; ``bins`` is used when
        ``figdata`` carries no ``bin_edges``.
    figdata : mapping
        Needs ``snr_hist`` with ``edges`` and ``count_test`` (``count_train``
        may be None); optional ``bin_edges`` and ``bin_names``.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        The written PNG.
    """
    hist = figdata.get("snr_hist") or {}
    edges = np.asarray(hist.get("edges", [0.0, 1.0]), dtype=float)
    bin_edges, bin_names = _find_bin_edges(metrics, figdata)

    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    styles = [("train", "count_train", GLOBAL_COLOR), ("test", "count_test", MOE_COLOR)]
    for name, key, color in styles:
        counts = hist.get(key)
        if counts is None:
            continue
        counts = np.asarray(counts, dtype=float)
        total = counts.sum()
        if total <= 0:
            continue
        density = counts / (total * np.diff(edges))
        ax.stairs(density, edges, color=color, linewidth=1.5, label=f"{name} (N = {int(total):,})")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0.0, top=ax.get_ylim()[1] * 1.15)
    _draw_bin_regions(ax, bin_edges, bin_names, edges[0], edges[-1])
    ax.set_xlabel("SNR")
    ax.set_ylabel("density (fraction per unit SNR)")
    ax.set_title("SNR distribution and expert bins")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center right")
    return save_figure(fig, path)


def _find_bin_edges(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any]
) -> tuple[list[float], list[str]]:
    edges = figdata.get("bin_edges")
    names = figdata.get("bin_names")
    bins = order_bins(metrics.get("bins") or [])
    if edges is None:
        edges = [b["snr_low"] for b in bins if b.get("snr_low") is not None]
    if names is None:
        names = [str(b.get("name")) for b in bins]
    return [float(e) for e in edges], [str(n) for n in names]


def _draw_bin_regions(ax, bin_edges, bin_names, x_min: float, x_max: float) -> None:
    # x in data units, y in axes units: names sit at the top whatever the counts.
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    for edge in bin_edges:
        if x_min < edge < x_max:
            ax.axvline(edge, color="black", linestyle="--", linewidth=1.0)
    bounds = [-math.inf, *bin_edges, math.inf]
    if len(bin_names) != len(bounds) - 1:
        return
    for name, lo, hi in zip(bin_names, bounds[:-1], bounds[1:], strict=True):
        lo, hi = max(lo, x_min), min(hi, x_max)
        if hi <= lo:
            continue  # the region lies outside the plotted SNR range
        ax.text(
            (lo + hi) / 2,
            0.96,
            name,
            transform=transform,
            ha="center",
            va="top",
            fontsize=12,
            fontweight="bold",
        )
