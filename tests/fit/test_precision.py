"""Exact by default: float32 products, then float64 refinement where an estimate of
the float32 error says it is needed; scikit-learn float64 is the reference."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from snr_moe_dask.model import SNRBinnedRidge

ONE_BIN = {"routing": "observed", "bins": [1e30], "bin_names": ["A", "B"], "gate": False}


def conditioned(kappa: float, offset: float, n=3000, p=128, seed=0):
    """Flux whose centred Gram matrix has condition number about ``kappa``, around
    ``offset`` (badly centred when large), stored as float32."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, p)))
    v, _ = np.linalg.qr(rng.normal(size=(p, p)))
    s = np.geomspace(1, 1 / np.sqrt(kappa), p) * np.sqrt(n)
    x = (offset + (u * s) @ v.T).astype(np.float32)
    y = (x.astype(np.float64) - offset) @ rng.normal(size=p) + rng.normal(size=n) * 0.1
    return x, y


def error(model, x, y, alpha, e=0, rows=slice(None)) -> float:
    xd = x[rows].astype(np.float64)
    ref = Ridge(alpha=alpha).fit(xd, y[rows]).predict(xd)
    got = xd @ model.coef_[e, :, 0] + model.intercept_[e, 0]
    return float(np.abs(got - ref).max() / y.std())


def fit(x, y, precision=None, alpha=1e-3, **kw):
    with dask.config.set(scheduler="sync"):
        params = {**ONE_BIN, **kw}
        return SNRBinnedRidge(alpha=alpha, precision=precision, min_spectra=1, **params).fit(x, y)


@pytest.mark.parametrize("kappa", [1e2, 1e4, 1e6, 1e8])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_the_default_fit_is_within_1e_6_of_float64_on_ill_conditioned_data(kappa, offset):
    x, y = conditioned(kappa, offset)
    assert error(fit(x, y), x, y, 1e-3) < 1e-6
    raw = fit(x, y, "float32")
    assert "correction" not in raw.accuracy_["global"]  # float32 stays the raw products
    # The estimate that decides on refinement never falls below the actual error.
    assert raw.accuracy_["global"]["estimate"] >= error(raw, x, y, 1e-3)


def test_a_badly_centred_small_bin_is_refined():
    """The case that showed float32 products were not exact: flux around 50, 512
    pixels, alpha 1e3, one bin of 374 spectra."""
    rng = np.random.default_rng(0)
    n, p = 3000, 512
    base = rng.normal(size=(n, 16)) @ rng.normal(size=(16, p))
    x = (50 + base * 0.5 + rng.normal(size=(n, p)) * 0.3).astype(np.float32)
    y = base[:, :3].sum(1) + rng.normal(size=n)
    snr = np.where(np.arange(n) < 374, 1.0, 5.0)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=1e3, gate=False, min_spectra=1).fit(x, y, snr=snr)
    for e, rows in ((0, slice(None)), (1, slice(0, 374)), (3, slice(374, None))):
        assert error(model, x, y, 1e3, e, rows) < 1e-6, model.experts_[e]
    assert model.precision_ == "refined"
    assert model.accuracy_["global"]["remaining"] < 1e-6


def test_an_accurate_float32_fit_reads_nothing_more():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 32)).astype(np.float32)
    y = x.astype(np.float64) @ rng.normal(size=32) + rng.normal(size=2000)
    model = fit(x, y, alpha=1e4)
    assert model.timings_["refine"]["rounds"] == 0
    assert all("correction" not in a for a in model.accuracy_.values())
    assert error(model, x, y, 1e4) < 1e-6


def test_refinement_from_a_store_with_bad_pixels_matches_float64(store_pair):
    """Through the store path and several chunks and fold chains: refined equals the
    float64-product fit (both impute bad pixels the same way)."""
    import xarray as xr

    with dask.config.set(scheduler="sync"):
        a = SNRBinnedRidge(alpha=1.0, min_spectra=1, partitions=3, gate=False).fit(
            str(store_pair[0])
        )
        b = SNRBinnedRidge(
            alpha=1.0, min_spectra=1, partitions=3, gate=False, precision="float64"
        ).fit(str(store_pair[0]))
    ds = xr.open_zarr(store_pair[0])
    x, sy = ds["flux"].values.astype(np.float64), float(ds["logg"].std())
    bins = np.digitize(ds["snr"].values, a.bin_edges_, right=True)
    for e in range(len(a.experts_)):
        rows = slice(None) if e == 0 else bins == e - 1  # each expert on the spectra it serves
        np.testing.assert_allclose(
            x[rows] @ a.coef_[e] + a.intercept_[e],
            x[rows] @ b.coef_[e] + b.intercept_[e],
            rtol=0,
            atol=1e-6 * sy,
            err_msg=f"{a.experts_[e]}: {a.accuracy_}",
        )


def test_refinement_reads_only_the_flux_of_chunks_the_pass_found_clean(tmp_path, monkeypatch):
    from snr_moe_dask import write_spectra
    from snr_moe_dask.store.rows import StoreRows

    x, y = conditioned(1e6, 50.0, n=1200, p=64)
    flux, err = x.copy(), np.ones_like(x)
    flux[450, 3] = np.nan  # one bad pixel, in the second chunk of 400
    err[900, 5] = -1.0  # and a bad error in the third
    data = {"flux": flux, "error": err, "logg": y, "snr": np.full(len(y), 5.0)}
    wave = np.linspace(7100.0, 8850.0, x.shape[1])
    store = write_spectra(data, tmp_path / "s.zarr", wavelength=wave, chunk_size=400)
    reads = []
    original = StoreRows.read

    def spy(self, flux_only=False):
        reads.append((self.start, flux_only))
        return original(self, flux_only)

    monkeypatch.setattr(StoreRows, "read", spy)
    with dask.config.set(scheduler="sync"):
        a = SNRBinnedRidge(alpha=1e-3, min_spectra=1, **ONE_BIN, calibration=0).fit(str(store))
        reads_refined = list(reads)
        b = SNRBinnedRidge(
            alpha=1e-3, min_spectra=1, **ONE_BIN, calibration=0, precision="float64"
        ).fit(str(store))
    assert a.timings_["refine"]["rounds"] >= 1
    later = reads_refined[3:]  # after the pass's three reads
    assert later and all(flux_only == (start == 0) for start, flux_only in later)
    xd = np.where(np.isfinite(flux), flux, 0).astype(np.float64)
    np.testing.assert_allclose(
        xd @ a.coef_[0] + a.intercept_[0], xd @ b.coef_[0] + b.intercept_[0], atol=1e-6 * y.std()
    )
