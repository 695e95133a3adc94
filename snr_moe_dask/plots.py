"""Figures for the SNR-binned mixture-of-experts report.

Every figure is built on its own :class:`matplotlib.figure.Figure` and written
with ``fig.savefig``. Pyplot is never imported, so no global figure state is
shared and the functions are safe to call from worker threads.

Each ``plot_*`` function takes the ``metrics`` dict (as loaded from
``metrics.json``), the ``figdata`` dict (pre-aggregated histograms) and an
output path, and returns the path of the PNG it wrote. Raw per-spectrum data is
never needed: the pipeline reduces it to histograms first, so plotting a test
set of millions of spectra costs the same as plotting a thousand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

__all__ = [
    "FIGURE_FILES",
    "format_snr_range",
    "label_target",
    "plot_delta_heatmap",
    "plot_pred_vs_true",
    "plot_r2_bins",
    "plot_r2_overall",
    "plot_snr_distribution",
    "write_figures",
]

DPI = 120

#: Stable file name of each figure inside ``<out_dir>/figures/``.
FIGURE_FILES: dict[str, str] = {
    "r2_overall": "r2_overall.png",
    "r2_bins": "r2_bins.png",
    "pred_vs_true": "pred_vs_true.png",
    "delta_heatmap": "delta_heatmap.png",
    "snr_distribution": "snr_distribution.png",
}

_TARGET_LABELS = {"logg": "log g", "teff": "Teff", "mh": "[M/H]"}

_GLOBAL_COLOR = "#7f7f7f"
_MOE_COLOR = "#1f77b4"


# ---------------------------------------------------------------------------
# Small shared helpers (also used by ``report``)
# ---------------------------------------------------------------------------


def label_target(target: str | None) -> str:
    """Return the human-readable name of a regression target.

    Parameters
    ----------
    target : str or None
        Target key as stored in the metrics, e.g. ``"logg"``.

    Returns
    -------
    str
        ``"log g"``, ``"Teff"``, ``"[M/H]"``, or the key itself when unknown.
    """
    if not target:
        return "target"
    return _TARGET_LABELS.get(str(target).lower(), str(target))


def format_snr_range(low: float | None, high: float | None, *, compact: bool = False) -> str:
    """Describe the SNR interval ``low < SNR <= high`` of one bin.

    Parameters
    ----------
    low, high : float or None
        Bin edges; ``None`` means unbounded on that side.
    compact : bool, default False
        Drop the spaces, for tight axis tick labels.

    Returns
    -------
    str
        For example ``"SNR ≤ 2"``, ``"2 < SNR ≤ 4"`` or ``"SNR > 7"``.
    """
    if low is None and high is None:
        text = "all SNR"
    elif low is None:
        text = f"SNR ≤ {high:g}"
    elif high is None:
        text = f"SNR > {low:g}"
    else:
        text = f"{low:g} < SNR ≤ {high:g}"
    return text.replace(" ", "") if compact else text


def sample_name(metrics: Mapping[str, Any], *, spectra: bool = False) -> str:
    """What the evaluation scored: the test set, or (when allowed) the training set."""
    word = "training" if metrics.get("test_is_training_set") else "test"
    return f"{word} spectra" if spectra else f"{word} set"


def is_missing(value: Any) -> bool:
    """Return True for ``None`` and NaN, the two ways JSON can carry "no value"."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def name_model(routing: str | None) -> str:
    """Return the display name of the mixture, e.g. ``"Oracle MoE"``."""
    return f"{str(routing or 'routed').capitalize()} MoE"


def order_bins(bins: Sequence[Mapping[str, Any]], *, descending: bool = False) -> list[dict]:
    """Sort bins by SNR, lowest first unless ``descending``.

    The source study lists bins from high to low SNR in tables but plots them
    along an increasing SNR axis, so both orders are needed.
    """

    def key(b: Mapping[str, Any]) -> float:
        low = b.get("snr_low")
        return -math.inf if low is None else float(low)

    return sorted((dict(b) for b in bins), key=key, reverse=descending)


def find_bin_ci(metrics: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float] | None:
    """Return the 95 % CI of one bin's ΔR², or None when it is unknown.

    The CI may be stored on the bin itself or in the top-level
    ``delta_r2_ci95`` mapping; the bin's own value wins.
    """
    ci = b.get("delta_r2_ci95")
    if ci is None:
        ci = (metrics.get("delta_r2_ci95") or {}).get(b.get("name"))
    return _clean_ci(ci)


def find_overall_ci(metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    """Return the 95 % CI of the overall ΔR², or None when it is unknown."""
    ci = (metrics.get("delta_r2_ci95") or {}).get("overall")
    if ci is None:
        ci = (metrics.get("overall") or {}).get("delta_r2_ci95")
    return _clean_ci(ci)


def find_overall_delta(metrics: Mapping[str, Any]) -> float:
    """Return the overall ΔR² (MoE minus global), NaN when unknown."""
    overall = metrics.get("overall") or {}
    delta = overall.get("delta_r2")
    if is_missing(delta):
        r2_g, r2_m = overall.get("r2_global"), overall.get("r2_moe")
        if is_missing(r2_g) or is_missing(r2_m):
            return math.nan
        return float(r2_m) - float(r2_g)
    return float(delta)


def _clean_ci(ci: Any) -> tuple[float, float] | None:
    if ci is None or len(ci) != 2 or is_missing(ci[0]) or is_missing(ci[1]):
        return None
    return float(ci[0]), float(ci[1])


def _as_float(value: Any) -> float:
    return math.nan if is_missing(value) else float(value)


def new_figure(width: float, height: float) -> Figure:
    # Constrained layout keeps labels, colorbars and titles from overlapping
    # without hand-tuned margins.
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


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
    values = [_as_float(overall.get("r2_global")), _as_float(overall.get("r2_moe"))]

    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    heights = [0.0 if math.isnan(v) else v for v in values]
    bars = ax.bar(names, heights, color=[_GLOBAL_COLOR, _MOE_COLOR], width=0.55)
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
    r2_global = np.array([_as_float(b.get("r2_global")) for b in bins])
    r2_expert = np.array([_as_float(b.get("r2_expert")) for b in bins])

    fig = new_figure(max(6.0, 1.6 * len(bins) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.bar(x - width / 2, np.nan_to_num(r2_global), width, color=_GLOBAL_COLOR, label="Global")
    hatches = ["//" if b.get("fallback") else "" for b in bins]
    expert_bars = ax.bar(
        x + width / 2,
        np.nan_to_num(r2_expert),
        width,
        color=_MOE_COLOR,
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
    ax.set_xlabel("SNR bin")
    ax.set_title(
        f"{label_target(metrics.get('target'))}: R² per SNR bin (error bar: 95% CI of ΔR²)"
    )
    ax.axhline(0.0, color="black", linewidth=0.8)
    finite = np.concatenate([r2_global[np.isfinite(r2_global)], r2_expert[np.isfinite(r2_expert)]])
    top = float(finite.max()) if finite.size else 1.0
    ax.set_ylim(top=max(top * 1.2, 0.1))
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save_figure(fig, path)


def _label_bin(b: Mapping[str, Any]) -> str:
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
                _as_float(b.get(f"{key}_expert")) - _as_float(b.get(f"{key}_global"))
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
    styles = [("train", "count_train", _GLOBAL_COLOR), ("test", "count_test", _MOE_COLOR)]
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
        ``"confusion"``, ``"rho"`` and ``"cv_curves"``) to the written PNG.
    """
    from .routing_plots import write_routing_figures

    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        key: plot(metrics, figdata, fig_dir / FIGURE_FILES[key]) for key, plot in _PLOTTERS.items()
    }
    figures.update(write_routing_figures(metrics, fig_dir))
    return figures
