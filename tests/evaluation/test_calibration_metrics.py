"""``snr-moe evaluate`` scores the uncertainties: z = (prediction - truth) / sigma per
true bin, in metrics.json, the report and a figure, equal to a direct count."""

from __future__ import annotations

import dask
import numpy as np
import xarray as xr

from snr_moe_dask import SNRBinnedRidge, evaluate_model


def test_calibration_metrics_equal_a_direct_count(store_pair, tmp_path):
    train, test = (str(p) for p in store_pair)
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=10.0, min_spectra=1).fit(train).save(tmp_path / "m.zarr")
        metrics = evaluate_model(
            tmp_path / "m.zarr", test, tmp_path / "ev", routing="oracle,soft", bootstrap=0
        )
    pred = xr.open_zarr(tmp_path / "ev" / "predictions.zarr")
    cal = metrics["calibration"]
    assert cal["grouped_by"] == "true bin" and cal["targets"]["coverage_1sigma"] == [0.63, 0.73]
    used = pred["used"].values
    for routing in ("oracle", "soft"):
        z = (pred[f"y_{routing}"].values - pred["y_true"].values) / pred[f"err_{routing}"].values
        for k, name in enumerate(["X", "L", "M", "H"]):
            inside = used & (pred["bin_true"].values == k)
            got = cal["by_routing"][routing]["bins"][name]
            assert got["n"] == inside.sum()
            assert np.isclose(got["z_std"], z[inside].std())
            assert np.isclose(got["coverage_1sigma"], np.mean(np.abs(z[inside]) <= 1))
        overall = cal["by_routing"][routing]["overall"]
        assert np.isclose(overall["z_rms"], np.sqrt(np.mean(z[used] ** 2)))
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "## Calibrated uncertainties" in report and "figures/calibration.png" in report
    assert (tmp_path / "ev" / "figures" / "calibration.png").stat().st_size > 5000


def test_no_calibration_section_without_an_error_model(store_pair, tmp_path):
    train, test = (str(p) for p in store_pair)
    with dask.config.set(scheduler="sync"):
        SNRBinnedRidge(alpha=10.0, calibration=0, gate=False).fit(train).save(tmp_path / "m.zarr")
        metrics = evaluate_model(tmp_path / "m.zarr", test, tmp_path / "ev", bootstrap=0)
    assert "calibration" not in metrics
    assert "Calibrated uncertainties" not in (tmp_path / "ev" / "report.md").read_text()
