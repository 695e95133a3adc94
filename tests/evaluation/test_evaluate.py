"""Evaluation: metrics equal scikit-learn's, recomputed from the saved model on the test store."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from snr_moe_dask import open_spectra
from snr_moe_dask.evaluation.graph import evaluate_model
from snr_moe_dask.model import SNRBinnedRidge, load_model

OVERALL_KEYS = {
    "r2_global",
    "r2_moe",
    "delta_r2",
    "mae_global",
    "mae_moe",
    "rmse_global",
    "rmse_moe",
    "n",
}
BIN_KEYS = {
    "name",
    "snr_low",
    "snr_high",
    "n_train",
    "n_test",
    "r2_expert",
    "r2_global",
    "delta_r2",
    "mae_expert",
    "mae_global",
    "rmse_expert",
    "rmse_global",
}


@pytest.fixture(scope="module")
def fitted(store_pair, tmp_path_factory):
    train, test = store_pair
    path = tmp_path_factory.mktemp("model") / "model.zarr"
    with dask.config.set(scheduler="threads"):
        SNRBinnedRidge(alpha=1e4, min_spectra=1).fit(open_spectra(train)).save(path)
    return path, test


def reference(model_path, test, routing="oracle"):
    """Predictions recomputed with numpy from the saved coefficients."""
    model = xr.open_zarr(model_path, consolidated=False).load()
    ds = open_spectra(test).load()
    x = ds["flux"].values.astype(np.float64)
    coef, icpt = model["coef"].values[:, :, 0], model["intercept"].values[:, 0]
    y_global = x @ coef[0] + icpt[0]
    snr = (
        ds["snr"].values
        if routing == "oracle"
        else np.median(ds["flux"].values / ds["error"].values, axis=1)
    )
    bins = np.digitize(snr, model.attrs["bin_edges"], right=True)
    y_moe = np.einsum("np,np->n", x, coef[bins + 1]) + icpt[bins + 1]
    return ds["logg"].values, y_global, y_moe, bins


@pytest.mark.parametrize("routing", ["oracle", "observed"])
def test_metrics_equal_sklearn(fitted, tmp_path, client, routing):
    model_path, test = fitted
    out = tmp_path / "eval"
    evaluate_model(model_path, test, out, routing=routing, bootstrap=200, seed=3)
    metrics = json.loads((out / "metrics.json").read_text())
    y, yg, ym, bins = reference(model_path, test, routing)
    o = metrics["overall"]
    assert OVERALL_KEYS <= set(o) and o["n"] == len(y)
    expected = {
        "r2_global": r2_score(y, yg),
        "r2_moe": r2_score(y, ym),
        "mae_global": mean_absolute_error(y, yg),
        "mae_moe": mean_absolute_error(y, ym),
        "rmse_global": np.sqrt(mean_squared_error(y, yg)),
        "rmse_moe": np.sqrt(mean_squared_error(y, ym)),
    }
    for key, value in expected.items():
        assert o[key] == pytest.approx(value, rel=1e-6), key
    assert o["delta_r2"] == pytest.approx(expected["r2_moe"] - expected["r2_global"], rel=1e-6)
    for k, b in enumerate(metrics["bins"]):
        assert BIN_KEYS <= set(b)
        rows = bins == k
        assert b["n_test"] == rows.sum()
        if rows.sum() >= 2:
            assert b["r2_expert"] == pytest.approx(r2_score(y[rows], ym[rows]), rel=1e-6)
            assert b["r2_global"] == pytest.approx(r2_score(y[rows], yg[rows]), rel=1e-6)
            assert b["mae_expert"] == pytest.approx(
                mean_absolute_error(y[rows], ym[rows]), rel=1e-6
            )
            assert b["rmse_global"] == pytest.approx(
                np.sqrt(mean_squared_error(y[rows], yg[rows])), rel=1e-6
            )
    for key in ("routing", "alpha", "coverage", "target", "timings", "delta_r2_ci95"):
        assert key in metrics
    assert metrics["routing"] == routing and metrics["coverage"] == 1.0
    preds = xr.open_zarr(out / "predictions.zarr", consolidated=False)
    for var in ("y_true", "y_global", "y_moe", "snr", "bin"):
        assert var in preds
    np.testing.assert_allclose(preds["y_moe"].values, ym, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(preds["bin"].values, bins)
    report = (out / "report.md").read_text()
    assert "Hypothesis" in report and (out / "figures" / "r2_bins.png").exists()


def test_bootstrap_is_reproducible_and_brackets_the_estimate(fitted, tmp_path):
    model_path, test = fitted
    runs = []
    with dask.config.set(scheduler="threads"):
        for name, seed in (("a", 7), ("b", 7), ("c", 8)):
            runs.append(
                evaluate_model(
                    model_path, test, tmp_path / name, bootstrap=300, seed=seed, report=False
                )
            )
    assert runs[0]["delta_r2_ci95"] == runs[1]["delta_r2_ci95"]
    assert runs[0]["delta_r2_ci95"] != runs[2]["delta_r2_ci95"]
    lo, hi = runs[0]["delta_r2_ci95"]["overall"]
    assert lo < runs[0]["overall"]["delta_r2"] < hi


def test_bootstrap_matches_a_direct_numpy_bootstrap_in_distribution(fitted, tmp_path):
    """The two-stage multinomial draw is the ordinary bootstrap: compare its spread."""
    model_path, test = fitted
    with dask.config.set(scheduler="threads"):
        res = evaluate_model(model_path, test, tmp_path / "e", bootstrap=2000, seed=1, report=False)
    y, yg, ym, _ = reference(model_path, test)
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(2000):
        i = rng.integers(0, len(y), len(y))
        deltas.append(r2_score(y[i], ym[i]) - r2_score(y[i], yg[i]))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    ours = res["delta_r2_ci95"]["overall"]
    width = hi - lo
    assert abs(ours[0] - lo) < 0.15 * width and abs(ours[1] - hi) < 0.15 * width


def test_refuses_existing_output_and_incompatible_store(fitted, tmp_path, small_survey):
    model_path, test = fitted
    out = tmp_path / "eval"
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        evaluate_model(model_path, test, out)
    other = tmp_path / "other.zarr"
    small_survey.to_zarr(other, zarr_format=3, consolidated=False)
    with pytest.raises(
        ValueError,
        match=r"model '.*model.zarr' has 128 pixels but store "
        r"'.*other.zarr' has 64",
    ):
        evaluate_model(model_path, other, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_wavelength_grid_mismatch_names_both(fitted, tmp_path):
    model_path, test = fitted
    ds = open_spectra(test).load()
    shifted = ds.assign_coords(wavelength=ds["wavelength"].values + 1.0)
    path = tmp_path / "shifted.zarr"
    shifted.to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(
        ValueError,
        match=r"wavelength grid of store '.*shifted.zarr' differs "
        r"from model '.*model.zarr'",
    ):
        evaluate_model(model_path, path, tmp_path / "x")


def test_predict_is_lazy_for_datasets(fitted):
    from xarray.tests import raise_if_dask_computes

    model_path, test = fitted
    model = load_model(model_path)
    ds = open_spectra(test)
    with raise_if_dask_computes():
        pred = model.predict(ds)
    with dask.config.set(scheduler="threads"):
        _, _, ym, _ = reference(model_path, test)
        np.testing.assert_allclose(pred.compute(), ym, rtol=1e-10)


def _assert_same_metrics(a, b, where):
    """Equal structure and values; floats to 1e-12 relative."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same_metrics(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_metrics(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-15, nan_ok=True), where
    else:
        assert a == b, where


def test_store_path_and_dataset_give_identical_outputs(fitted, tmp_path, client):
    """From a path, each task reads its own chunk from the store; from a Dataset,
    the chunks come from xarray's read tasks. Both give the same predictions and
    metrics to 1e-12: the BLAS kernel's rounding may depend on a chunk's memory
    alignment, and the bootstrap's partial sums merge in each graph's order."""
    model_path, test = fitted
    kw = {"routing": "oracle,observed", "bootstrap": 50, "report": False}
    by_path = evaluate_model(model_path, test, tmp_path / "path", **kw)
    by_ds = evaluate_model(model_path, open_spectra(test), tmp_path / "ds", **kw)
    for key in ("overall", "bins", "routings"):
        _assert_same_metrics(by_path[key], by_ds[key], key)
    a = xr.open_zarr(tmp_path / "path" / "predictions.zarr", consolidated=False).load()
    b = xr.open_zarr(tmp_path / "ds" / "predictions.zarr", consolidated=False).load()
    # The BLAS kernel may round the products of differently aligned chunks
    # differently in the last bit (seen with OpenBLAS's SkylakeX kernel).
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs(), rtol=1e-12, atol=1e-15)
