"""The report of experts keyed by a grid of variables: per-cell tables for any number of
cells, the ΔR² heatmap over a 2-D grid, and the edges the search chose."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from snr_moe_dask.evaluation.summary import cell_ranges
from snr_moe_dask.kernels import cells
from snr_moe_dask.report import figures as plots
from snr_moe_dask.report import markdown as report

KEYS = [("teff", [4500.0, 5250.0]), ("mh", [-1.0, 0.0])]


def keyed_metrics(keys=KEYS, search=False) -> dict:
    """A metrics mapping shaped like metrics.json of a keyed oracle run."""
    names = cells.cell_names(keys)
    rng = np.random.default_rng(0)
    bins = []
    for name, ranges in zip(names, cell_ranges(keys)):
        r2_g = float(rng.uniform(0.2, 0.6))
        delta = float(rng.uniform(-0.02, 0.2))
        bins.append(
            {
                "name": name,
                "ranges": ranges,
                "n_train": 1000,
                "n_test": 100,
                "r2_expert": r2_g + delta,
                "r2_global": r2_g,
                "delta_r2": delta,
                "mae_expert": 0.5,
                "mae_global": 0.6,
                "rmse_expert": 0.7,
                "rmse_global": 0.8,
                "fallback": name == names[-1],
                "fallback_reason": "3 training spectra < min_spectra 100",
                "delta_r2_ci95": [delta - 0.01, delta + 0.01],
            }
        )
    metrics = {
        "target": "logg",
        "routing": "oracle",
        "overall": {"n": 900, "n_train": 9000, "r2_global": 0.46, "r2_moe": 0.62},
        "delta_r2_ci95": {"overall": [0.15, 0.17]},
        "bins": bins,
        "keys": [{"name": n, "edges": e} for n, e in keys],
        "grid_shape": [len(e) + 1 for _, e in keys],
        "alpha": {"global": 1e4},
    }
    if search:
        metrics["edge_search"] = {
            "keys": [{"name": "snr", "fine_edges": [1.0, 2.0, 3.0], "edges": [2.0]}],
            "n_bins": [2],
            "cv_error": 0.31,
            "folds": 5,
            "method": "exact",
            "alpha": 1e4,
            "solves": 42,
            "alternatives": [
                {"bins": [1], "edges": [[]], "cv_error": 0.35},
                {"bins": [2], "edges": [[2.0]], "cv_error": 0.31},
            ],
        }
    return metrics


def table_rows(text: str, first: str) -> list[str]:
    """The rows of the markdown table whose header starts with ``first``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    return list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))


def columns(row: str) -> int:
    """Columns of a markdown table row: ``|`` not escaped separates them."""
    return len(re.split(r"(?<!\\)\|", row)) - 2


def test_the_cell_table_has_one_row_per_cell_and_escapes_the_grid_separator(tmp_path):
    text = report.render_report(keyed_metrics(), {}, tmp_path)
    assert text.startswith("# Oracle mixture of experts by teff × mh: log g")
    assert "one expert per cell of teff × mh (3 × 3 = 9 cells)" in text
    rows = table_rows(text, "| cell |")
    assert len(rows) == 2 + 9
    assert {columns(r) for r in rows} == {6}
    assert "teff(4500,5250]\\|mh(-1,0]" in text
    assert "Fallback bin teff(5250,inf)|mh(0,inf)" in text


def test_a_two_key_grid_gets_a_delta_table_and_a_heatmap(tmp_path):
    metrics = keyed_metrics()
    text = report.render_report(metrics, {}, tmp_path)
    grid = table_rows(text, "| teff \\ mh |")
    assert grid[0] == "| teff \\ mh | ≤ -1 | (-1, 0] | > 0 |"
    assert grid[3].startswith("| (4500, 5250] | ")
    assert "†" in grid[4]  # the fallback cell
    figures = plots.write_figures(metrics, {"snr_hist": {"edges": [0, 1]}}, tmp_path)
    assert figures["delta_grid"].read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("keys", [[("teff", [4500.0])], [("a", [0.0]), ("b", [0.0]), ("c", [1.0])]])
def test_other_grids_have_no_heatmap(tmp_path, keys):
    metrics = keyed_metrics(keys)
    assert "| a \\ b |" not in report.render_report(metrics, {}, tmp_path)
    figures = plots.write_figures(metrics, {"snr_hist": {"edges": [0, 1]}}, tmp_path)
    assert "delta_grid" not in figures


def test_the_edge_search_section_lists_the_alternatives(tmp_path):
    metrics = keyed_metrics(search=True)
    text = report.render_report(metrics, {}, tmp_path)
    assert "## Edges chosen by cross-validation" in text
    rows = table_rows(text, "| bins per key |")
    assert rows[2] == "| 1 | snr: – | 0.35 | +0.04 |"
    assert rows[3] == "| 2 | snr: 2 | 0.31 | +0 |"
    figures = plots.write_figures(metrics, {"snr_hist": {"edges": [0, 1]}}, tmp_path)
    assert figures["edge_search"].exists()
