"""The report's bar and heatmap figures: R² overall and per bin, and ΔR² per bin.

Each ``plot_*`` function takes the ``metrics`` mapping (as in metrics.json),
the ``figdata`` mapping (pre-aggregated histograms) and an output path, and
returns the path of the PNG it wrote. :func:`write_figures` draws them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from .canvas import GLOBAL_COLOR, MOE_COLOR, new_figure, save_figure
from .grid_figures import write_grid_figures
from .histograms import plot_pred_vs_true, plot_snr_distribution
from .routing_figures import write_routing_figures
from .text import (
    as_float,
    find_bin_ci,
    find_overall_ci,
    find_overall_delta,
    format_snr_range,
    label_target,
    name_model,
    order_bins,
    sample_name,
)

#: Stable file name of each figure inside ``<out_dir>/figures/``.
FIGURE_FILES: dict[str, str] = {
    "r2_overall": "r2_overall.png",
    "r2_bins": "r2_bins.png",
    "pred_vs_true": "pred_vs_true.png",
    "delta_heatmap": "delta_heatmap.png",
    "snr_distribution": "snr_distribution.png",
}


def plot_r2_overall(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any] | None, path: str | Path
) -> Path:
    """Bar chart of the global and MoE R² on the whole test set.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``; uses ``overall`` and
        ``delta_r2_ci95["overall"]``.
    figdata : mapping or None
        Unused; accepted so every ``plot_*`` has the same signature.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        The written PNG.
    """
    overall = metrics.get("overall") or {}
    names = ["Global Ridge", name_model(metrics.get("routing"))]
    values = [as_float(overall.get("r2_global")), as_float(overall.get("r2_moe"))]

    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    heights = [0.0 if math.isnan(v) else v for v in values]
    bars = ax.bar(names, heights, color=[GLOBAL_COLOR, MOE_COLOR], width=0.55)
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            "–" if math.isnan(value) else f"{value:.4f}",
            (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0.0)),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
        )
    top = max([h for h in heights] + [0.0])
    bottom = min([h for h in heights] + [0.0])
    # Headroom for the value labels and the ΔR² box above the bars.
    ax.set_ylim(bottom * 1.15, top * 1.3 if top > 0 else 1.0)
    ax.set_ylabel(f"R² on {sample_name(metrics)}")
    ax.set_title(f"{label_target(metrics.get('target'))}: global vs mixture of experts")
    ax.text(
        0.5,
        0.97,
        _format_delta_text(find_overall_delta(metrics), find_overall_ci(metrics)),
        transform=ax.transAxes,
        ha="center",
        va="top",
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save_figure(fig, path)


def _format_delta_text(delta: float, ci: tuple[float, float] | None) -> str:
    if math.isnan(delta):
        return "ΔR² = –"
    text = f"ΔR² = {delta:+.4f}"
    if ci is not None:
        text += f"\n95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]"
    return text


def plot_r2_bins(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any] | None, path: str | Path
) -> Path:
    """Grouped bars of expert and global R² in each SNR bin.

    The expert bar carries the 95 % CI of ΔR² shifted onto the expert's scale
    (``r2_global + ci``), so a bar whose interval stays above the global bar is
    a significant gain. Bins without a finite R² are left empty and labelled.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``; uses ``bins``.
    figdata : mapping or None
        Unused; accepted so every ``plot_*`` has the same signature.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        The written PNG.
    """
    bins = order_bins(metrics.get("bins") or [])
    x = np.arange(len(bins), dtype=float)
    width = 0.38
    r2_global = np.array([as_float(b.get("r2_global")) for b in bins])
    r2_expert = np.array([as_float(b.get("r2_expert")) for b in bins])

    fig = new_figure(max(6.0, 1.6 * len(bins) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.bar(x - width / 2, np.nan_to_num(r2_global), width, color=GLOBAL_COLOR, label="Global")
    hatches = ["//" if b.get("fallback") else "" for b in bins]
    expert_bars = ax.bar(
        x + width / 2,
        np.nan_to_num(r2_expert),
        width,
        color=MOE_COLOR,
        hatch=hatches,
        edgecolor="white",
        label="Expert",
    )
    _draw_bin_cis(ax, metrics, bins, x + width / 2, r2_global)

    for bar, b, value in zip(expert_bars, bins, r2_expert, strict=True):
        if math.isnan(value):
            ax.annotate(
                "no data",
                (bar.get_x() + bar.get_width() / 2, 0.0),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90,
            )
        elif b.get("fallback"):
            ax.annotate(
                "fallback",
                (bar.get_x() + bar.get_width() / 2, value / 2),
                ha="center",
                va="center",
                fontsize=8,
                rotation=90,
                color="white",
            )

    ax.set_xticks(x, [_label_bin(b) for b in bins])
    ax.set_ylabel(f"R² on {sample_name(metrics, spectra=True)} of the bin")
    what = "cell" if any("snr_low" not in b for b in bins) else "SNR bin"
    ax.set_xlabel(what)
    ax.set_title(f"{label_target(metrics.get('target'))}: R² per {what} (error bar: 95% CI of ΔR²)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    finite = np.concatenate([r2_global[np.isfinite(r2_global)], r2_expert[np.isfinite(r2_expert)]])
    top = float(finite.max()) if finite.size else 1.0
    ax.set_ylim(top=max(top * 1.2, 0.1))
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save_figure(fig, path)


def _label_bin(b: Mapping[str, Any]) -> str:
    if "snr_low" not in b:  # a cell of other keys: its name holds its ranges
        return str(b.get("name")).replace("|", "\n")
    return (
        f"{b.get('name')} ({format_snr_range(b.get('snr_low'), b.get('snr_high'), compact=True)})"
    )


def _draw_bin_cis(ax, metrics, bins, x, r2_global) -> None:
    # Drawn as a symmetric error bar around the CI midpoint: the CI need not
    # contain the expert R² itself (percentile bootstrap), and matplotlib
    # rejects negative asymmetric errors.
    for xi, b, g in zip(x, bins, r2_global, strict=True):
        ci = find_bin_ci(metrics, b)
        if ci is None or math.isnan(g):
            continue
        lower, upper = g + ci[0], g + ci[1]
        ax.errorbar(
            xi,
            (lower + upper) / 2,
            yerr=(upper - lower) / 2,
            fmt="none",
            ecolor="black",
            capsize=4,
            linewidth=1.2,
        )


_HEATMAP_METRICS = [("R²", "r2"), ("MAE", "mae"), ("RMSE", "rmse")]


def plot_delta_heatmap(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any] | None, path: str | Path
) -> Path:
    """Heatmap of expert minus global R², MAE and RMSE for every bin.

    Rows are bins from high to low SNR, as in the report table. Cells are
    annotated with the difference; missing values are grey with a dash.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``; uses ``bins``.
    figdata : mapping or None
        Unused; accepted so every ``plot_*`` has the same signature.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
        The written PNG.
    """
    bins = order_bins(metrics.get("bins") or [], descending=True)
    delta = np.array(
        [
            [
                as_float(b.get(f"{key}_expert")) - as_float(b.get(f"{key}_global"))
                for _, key in _HEATMAP_METRICS
            ]
            for b in bins
        ],
        dtype=float,
    ).reshape(len(bins), len(_HEATMAP_METRICS))
    finite = np.abs(delta[np.isfinite(delta)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")

    fig = new_figure(6.5, 1.0 + 0.75 * max(len(bins), 1) + 1.2)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(delta),
        cmap=cmap,
        norm=TwoSlopeNorm(0.0, -vmax, vmax),
        aspect="auto",
    )
    for (i, j), value in np.ndenumerate(delta):
        dark = np.isfinite(value) and abs(value) > 0.6 * vmax
        ax.text(
            j,
            i,
            "–" if not np.isfinite(value) else f"{value:+.4f}",
            ha="center",
            va="center",
            color="white" if dark else "black",
        )
    ax.set_xticks(range(len(_HEATMAP_METRICS)), [name for name, _ in _HEATMAP_METRICS])
    ax.set_yticks(
        range(len(bins)),
        [_label_bin(b) + ("\nfallback" if b.get("fallback") else "") for b in bins],
    )
    ax.tick_params(length=0)
    ax.set_title(
        "Expert minus global per SNR bin\n(R²: positive is better; MAE, RMSE: negative is better)",
        fontsize=11,
    )
    fig.colorbar(image, ax=ax, label="expert − global")
    return save_figure(fig, path)


_PLOTTERS = {
    "r2_overall": plot_r2_overall,
    "r2_bins": plot_r2_bins,
    "pred_vs_true": plot_pred_vs_true,
    "delta_heatmap": plot_delta_heatmap,
    "snr_distribution": plot_snr_distribution,
}


def write_figures(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any], out_dir: str | Path
) -> dict[str, Path]:
    """Write all report figures into ``<out_dir>/figures/``.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``.
    figdata : mapping
        Pre-aggregated histograms, see :func:`plot_pred_vs_true` and
        :func:`plot_snr_distribution`.
    out_dir : str or Path
        Run output directory.

    Returns
    -------
    dict of str to Path
        Figure key (``"r2_overall"``, ``"r2_bins"``, ``"pred_vs_true"``,
        ``"delta_heatmap"``, ``"snr_distribution"``, and where they apply
        ``"confusion"``, ``"rho"``, ``"cv_curves"``, ``"delta_grid"`` and
        ``"edge_search"``) to the written PNG.
    """
    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        key: plot(metrics, figdata, fig_dir / FIGURE_FILES[key]) for key, plot in _PLOTTERS.items()
    }
    figures.update(write_routing_figures(metrics, fig_dir))
    figures.update(write_grid_figures(metrics, fig_dir))
    return figures
