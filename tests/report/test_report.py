"""Tests for the markdown report and its figures.

The metrics mirror the source study's numbers (LOGG-SNR-ORACLE-01) so that the
expected table cells can be read off its report; the figure data comes from a
small seeded simulation reduced to histograms, as the pipeline would.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snr_moe_dask.report import figures as plots
from snr_moe_dask.report import histograms, text
from snr_moe_dask.report import markdown as report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name, snr_low, snr_high, n_train, n_test, r2_expert, r2_global, mae_expert, mae_global
SOURCE_BINS = [
    ("X", None, 2.0, 290_961, 30_000, 0.3094, 0.2517, 0.7971, 0.8210),
    ("L", 2.0, 4.0, 380_314, 37_700, 0.5106, 0.5040, 0.6191, 0.6230),
    ("M", 4.0, 7.0, 297_722, 29_200, 0.7103, 0.6139, 0.4668, 0.5301),
    ("H", 7.0, None, 31_003, 3_100, 0.7036, 0.6721, 0.5536, 0.5720),
]


def make_metrics() -> dict:
    """Return a metrics dict shaped like ``metrics.json`` of an oracle run."""
    bins = []
    cis = {}
    for name, low, high, n_train, n_test, r2_e, r2_g, mae_e, mae_g in SOURCE_BINS:
        delta = r2_e - r2_g
        # A CI that narrows with the test size, as a bootstrap would.
        half = 0.3 / np.sqrt(n_test)
        ci = [round(delta - half, 6), round(delta + half, 6)]
        cis[name] = ci
        bins.append(
            {
                "name": name,
                "snr_low": low,
                "snr_high": high,
                "n_train": n_train,
                "n_test": n_test,
                "r2_expert": r2_e,
                "r2_global": r2_g,
                "delta_r2": delta,
                "mae_expert": mae_e,
                "mae_global": mae_g,
                "rmse_expert": mae_e * 1.25,
                "rmse_global": mae_g * 1.25,
                "fallback": False,
                "delta_r2_ci95": ci,
            }
        )
    cis["overall"] = [0.045, 0.055]
    return {
        "target": "logg",
        "routing": "oracle",
        "precision": "float32",
        "alpha": {"global": 1e5, "X": 1e5, "L": 1e5, "M": 1e5, "H": 1e5},
        "coverage": 1.0,
        "overall": {
            "r2_global": 0.4629,
            "r2_moe": 0.5129,
            "delta_r2": 0.05,
            "mae_global": 0.6572,
            "mae_moe": 0.6260,
            "rmse_global": 0.8215,
            "rmse_moe": 0.7825,
            "n": 100_000,
            "n_train": 1_000_000,
        },
        "delta_r2_ci95": cis,
        "bins": bins,
        "hypothesis": {"threshold": 0.02},
        "bootstrap": {"n_resamples": 1000, "seed": 0},
        "excluded": {
            "train": {
                "bad_pixels": {"X": 40, "L": 2},
                "excluded_bad": {"X": 7, "L": 1},
                "excluded_label": {"M": 4},
                "excluded_no_snr": {"no_snr": 0},
            },
            "test": {"excluded": {"X": 3}, "no_snr_served_by_global": 0, "bad_pixels": {"X": 9}},
        },
        "timings": {"fit": 762.0, "evaluate": 45.5, "report": 1.0},
        "config": {"model": {"alpha": 1e5}, "routing": {"type": "oracle"}, "cluster": "local"},
        "model": "out/model.zarr",
        "test_store": "data/test.zarr",
        "train_store": "data/train.zarr",
    }


def make_figdata(seed: int = 0, n: int = 20_000) -> dict:
    """Simulate a test set and reduce it to the histograms the figures need."""
    rng = np.random.default_rng(seed)
    snr = rng.lognormal(np.log(2.9), 0.5, size=n)
    true = rng.uniform(0.5, 5.0, size=n)
    # Noisier spectra shrink harder towards the mean, as ridge does.
    shrink = snr / (snr + 2.0)
    pred_global = true.mean() + shrink * (true - true.mean()) + rng.normal(0, 0.6, n)
    pred_moe = true.mean() + (shrink + 0.05) * (true - true.mean()) + rng.normal(0, 0.55, n)
    true_edges = np.linspace(0.0, 5.5, 45)
    pred_edges = np.linspace(-0.5, 6.0, 45)

    def hist2d(pred, weights=None):
        counts, _, _ = np.histogram2d(true, pred, bins=[true_edges, pred_edges], weights=weights)
        return counts

    snr_edges = np.linspace(0.0, 12.0, 61)
    snr_train = rng.lognormal(np.log(2.9), 0.5, size=5 * n)
    return {
        "pred_hist": {
            "true_edges": true_edges,
            "pred_edges": pred_edges,
            "count_global": hist2d(pred_global),
            "count_moe": hist2d(pred_moe),
            "snr_sum_global": hist2d(pred_global, snr),
            "snr_sum_moe": hist2d(pred_moe, snr),
        },
        "snr_hist": {
            "edges": snr_edges,
            "count_test": np.histogram(snr, snr_edges)[0],
            "count_train": np.histogram(snr_train, snr_edges)[0],
        },
        "bin_edges": [2.0, 4.0, 7.0],
        "bin_names": ["X", "L", "M", "H"],
    }


def find_bin_by_name(metrics: dict, name: str) -> dict:
    return next(b for b in metrics["bins"] if b["name"] == name)


def find_row(markdown: str, first_cell: str) -> str:
    """Return the table row whose first cell is ``first_cell``."""
    pattern = re.compile(rf"^\| {re.escape(first_cell)} \|.*$", re.MULTILINE)
    rows = pattern.findall(markdown)
    assert rows, f"no row starting with {first_cell!r} in:\n{markdown}"
    return rows[0]


def render(metrics: dict, tmp_path: Path) -> str:
    """Render without drawing figures, for tests that only read the text."""
    figures = {key: tmp_path / "figures" / name for key, name in plots.FIGURE_FILES.items()}
    return report.render_report(metrics, figures, tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, str]:
    out_dir = tmp_path_factory.mktemp("run")
    path = report.write_report(make_metrics(), make_figdata(), out_dir)
    return path, path.read_text(encoding="utf-8")


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 300 and image.shape[1] >= 400
    # A blank canvas would mean nothing was drawn.
    assert image[..., :3].std() > 0.01


def test_write_report_writes_all_figures(written):
    path, _ = written
    assert path.name == "report.md"
    for name in plots.FIGURE_FILES.values():
        assert_valid_png(path.parent / "figures" / name)


def test_report_links_figures_relative(written):
    path, text = written
    for name in plots.FIGURE_FILES.values():
        assert f"](figures/{name})" in text
    assert str(path.parent) not in text


def test_bins_table_high_to_low_snr(written):
    _, text = written
    rows = [find_row(text, name) for name in ("H", "M", "L", "X")]
    positions = [text.index(row) for row in rows]
    assert positions == sorted(positions)

    m_row = find_row(text, "M")
    cells = [c.strip() for c in m_row.strip("|").split("|")]
    assert cells[1] == "4 < SNR ≤ 7"
    assert cells[2] == "297,722 (29.8 %)"
    assert cells[3] == "29,200"
    assert cells[4] == "0.7103"
    assert cells[5] == "0.6139"
    assert cells[6].startswith("+0.0964 [+0.")
    assert find_row(text, "X").split("|")[2].strip() == "SNR ≤ 2"
    assert find_row(text, "H").split("|")[2].strip() == "SNR > 7"


def test_results_table(written):
    _, text = written
    assert find_row(text, "Global Ridge") == (
        "| Global Ridge | 0.4629 | 0.6572 | 0.8215 | 1,000,000 | 100,000 |"
    )
    assert find_row(text, "Oracle MoE").startswith("| Oracle MoE | 0.5129 | 0.6260 |")
    assert find_row(text, "bin M") == "| bin M | 0.7103 | 0.4668 | 0.5835 | 297,722 | 29,200 |"


def test_hypothesis_pass(written):
    _, text = written
    assert "**Hypothesis ΔR² ≥ 0.02: PASS**" in text
    assert "ΔR² = +0.0500 (95% CI +0.0450 to +0.0550)" in text
    assert "FAIL" not in text


def test_hypothesis_fail_not_significant(tmp_path):
    metrics = make_metrics()
    metrics["overall"]["delta_r2"] = 0.025
    metrics["delta_r2_ci95"]["overall"] = [0.015, 0.035]
    text = render(metrics, tmp_path)
    assert "**Hypothesis ΔR² ≥ 0.02: FAIL**" in text
    assert "ΔR² = +0.0250 (95% CI +0.0150 to +0.0350)" in text
    assert "not significant at 95%" in text


def test_hypothesis_fail_below_threshold(tmp_path):
    metrics = make_metrics()
    metrics["overall"]["delta_r2"] = -0.004
    metrics["delta_r2_ci95"]["overall"] = [-0.01, 0.002]
    metrics["hypothesis"] = {"threshold": 0.03}
    text = render(metrics, tmp_path)
    assert "**Hypothesis ΔR² ≥ 0.03: FAIL**" in text
    assert "ΔR² = -0.0040 (95% CI -0.0100 to +0.0020)" in text
    assert "not significant" not in text


def test_hypothesis_default_threshold_without_ci_fails(tmp_path):
    metrics = make_metrics()
    del metrics["hypothesis"]
    del metrics["delta_r2_ci95"]["overall"]
    text = render(metrics, tmp_path)
    assert "**Hypothesis ΔR² ≥ 0.02: FAIL**" in text


@given(
    delta=st.floats(-1, 1),
    lo=st.floats(-1, 1),
    width=st.floats(0, 1),
    threshold=st.floats(0, 0.5),
)
def test_judge_hypothesis_passes_only_on_ci_lower_bound(delta, lo, width, threshold):
    passed, reason = report.judge_hypothesis(delta, (lo, lo + width), threshold)
    assert passed == (lo >= threshold)
    if not passed and delta >= threshold:
        assert "not significant at 95%" in reason


def test_fallback_bin_footnote(tmp_path):
    metrics = make_metrics()
    h = find_bin_by_name(metrics, "H")
    h.update(fallback=True, r2_expert=h["r2_global"], delta_r2=0.0, delta_r2_ci95=[0.0, 0.0])
    text = render(metrics, tmp_path)
    assert find_row(text, "H†")
    assert find_row(text, "bin H†")
    assert "† Fallback bin H:" in text
    assert "served by the global model" in text
    assert "†" not in find_row(text, "M")


def test_no_fallback_no_footnote(written):
    _, text = written
    assert "Fallback bin" not in text


def test_null_metric_bin_renders_dash(tmp_path):
    metrics = make_metrics()
    h = find_bin_by_name(metrics, "H")
    for key in ("r2_expert", "r2_global", "delta_r2", "mae_expert", "mae_global"):
        h[key] = None
    h["rmse_expert"] = float("nan")
    h["rmse_global"] = float("nan")
    h["n_test"] = 1
    h["delta_r2_ci95"] = None
    metrics["delta_r2_ci95"]["H"] = None
    path = report.write_report(metrics, make_figdata(n=2000), tmp_path)
    text = path.read_text(encoding="utf-8")

    cells = [c.strip() for c in find_row(text, "H").strip("|").split("|")]
    assert cells[3] == "1"
    assert cells[4:] == ["–", "–", "–"]
    assert find_row(text, "bin H") == "| bin H | – | – | – | 31,003 | 1 |"
    assert "nan" not in text.lower()
    for name in plots.FIGURE_FILES.values():
        assert_valid_png(tmp_path / "figures" / name)


def test_sections_and_numbers(written):
    _, text = written
    assert text.startswith("# Oracle SNR-binned mixture of experts: log g")
    assert "1,000,000 training spectra" in text
    assert "100,000 held-out test spectra" in text
    assert "alpha = 100000 for every model" in text
    assert "Coverage: 100.00 %" in text
    assert (
        "Training spectra excluded: 12 (more bad pixels than allowed: 8, missing target: 4, "
        "no SNR: 0); bad pixels imputed in the spectra used: 42." in text
    )
    assert "Test spectra excluded from the metrics (missing target or too many bad" in text
    assert "| fit | 762.0 | 12.70 |" in text
    assert "| **total** | **808.5** | **13.47** |" in text
    assert "```yaml" in text and "type: oracle" in text
    assert "1,000 resamples (seed 0)" in text


def test_optional_keys_missing(tmp_path):
    metrics = make_metrics()
    for key in ("hypothesis", "excluded", "config", "bootstrap", "timings", "coverage"):
        metrics.pop(key)
    metrics["alpha"] = 3e4
    text = render(metrics, tmp_path)
    assert "alpha = 30000" in text
    assert "Timings were not recorded." in text
    assert "excluded" not in text.lower()


def test_label_target():
    assert text.label_target("logg") == "log g"
    assert text.label_target("teff") == "Teff"
    assert text.label_target("mh") == "[M/H]"
    assert text.label_target("vsini") == "vsini"


def test_teff_labels_and_single_histogram(tmp_path):
    metrics = copy.deepcopy(make_metrics())
    metrics["target"] = "teff"
    figdata = make_figdata(n=2000)
    figdata["snr_hist"]["count_train"] = None
    path = histograms.plot_snr_distribution(metrics, figdata, tmp_path / "snr.png")
    assert_valid_png(path)
    text = render(metrics, tmp_path)
    assert "Predicted vs true Teff" in text


def test_figures_survive_degenerate_inputs(tmp_path):
    metrics = make_metrics()
    for b in metrics["bins"]:
        b["r2_expert"], b["r2_global"] = -0.3, -0.5
    metrics["overall"].update(r2_global=-0.2, r2_moe=None)
    metrics["delta_r2_ci95"] = {}
    figdata = make_figdata(n=500)
    for key in ("count_global", "count_moe", "snr_sum_global", "snr_sum_moe"):
        figdata["pred_hist"][key] = np.zeros_like(figdata["pred_hist"][key])
    del figdata["bin_edges"], figdata["bin_names"]
    figures = plots.write_figures(metrics, figdata, tmp_path)
    assert sorted(figures) == sorted(plots.FIGURE_FILES)
    for path in figures.values():
        assert_valid_png(path)
