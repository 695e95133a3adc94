"""The report's later sections: coverage and exclusions, configuration, timings,
the figure list, the routing comparison and the cross-validated alpha."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .cells import many_cells, render_cells_by_routing
from .figures import FIGURE_FILES
from .text import (
    DASH,
    describe_bin,
    format_alpha,
    format_count,
    format_delta,
    format_r2,
    is_keyed,
    is_missing,
    label_target,
    order_bins,
)

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
    "delta_grid": "ΔR² (expert minus global) over the grid of the two keys, with its 95% "
    "bootstrap CI; hatched cells are served by the global model.",
    "edge_search": "Cross-validated error of the best partition for each number of bins per "
    "key, from the fit's single pass (the chosen one marked).",
    "cv_curves": "Cross-validation error against alpha per expert (K-fold: band of ±1 "
    "standard error across folds; GCV: the GCV score), with the chosen and the fixed alpha.",
    "calibration": "Calibration of the predicted uncertainties per bin: the standard deviation "
    "of z = (prediction − truth) / σ and the share with |z| ≤ 1, with the target bands.",
}


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
        _describe_cells(metrics, edges, bins),
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


def _describe_cells(metrics: Mapping[str, Any], edges, bins) -> str:
    """The configuration's line on the experts' bins or cells."""
    if not is_keyed(metrics):
        return f"- SNR bin edges: {', '.join(f'{e:g}' for e in edges) or DASH}; bins " + ", ".join(
            describe_bin(b) for b in bins
        )
    keys = "; ".join(
        f"`{k['name']}` edges {', '.join(f'{e:g}' for e in k.get('edges') or []) or DASH}"
        for k in metrics.get("keys") or []
    )
    return f"- Experts keyed by {keys} (right-closed, open outer cells): {len(bins)} cells"


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
    many = many_cells(metrics)  # then per-cell R² is a table of its own, below
    names = [] if many else [b["name"] for b in metrics.get("bins", [])]
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
    if many:
        text += ["", "R² per cell (rows) by routing:", "", render_cells_by_routing(metrics)]
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
