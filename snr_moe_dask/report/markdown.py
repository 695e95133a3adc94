"""Markdown report of one SNR-binned mixture-of-experts run.

The report follows the layout of the source study (LOGG-SNR-ORACLE-01):
summary, hypothesis verdict, per-bin table from high to low SNR, numeric
results, then configuration, timings and figures. Unlike the source it judges
the hypothesis on the bootstrap confidence interval, not on the point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .calibration import render_calibration
from .cells import render_cell_grid, render_edge_search
from .figures import write_figures
from .sections import (
    render_alpha_cv,
    render_configuration,
    render_coverage,
    render_figures,
    render_routings,
    render_timings,
)
from .text import (
    DASH,
    cell_label,
    describe_bin,
    describe_keys,
    find_bin_ci,
    find_overall_ci,
    find_overall_delta,
    format_alpha,
    format_ci,
    format_count,
    format_delta,
    format_r2,
    format_snr_range,
    is_keyed,
    is_missing,
    label_target,
    name_model,
    order_bins,
)

__all__ = ["judge_hypothesis", "render_report", "write_report"]

DEFAULT_THRESHOLD = 0.02
FALLBACK_MARK = "†"

_ROUTING_TEXT = {
    "oracle": "each spectrum is routed by its true SNR (oracle routing)",
    "soft": "each prediction is the gate-probability-weighted mix of the experts (soft routing)",
}


# ---------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------


def judge_hypothesis(
    delta: float, ci: tuple[float, float] | None, threshold: float = DEFAULT_THRESHOLD
) -> tuple[bool, str]:
    """Decide whether the mixture beats the global model by ``threshold``.

    PASS needs the lower bound of the 95 % CI to reach the threshold: a point
    estimate above it is not enough, because with a small test set the gain
    may be noise.

    Parameters
    ----------
    delta : float
        Point estimate of ΔR² (MoE minus global).
    ci : tuple of float or None
        95 % confidence interval of ΔR²; None when no bootstrap was run.
    threshold : float, default 0.02
        Smallest ΔR² that makes the mixture worth it.

    Returns
    -------
    passed : bool
        The verdict.
    reason : str
        One sentence explaining it.
    """
    if math.isnan(delta):
        return False, "ΔR² could not be computed."
    if ci is None:
        return False, "no confidence interval is available, so the gain cannot be judged."
    if ci[0] >= threshold:
        return True, f"the 95% CI lower bound {ci[0]:+.4f} reaches the threshold {threshold:g}."
    if delta >= threshold:
        return False, (
            f"the point estimate reaches {threshold:g} but the CI lower bound {ci[0]:+.4f} "
            "does not: not significant at 95%."
        )
    return False, f"the point estimate is below the threshold {threshold:g}."


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def render_title(metrics: Mapping[str, Any]) -> str:
    """Return the report title."""
    routing = str(metrics.get("routing") or "routed").capitalize()
    target = label_target(metrics.get("target"))
    if is_keyed(metrics):
        names = " × ".join(str(k.get("name")) for k in metrics.get("keys") or [])
        return f"# {routing} mixture of experts by {names}: {target}"
    return f"# {routing} SNR-binned mixture of experts: {target}"


def render_summary(metrics: Mapping[str, Any]) -> str:
    """Return the one-paragraph summary of the run."""
    overall = metrics.get("overall") or {}
    routing = str(metrics.get("routing") or "unknown")
    bins = order_bins(metrics.get("bins") or [])
    target = metrics.get("target") or "target"
    routing_text = _ROUTING_TEXT.get(routing, f"each spectrum is routed by `{routing}` routing")
    sources = [
        f"{label} `{metrics[key]}`"
        for key, label in (("train_store", "train store"), ("test_store", "test store"))
        if metrics.get(key)
    ]
    if metrics.get("model"):
        sources.append(f"model `{metrics['model']}`")
    source_text = f" ({', '.join(sources)})" if sources else ""
    experts = (
        f"one expert per SNR bin ({len(bins)} bins: {', '.join(str(b.get('name')) for b in bins)})"
        if not is_keyed(metrics)
        else f"one expert per cell of {describe_keys(metrics)}"
    )
    if is_keyed(metrics) and routing == "oracle":
        routing_text = "each spectrum is routed by the true values of its keys (oracle routing)"
    return (
        f"Ridge regression of {label_target(target)} (target `{target}`) with one global model "
        f"and {experts}; {routing_text}. "
        f"Ridge penalty: {_summarize_alpha(metrics.get('alpha'))}. "
        f"The models were fit on {format_count(overall.get('n_train'))} training spectra and "
        f"evaluated on {format_count(overall.get('n'))} held-out test spectra. "
        f"Every number and figure below is computed from the data these metrics describe"
        f"{source_text}; none is copied from the source study."
    )


def _summarize_alpha(alpha: Any) -> str:
    if isinstance(alpha, Mapping):
        values = {format_alpha(v) for v in alpha.values()}
        if len(values) == 1:
            return f"alpha = {values.pop()} for every model"
        return "alpha chosen per model (see Configuration)"
    return f"alpha = {format_alpha(alpha)}"


def render_hypothesis(metrics: Mapping[str, Any]) -> str:
    """Return the hypothesis verdict block."""
    threshold = float((metrics.get("hypothesis") or {}).get("threshold", DEFAULT_THRESHOLD))
    delta = find_overall_delta(metrics)
    ci = find_overall_ci(metrics)
    passed, reason = judge_hypothesis(delta, ci, threshold)
    estimate = f"ΔR² = {format_delta(delta)}"
    if ci is not None:
        estimate += f" (95% CI {ci[0]:+.4f} to {ci[1]:+.4f})"
    lines = [
        f"**Hypothesis ΔR² ≥ {threshold:g}: {'PASS' if passed else 'FAIL'}**",
        "",
        f"{estimate}: {reason}",
    ]
    boot = metrics.get("bootstrap") or {}
    if boot:
        lines += [
            "",
            f"The CI comes from a bootstrap over test spectra with "
            f"{format_count(boot.get('n_resamples'))} resamples (seed {boot.get('seed', DASH)}).",
        ]
    return "\n".join(lines)


def render_bins_table(metrics: Mapping[str, Any]) -> str:
    """Return the per-bin table, bins from highest to lowest SNR (cells of other keys
    in cell order, named by their ranges)."""
    bins = order_bins(metrics.get("bins") or [], descending=True)
    n_train_total = _total_train(metrics)
    keyed = is_keyed(metrics)
    head = "| cell |" if keyed else "| bin | SNR range |"
    rows = [
        f"{head} train N (%) | test N | expert R² | global R² | ΔR² [95% CI] |",
        "|---|---|---|---|---|---|" + ("" if keyed else "---|"),
    ]
    for b in bins:
        delta_text = format_delta(find_bin_delta(b))
        ci = find_bin_ci(metrics, b)
        if ci is not None:
            delta_text += f" {format_ci(ci)}"
        where = "" if keyed else f" {format_snr_range(b.get('snr_low'), b.get('snr_high'))} |"
        rows.append(
            f"| {_bin_label(b)} |{where}"
            f" {_format_share(b.get('n_train'), n_train_total)} | {format_count(b.get('n_test'))} "
            f"| {format_r2(b.get('r2_expert'))} | {format_r2(b.get('r2_global'))} | {delta_text} |"
        )
    notes = _fallback_note(bins)
    return "\n".join(rows + ([""] + notes if notes else []))


def find_bin_delta(b: Mapping[str, Any]) -> float:
    """Return a bin's ΔR² (expert minus global), NaN when it cannot be known."""
    delta = b.get("delta_r2")
    if not is_missing(delta):
        return float(delta)
    if is_missing(b.get("r2_expert")) or is_missing(b.get("r2_global")):
        return math.nan
    return float(b["r2_expert"]) - float(b["r2_global"])


def _total_train(metrics: Mapping[str, Any]) -> float:
    total = (metrics.get("overall") or {}).get("n_train")
    if is_missing(total):
        total = sum(int(b.get("n_train") or 0) for b in metrics.get("bins") or [])
    return float(total)


def _format_share(n: Any, total: float) -> str:
    if is_missing(n):
        return DASH
    if total <= 0:
        return format_count(n)
    return f"{int(n):,} ({100.0 * int(n) / total:.1f} %)"


def _bin_label(b: Mapping[str, Any]) -> str:
    return f"{cell_label(b)}{FALLBACK_MARK if b.get('fallback') else ''}"


def _fallback_note(bins: list[dict]) -> list[str]:
    notes = []
    for b in bins:
        if b.get("fallback"):
            reason = b.get("fallback_reason") or "it has no expert of its own"
            notes.append(
                f"{FALLBACK_MARK} Fallback bin {b.get('name')}: {reason}, so its spectra are "
                "served by the global model and its expert R² is the global R²."
            )
    return notes


def render_results_table(metrics: Mapping[str, Any]) -> str:
    """Return the numeric results table: global, MoE, then each expert."""
    overall = metrics.get("overall") or {}
    rows = [
        "| model | R² | MAE | RMSE | N_train | N_test |",
        "|---|---|---|---|---|---|",
    ]
    for name, suffix in (("Global Ridge", "global"), (name_model(metrics.get("routing")), "moe")):
        rows.append(
            f"| {name} | {format_r2(overall.get(f'r2_{suffix}'))} "
            f"| {format_r2(overall.get(f'mae_{suffix}'))} "
            f"| {format_r2(overall.get(f'rmse_{suffix}'))} "
            f"| {format_count(overall.get('n_train'))} | {format_count(overall.get('n'))} |"
        )
    for b in order_bins(metrics.get("bins") or [], descending=True):
        rows.append(
            f"| bin {_bin_label(b)} | {format_r2(b.get('r2_expert'))} "
            f"| {format_r2(b.get('mae_expert'))} | {format_r2(b.get('rmse_expert'))} "
            f"| {format_count(b.get('n_train'))} | {format_count(b.get('n_test'))} |"
        )
    return "\n".join(rows)


def render_findings(metrics: Mapping[str, Any]) -> str:
    """Return bullet points computed from the per-bin numbers."""
    bins = order_bins(metrics.get("bins") or [], descending=True)
    scored = [b for b in bins if not math.isnan(find_bin_delta(b))]
    if not scored:
        return "- No bin has a finite ΔR²."
    better = [b for b in scored if find_bin_delta(b) > 0]
    significant = [b for b in scored if (ci := find_bin_ci(metrics, b)) is not None and ci[0] > 0]
    best = max(scored, key=find_bin_delta)
    word = "cells" if any("snr_low" not in b for b in bins) else "bins"
    lines = [
        f"- The expert beat the global model in {len(better)} of {len(scored)} {word} with a "
        f"finite ΔR²; the CI excludes zero in {len(significant)} of them"
        + (f" ({', '.join(str(b['name']) for b in significant)})." if significant else "."),
        f"- Largest gain: bin {describe_bin(best)}, ΔR² = {format_delta(find_bin_delta(best))}.",
    ]
    for b in bins:
        if math.isnan(find_bin_delta(b)):
            lines.append(
                f"- Bin {b.get('name')} has no ΔR²: R² is undefined on its "
                f"{format_count(b.get('n_test'))} test spectra (it needs at least 2)."
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def render_report(
    metrics: Mapping[str, Any], figures: Mapping[str, Path], out_dir: str | Path
) -> str:
    """Render the markdown report of one run.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``.
    figures : mapping of str to Path
        Figure key to PNG path, as returned by
        :func:`snr_moe_dask.report.figures.write_figures`.
    out_dir : str or Path
        Directory the report will be written to; figure links are relative to
        it.

    Returns
    -------
    str
        The report as markdown.
    """
    sections = [
        render_title(metrics),
        render_summary(metrics),
        render_hypothesis(metrics),
        "## Results per cell" if is_keyed(metrics) else "## Results per SNR bin",
        render_bins_table(metrics),
        *render_cell_grid(metrics),
        "## Numeric results",
        render_results_table(metrics),
        "## Findings",
        render_findings(metrics),
        *render_routings(metrics),
        *render_alpha_cv(metrics),
        *render_calibration(metrics),
        *render_edge_search(metrics),
        "## Coverage",
        render_coverage(metrics),
        "## Configuration",
        render_configuration(metrics),
        "## Timings",
        render_timings(metrics.get("timings")),
        "## Figures",
        render_figures(metrics, figures, out_dir),
    ]
    text = "\n\n".join(sections) + "\n"
    return on_training_set(text) if metrics.get("test_is_training_set") else text


TRAINING_SET_NOTE = (
    "> **Training set, not held-out.** This evaluation ran on the model's own training "
    "store (`--allow-training-store`): every number below measures the fit on spectra it "
    "was trained on, not its accuracy on new ones."
)
_HELD_OUT_WORDS = (
    ("held-out test spectra", "training-set spectra (not held out)"),
    ("test spectra", "training-set spectra"),
    ("test set", "training set"),
)


def on_training_set(text: str) -> str:
    """The report of an evaluation on the training store: a note under the title,
    and "training set" wherever it would say held-out test spectra."""
    for old, new in _HELD_OUT_WORDS:
        text = text.replace(old, new)
    title, _, rest = text.partition("\n\n")
    return f"{title}\n\n{TRAINING_SET_NOTE}\n\n{rest}"


def write_report(
    metrics: Mapping[str, Any], figdata: Mapping[str, Any], out_dir: str | Path
) -> Path:
    """Write the figures and ``<out_dir>/report.md``.

    Parameters
    ----------
    metrics : mapping
        Metrics as loaded from ``metrics.json``.
    figdata : mapping
        Pre-aggregated histograms for the figures.
    out_dir : str or Path
        Run output directory; created if missing.

    Returns
    -------
    Path
        Path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(metrics, figdata, out_dir)
    path = out_dir / "report.md"
    path.write_text(render_report(metrics, figures, out_dir), encoding="utf-8")
    return path
