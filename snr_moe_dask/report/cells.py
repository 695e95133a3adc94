"""The report's sections for experts keyed by a grid of variables: ΔR² over the grid,
each routing's R² per cell, and the edges the search chose (``--edges auto``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .text import (
    DASH,
    cell_label,
    find_bin_ci,
    format_alpha,
    format_ci,
    format_delta,
    format_r2,
    is_keyed,
)


def key_cell_labels(key: Mapping[str, Any]) -> list[str]:
    """One key's cell ranges, e.g. ``≤ 4500``, ``(4500, 5250]``, ``> 5250``."""
    edges = [f"{e:g}" for e in key.get("edges") or []]
    if not edges:
        return ["all"]
    inner = [f"({a}, {b}]" for a, b in zip(edges[:-1], edges[1:])]
    return [f"≤ {edges[0]}", *inner, f"> {edges[-1]}"]


def grid_cells(metrics: Mapping[str, Any]) -> list[list[dict]] | None:
    """The cells of a 2-D grid of keys as rows (first key) of columns (second key);
    None for any other number of keys."""
    keys, bins = metrics.get("keys") or [], metrics.get("bins") or []
    shape = metrics.get("grid_shape") or []
    if len(keys) != 2 or len(shape) != 2 or len(bins) != shape[0] * shape[1]:
        return None
    return [bins[i * shape[1] : (i + 1) * shape[1]] for i in range(shape[0])]


def render_cell_grid(metrics: Mapping[str, Any]) -> list[str]:
    """ΔR² [95% CI] over a 2-D grid of keys (rows: the first key), or nothing."""
    rows = grid_cells(metrics)
    if rows is None:
        return []
    first, second = metrics["keys"]
    head = f"| {first['name']} \\ {second['name']} | " + " | ".join(key_cell_labels(second))
    lines = [head + " |", "|---" * (len(rows[0]) + 1) + "|"]
    for label, cells in zip(key_cell_labels(first), rows):
        parts = []
        for b in cells:
            ci = find_bin_ci(metrics, b)
            mark = "†" if b.get("fallback") else ""
            parts.append(f"{format_delta(b.get('delta_r2'))}{mark} {format_ci(ci) if ci else ''}")
        lines.append(f"| {label} | " + " | ".join(p.strip() for p in parts) + " |")
    intro = (
        "ΔR² (expert minus global, on each cell's test spectra) over the grid, with its 95% "
        "bootstrap CI; † marks a cell served by the global model."
    )
    return [intro + "\n\n" + "\n".join(lines)]


def render_cells_by_routing(metrics: Mapping[str, Any]) -> str:
    """Each routing's R² per cell, one row per cell (for more cells than fit in columns)."""
    routings = metrics.get("routings") or {}
    by = routings.get("by_routing") or {}
    names = [b["name"] for b in metrics.get("bins") or []]
    lines = ["| cell | global | " + " | ".join(by) + " |", "|---" * (len(by) + 2) + "|"]
    for b, name in zip(metrics.get("bins") or [], names):
        values = [format_r2((routings.get("r2_global_bins") or {}).get(name))]
        values += [format_r2(e["r2_bins"].get(name)) for e in by.values()]
        lines.append(f"| {cell_label(b)} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def render_edge_search(metrics: Mapping[str, Any]) -> list[str]:
    """The edges the search chose, its CV error, and the best partition for every
    number of bins per key (``--edges auto``), or nothing."""
    search = metrics.get("edge_search")
    if not search:
        return []
    keys = search["keys"]
    chosen = "; ".join(
        f"`{k['name']}`: {', '.join(f'{e:g}' for e in k['edges']) or 'no edge'} "
        f"(from fine edges {', '.join(f'{e:g}' for e in k['fine_edges'])})"
        for k in keys
    )
    alpha = search["alpha"]
    how = (
        "each cell's alpha chosen by the same CV"
        if alpha == "cv"
        else f"alpha = {format_alpha(alpha)}"
    )
    intro = (
        f"The edges were chosen from the fit's single pass by exact {search['folds']}-fold "
        f"cross-validation of the oracle-routed mixture over every merge of adjacent fine bins "
        f"({search['method']} search, {how}, {search['solves']:,} factorizations): {chosen}. "
        f"Its CV error (mean squared error per training spectrum) is "
        f"{search['cv_error']:.6g}. The best partition for each number of bins per key:"
    )
    rows = ["| bins per key | edges | CV error | vs chosen |", "|---|---|---|---|"]
    for alt in sorted(search["alternatives"], key=lambda a: a["bins"]):
        edges = "; ".join(
            f"{k['name']}: {', '.join(f'{e:g}' for e in e_k) or DASH}"
            for k, e_k in zip(keys, alt["edges"])
        )
        gain = alt["cv_error"] - search["cv_error"]
        rows.append(
            f"| {' × '.join(map(str, alt['bins']))} | {edges} | {alt['cv_error']:.6g} "
            f"| {gain:+.3g} |"
        )
    return ["## Edges chosen by cross-validation", intro + "\n\n" + "\n".join(rows)]


def many_cells(metrics: Mapping[str, Any]) -> bool:
    """More cells than the routing table shows as columns."""
    return is_keyed(metrics) and len(metrics.get("bins") or []) > 4
