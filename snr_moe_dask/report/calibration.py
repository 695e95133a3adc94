"""The report's calibration section and figure: is the predicted uncertainty the real
error? z = (prediction - truth) / sigma should have std 1 and |z| <= 1 for 68 %."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .canvas import new_figure, save_figure


def _section(metrics: Mapping[str, Any]) -> dict:
    return metrics.get("calibration") or {}


def render_calibration(metrics: Mapping[str, Any]) -> list[str]:
    """The section (heading and body), or nothing for a model without an error model."""
    cal = _section(metrics)
    if not cal:
        return []
    names = [b["name"] for b in metrics.get("bins", [])]
    lo, hi = cal["targets"]["z_std"]
    c_lo, c_hi = cal["targets"]["coverage_1sigma"]
    rows = [
        "| Routing | | all | " + " | ".join(names) + " | meets targets |",
        "|" + "---|" * (len(names) + 4),
    ]
    for r, entry in cal["by_routing"].items():
        cells = [entry["overall"], *(entry["bins"][n] for n in names)]
        ok = "yes" if entry["meets_targets"] else "**no**"
        rows.append(
            f"| {r} | std(z) | " + " | ".join(_fmt(c["z_std"]) for c in cells) + f" | {ok} |"
        )
        rows.append(
            "| | share \\|z\\| ≤ 1 | "
            + " | ".join(_fmt(c["coverage_1sigma"], pct=True) for c in cells)
            + " | |"
        )
        rows.append("| | n | " + " | ".join(f"{c['n']:,}" for c in cells) + " | |")
    text = [
        f"Each prediction's 1-sigma uncertainty comes from the model's error model "
        f"({cal['method']}, on {cal.get('n_calibration_spectra') or 0:,} training spectra), "
        f"mixed over the gate's probabilities for soft routing. z = (prediction − truth) / "
        f"sigma per {cal['grouped_by']}; calibrated means std(z) in [{lo:g}, {hi:g}] and "
        f"{c_lo:.0%}-{c_hi:.0%} of the spectra with |z| ≤ 1 in every bin.",
        "",
        "\n".join(rows),
    ]
    return ["## Calibrated uncertainties", "\n".join(text)]


def _fmt(value, pct: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.1%}" if pct else f"{value:.3f}"


def plot_calibration(metrics: Mapping[str, Any], path: str | Path) -> Path | None:
    """std(z) and the share with |z| <= 1 per bin, one line per routing, over the
    target bands; None without an error model."""
    cal = _section(metrics)
    if not cal:
        return None
    names = [b["name"] for b in metrics.get("bins", [])]
    fig = new_figure(8.0, 3.2)
    ax_std, ax_cov = fig.subplots(1, 2)
    x = np.arange(len(names))
    for ax, key, band, label in (
        (ax_std, "z_std", cal["targets"]["z_std"], "std of z = (pred − truth) / σ"),
        (ax_cov, "coverage_1sigma", cal["targets"]["coverage_1sigma"], "share with |z| ≤ 1"),
    ):
        ax.axhspan(*band, color="#2ca02c", alpha=0.15, label="target")
        for r, entry in cal["by_routing"].items():
            values = [entry["bins"][n][key] for n in names]
            ax.plot(x, values, marker="o", label=r)
        ax.set_xticks(x, names)
        ax.set_xlabel(cal["grouped_by"])
        ax.set_ylabel(label)
    ax_std.axhline(1.0, color="black", lw=0.8, ls="--")
    ax_cov.axhline(0.6827, color="black", lw=0.8, ls="--")
    ax_cov.legend(fontsize=7)
    fig.suptitle("Calibration of the predicted uncertainties", fontsize=9)
    return save_figure(fig, path)
