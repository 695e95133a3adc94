"""Markdown report of one SNR-binned mixture-of-experts run.

The report follows the layout of the source study (LOGG-SNR-ORACLE-01):
summary, hypothesis verdict, per-bin table from high to low SNR, numeric
results, then configuration, timings and figures. Unlike the source it judges
the hypothesis on the bootstrap confidence interval, not on the point estimate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .plots import (
    FIGURE_FILES,
    find_bin_ci,
    find_overall_ci,
    find_overall_delta,
    format_snr_range,
    is_missing,
    label_target,
    name_model,
    order_bins,
    write_figures,
)

__all__ = ["judge_hypothesis", "render_report", "write_report"]

DEFAULT_THRESHOLD = 0.02
DASH = "–"
FALLBACK_MARK = "†"

_ROUTING_TEXT = {
    "oracle": "each spectrum is routed by its true SNR (oracle routing)",
    "gate": "each spectrum is routed by a gate that predicts its SNR bin from the observation",
    "soft": "each prediction is the gate-probability-weighted mix of the experts (soft routing)",
}

_FIGURE_CAPTIONS = {
    "r2_overall": "Global vs mixture-of-experts R² on the whole test set, with the ΔR² and "
    "its 95% bootstrap CI.",
    "r2_bins": "Per-bin R² of each expert and of the global model on the same spectra; the "
    "error bar is the 95% CI of ΔR² placed on the global R².",
    "pred_vs_true": "Predicted vs true {target}, from a 2-D histogram of the test set; "
    "cells are colored by the mean SNR of their spectra.",
    "delta_heatmap": "Expert minus global R², MAE and RMSE per bin "
    "(for MAE and RMSE, negative is better).",
    "snr_distribution": "SNR distribution of the train and test sets with the bin edges.",
    "confusion": "True vs routed SNR bin for each routing that does not know the true SNR "
    "(counts; shading is the share of the true bin).",
    "rho": "ρ, the share of the oracle's R² gain each routing keeps, with its 95% bootstrap CI.",
    "cv_curves": "Cross-validation error against alpha per expert (K-fold: band of ±1 "
    "standard error across folds; GCV: the GCV score), with the chosen and the fixed alpha.",
}


# ---------------------------------------------------------------------------
# Number formatting
# ---------------------------------------------------------------------------


def format_r2(value: Any) -> str:
    """Format an R², MAE or RMSE with 4 decimals, or a dash when missing."""
    return DASH if is_missing(value) else f"{float(value):.4f}"


def format_delta(value: Any) -> str:
    """Format a difference with an explicit sign and 4 decimals."""
    return DASH if is_missing(value) else f"{float(value):+.4f}"


def format_count(value: Any) -> str:
    """Format a count with thousands separators."""
    return DASH if is_missing(value) else f"{int(value):,}"


def format_ci(ci: tuple[float, float] | None) -> str:
    """Format a CI as ``[+lo, +hi]``."""
    return DASH if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def format_alpha(value: Any) -> str:
    """Format a ridge penalty compactly (``100000``, ``3e+06``)."""
    return DASH if is_missing(value) else f"{float(value):g}"


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
    return f"# {routing} SNR-binned mixture of experts: {label_target(metrics.get('target'))}"


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
    return (
        f"Ridge regression of {label_target(target)} (target `{target}`) with one global model "
        f"and one expert per SNR bin ({len(bins)} bins: "
        f"{', '.join(str(b.get('name')) for b in bins)}); {routing_text}. "
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
    """Return the per-bin table, bins from highest to lowest SNR."""
    bins = order_bins(metrics.get("bins") or [], descending=True)
    n_train_total = _total_train(metrics)
    rows = [
        "| bin | SNR range | train N (%) | test N | expert R² | global R² | ΔR² [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in bins:
        delta_text = format_delta(find_bin_delta(b))
        ci = find_bin_ci(metrics, b)
        if ci is not None:
            delta_text += f" {format_ci(ci)}"
        rows.append(
            f"| {_bin_label(b)} | {format_snr_range(b.get('snr_low'), b.get('snr_high'))} "
            f"| {_format_share(b.get('n_train'), n_train_total)} | {format_count(b.get('n_test'))} "
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


def _describe_bin(b: Mapping[str, Any]) -> str:
    return f"{b.get('name')} ({format_snr_range(b.get('snr_low'), b.get('snr_high'))})"


def _bin_label(b: Mapping[str, Any]) -> str:
    return f"{b.get('name')}{FALLBACK_MARK if b.get('fallback') else ''}"


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
    lines = [
        f"- The expert beat the global model in {len(better)} of {len(scored)} bins with a "
        f"finite ΔR²; the CI excludes zero in {len(significant)} of them"
        + (f" ({', '.join(str(b['name']) for b in significant)})." if significant else "."),
        f"- Largest gain: bin {_describe_bin(best)}, ΔR² = {format_delta(find_bin_delta(best))}.",
    ]
    for b in bins:
        if math.isnan(find_bin_delta(b)):
            lines.append(
                f"- Bin {b.get('name')} has no ΔR²: R² is undefined on its "
                f"{format_count(b.get('n_test'))} test spectra (it needs at least 2)."
            )
    return "\n".join(lines)


def render_coverage(metrics: Mapping[str, Any]) -> str:
    """Return the coverage and exclusion lines."""
    lines = []
    coverage = metrics.get("coverage")
    if not is_missing(coverage):
        lines.append(f"- Coverage: {100.0 * float(coverage):.2f} % of the test set.")
    excluded = metrics.get("excluded")
    if isinstance(excluded, Mapping) and excluded:
        lines.extend(_render_excluded(excluded))
    return "\n".join(lines) if lines else "- Coverage was not recorded."


def _total(value: Any) -> int:
    """A count, or the sum of a mapping of counts (per bin)."""
    if isinstance(value, Mapping):
        return sum(_total(v) for v in value.values())
    return 0 if is_missing(value) else int(value)


def _render_excluded(excluded: Mapping[str, Any]) -> list[str]:
    lines = []
    train = excluded.get("train")
    if isinstance(train, Mapping):
        reasons = {
            "more bad pixels than allowed": train.get("excluded_bad"),
            "missing target": train.get("excluded_label"),
            "no SNR": train.get("excluded_no_snr"),
        }
        total = sum(_total(v) for v in reasons.values())
        detail = ", ".join(f"{k}: {format_count(_total(v))}" for k, v in reasons.items())
        lines.append(
            f"- Training spectra excluded: {format_count(total)} ({detail}); bad pixels "
            f"imputed in the spectra used: {format_count(_total(train.get('bad_pixels')))}."
        )
    test = excluded.get("test")
    if isinstance(test, Mapping):
        lines.append(
            f"- Test spectra excluded from the metrics (missing target or too many bad pixels): "
            f"{format_count(_total(test.get('excluded')))}; spectra without an SNR, served by "
            f"the global model: {format_count(_total(test.get('no_snr_served_by_global')))}; "
            f"bad pixels: {format_count(_total(test.get('bad_pixels')))}."
        )
    return lines


def render_configuration(metrics: Mapping[str, Any]) -> str:
    """Return the configuration section: penalties, bins, routing, precision, cluster."""
    bins = order_bins(metrics.get("bins") or [])
    edges = [b["snr_low"] for b in bins if b.get("snr_low") is not None]
    config = metrics.get("config") or {}
    cluster = metrics.get("cluster", config.get("cluster") if isinstance(config, Mapping) else None)
    lines = [
        f"- Target: `{metrics.get('target', DASH)}` ({label_target(metrics.get('target'))})",
        f"- Routing: `{metrics.get('routing', DASH)}`",
        f"- Precision: `{metrics.get('precision', DASH)}`",
        f"- SNR bin edges: {', '.join(f'{e:g}' for e in edges) or DASH}; bins "
        + ", ".join(_describe_bin(b) for b in bins),
        f"- Cluster: {_format_cluster(cluster)}",
    ]
    for key, label in (
        ("model", "Model"),
        ("train_store", "Train store"),
        ("test_store", "Test store"),
    ):
        if metrics.get(key):
            lines.append(f"- {label}: `{metrics[key]}`")
    lines += ["", render_alpha_table(metrics.get("alpha"))]
    if config:
        lines += ["", "Full configuration:", "", "```yaml", dump_config(config).rstrip(), "```"]
    return "\n".join(lines)


def _format_cluster(cluster: Any) -> str:
    if cluster is None or cluster == {}:
        return DASH
    if isinstance(cluster, Mapping):
        return ", ".join(f"{k} = `{v}`" for k, v in cluster.items())
    return f"`{cluster}`"


def render_alpha_table(alpha: Any) -> str:
    """Return the ridge penalty of every model as a table."""
    items = alpha.items() if isinstance(alpha, Mapping) else [("all models", alpha)]
    rows = ["| model | alpha |", "|---|---|"]
    rows += [f"| {name} | {format_alpha(value)} |" for name, value in items]
    return "\n".join(rows)


def dump_config(config: Any) -> str:
    """Serialise a free-form config as YAML, or JSON when YAML cannot represent it."""
    try:
        return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        # safe_dump refuses arbitrary objects; JSON with str() still shows them.
        return json.dumps(config, indent=2, default=str, ensure_ascii=False)


def render_timings(timings: Mapping[str, Any] | None) -> str:
    """Return wall-clock seconds and minutes per pipeline stage."""
    if not timings:
        return "Timings were not recorded."
    rows = ["| stage | seconds | minutes |", "|---|---|---|"]
    total = 0.0
    for stage, seconds in timings.items():
        if is_missing(seconds):
            rows.append(f"| {stage} | {DASH} | {DASH} |")
            continue
        total += float(seconds)
        rows.append(f"| {stage} | {float(seconds):,.1f} | {float(seconds) / 60:,.2f} |")
    rows.append(f"| **total** | **{total:,.1f}** | **{total / 60:,.2f}** |")
    return "\n".join(rows)


def render_figures(
    metrics: Mapping[str, Any], figures: Mapping[str, Path], out_dir: str | Path
) -> str:
    """Embed the figures with links relative to ``out_dir``."""
    if not figures:
        return "No figures were written."
    order = [k for k in FIGURE_FILES if k in figures] + [
        k for k in figures if k not in FIGURE_FILES
    ]
    target = label_target(metrics.get("target"))
    blocks = []
    for number, key in enumerate(order, start=1):
        caption = _FIGURE_CAPTIONS.get(key, key.replace("_", " ")).format(target=target)
        link = _relative_link(figures[key], out_dir)
        blocks.append(f"![{caption}]({link})\n\n*Figure {number}. {caption}*")
    return "\n\n".join(blocks)


def _relative_link(path: str | Path, out_dir: str | Path) -> str:
    path, out_dir = Path(path), Path(out_dir)
    # A relative path may already be relative to out_dir ("figures/x.png") or,
    # as write_figures returns it, relative to the working directory.
    if not path.is_absolute() and (out_dir / path).exists():
        return path.as_posix()
    # Markdown links use forward slashes on every platform.
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def render_routings(metrics: Mapping[str, Any]) -> list[str]:
    """The routing comparison section (heading and body), or nothing for one routing."""
    routings = metrics.get("routings") or {}
    by = routings.get("by_routing") or {}
    if len(by) < 2 and not routings.get("gate"):
        return []
    names = [b["name"] for b in metrics.get("bins", [])]
    head = (
        "| Routing | R² | ΔR² vs global | ρ [95% CI] | gate accuracy | fallback rate | "
        + " | ".join(f"R² {n}" for n in names)
        + " |"
    )
    rows = [head, "|" + "---|" * (6 + len(names))]
    rows.append(
        f"| global | {format_r2(routings.get('r2_global'))} | {DASH} | {DASH} | {DASH} | {DASH} | "
        + " | ".join(format_r2(routings.get("r2_global_bins", {}).get(n)) for n in names)
        + " |"
    )
    for name, e in by.items():
        ci = e.get("rho_ci95")
        rho = DASH if e.get("rho") is None else f"{e['rho']:.2f}"
        if ci and not any(is_missing(c) for c in ci):
            rho += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        rows.append(
            f"| {name} | {format_r2(e['r2'])} | {format_delta(e['delta_r2'])} | {rho} | "
            f"{e['accuracy']:.4f} | {e['fallback_rate']:.4f} | "
            + " | ".join(format_r2(e["r2_bins"].get(n)) for n in names)
            + " |"
        )
    text = [
        f"All routings are scored on the same {format_count(routings.get('n'))} test spectra, "
        f"per {routings.get('grouped_by', 'bin')}. ρ = (R² − R²_global) / "
        "(R²_oracle − R²_global). Gate accuracy is the share routed to the true bin "
        "(for soft routing, the most probable bin).",
        "",
        "\n".join(rows),
    ]
    oracle = by.get("oracle")
    if oracle and not oracle["delta_r2"] > 0:
        text += [
            "",
            "The oracle routing does not beat the global model here, so ρ is not a share "
            "of a gain: read the R² columns instead.",
        ]
    gate = routings.get("gate")
    if gate:
        flag = (
            f"**FLAG: above {gate['leakage_limit']:g}**: the gate's features carry target "
            "information"
            if gate["leakage_flag"]
            else f"below the {gate['leakage_limit']:g} limit"
        )
        text += [
            "",
            f"Gate: multinomial logistic regression on the `{gate['feature_set']}` features "
            f"({', '.join(gate['features'])}), trained on {format_count(gate['n_train'])} "
            f"spectra (training accuracy {gate['train_accuracy']:.4f}); soft routing falls "
            f"back to the global model when max p < {gate['threshold']:g}. "
            f"Leakage check (ridge R² of the target from the gate features): "
            f"{gate['leakage_r2_test']:.4f} on the test set "
            f"({gate['leakage_r2_train']:.4f} on the training set), {flag}.",
        ]
    scale = routings.get("error_scale", 1.0)
    if scale != 1.0:
        text += ["", f"The test errors were multiplied by {scale:g} (robustness study)."]
    return ["## Routing comparison", "\n".join(text)]


def render_alpha_cv(metrics: Mapping[str, Any]) -> list[str]:
    """Fixed against cross-validated alpha on the test set, or nothing without CV."""
    cv = metrics.get("alpha_cv")
    if not cv:
        return []
    fixed = format_alpha(cv["alpha_fixed"])
    rows = [
        f"| Expert | CV alpha | fixed alpha | R² (CV alpha) | R² (alpha {fixed}) |",
        "|---|---|---|---|---|",
        f"| all (routed) | {DASH} | {DASH} | {format_r2(cv['r2_cv'])} | "
        f"{format_r2(cv['r2_fixed'])} |",
    ]
    for name, b in cv["bins"].items():
        rows.append(
            f"| {name} | {format_alpha(cv['alpha_cv'].get(name))} | "
            f"{format_alpha(cv['alpha_fixed'])} | {format_r2(b['r2_cv'])} | "
            f"{format_r2(b['r2_fixed'])} |"
        )
    how = (
        "generalized cross-validation (GCV, n·RSS / (n − df)², from one eigendecomposition "
        "of each expert's statistics)"
        if cv.get("method") == "gcv"
        else f"exact {cv['folds']}-fold cross-validation"
    )
    intro = (
        f"Each expert's alpha was chosen by {how} over "
        f"{len(cv['grid'])} values from {format_alpha(cv['grid'][0])} to "
        f"{format_alpha(cv['grid'][-1])}, from the fit's single pass; the global model's CV "
        f"alpha is {format_alpha(cv['alpha_cv'].get('global'))}. Both models are scored on "
        "the test set with the primary routing."
    )
    return ["## Cross-validated alpha", intro + "\n\n" + "\n".join(rows)]


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
        :func:`snr_moe_dask.plots.write_figures`.
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
        "## Results per SNR bin",
        render_bins_table(metrics),
        "## Numeric results",
        render_results_table(metrics),
        "## Findings",
        render_findings(metrics),
        *render_routings(metrics),
        *render_alpha_cv(metrics),
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
