"""One shape for a fitted model: saved and loaded, it has every fitted attribute the
fresh model had, with equal values."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from snr_moe_dask.model import SNRBinnedRidge, load_model
from snr_moe_dask.persist import FITTED
from snr_moe_dask.store.outputs import quiet_consolidation


def equal(a, b) -> bool:
    """Deep equality for the values of fitted attributes (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        return a.shape == b.shape and bool(np.all(a == b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b and type(a) is type(b)


@pytest.mark.parametrize(
    "params",
    [
        {"alpha": 10.0},  # with the gate (the default)
        {"alpha": "cv", "cv": 2, "alphas": [1.0, 100.0, 1e4], "gate": False},
        {"alpha": "gcv", "alphas": [1.0, 100.0, 1e4], "standardize": True},
        {"alpha": 10.0, "by": [("teff", [4500, 5250]), ("mh", [-1, 0])], "gate": "snr,pca:2"},
        {
            "alpha": "cv",
            "cv": 2,
            "alphas": [1.0, 100.0],
            "by": [("snr", None), ("mh", [-1.0, 0.0])],
            "fine_bins": 3,
            "edges": "auto:2",
        },
    ],
    ids=["gate", "kfold", "gcv", "keyed-pca-gate", "auto-edges"],
)
def test_a_loaded_model_has_every_fitted_attribute_of_the_fresh_one(store_pair, tmp_path, params):
    with dask.config.set(scheduler="sync"):
        fresh = SNRBinnedRidge(min_spectra=1, **params).fit(str(store_pair[0]))
    fresh.save(tmp_path / "m.zarr")
    loaded = load_model(tmp_path / "m.zarr")
    for name in FITTED:
        assert hasattr(fresh, name) and hasattr(loaded, name), name
        assert equal(getattr(fresh, name), getattr(loaded, name)), name
    assert loaded.get_params() == SNRBinnedRidge(**loaded.get_params()).get_params()
    assert fresh.fit_record is not None and loaded.fit_record is None


def test_an_array_fit_round_trips_without_a_wavelength_grid(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = x @ rng.normal(size=6)
    with dask.config.set(scheduler="sync"):
        fresh = SNRBinnedRidge(alpha=1.0, routing="observed", gate=False, min_spectra=1).fit(x, y)
    fresh.save(tmp_path / "m.zarr")
    loaded = load_model(tmp_path / "m.zarr")
    assert fresh.wavelength_ is None and loaded.wavelength_ is None
    for name in FITTED:
        assert equal(getattr(fresh, name), getattr(loaded, name)), name
    np.testing.assert_array_equal(loaded.predict(x), fresh.predict(x))


def test_a_version_1_model_store_reads_as_the_snr_split(store_pair, tmp_path):
    """A store written before keys existed (format 1: no ``keys`` attribute, no search)."""
    import zarr

    with dask.config.set(scheduler="sync"):
        fresh = SNRBinnedRidge(alpha=10.0, min_spectra=1).fit(str(store_pair[0]))
    path = fresh.save(tmp_path / "m.zarr")
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["keys"]
    group.attrs["format_version"] = 1
    with quiet_consolidation():
        zarr.consolidate_metadata(str(path))
    loaded = load_model(path)
    assert loaded.keys_ == [("snr", [2.0, 4.0, 7.0])] and loaded.edge_search_ is None
    assert loaded.get_params()["bins"] == [2.0, 4.0, 7.0] and loaded.get_params()["by"] is None
    for name in FITTED:
        assert equal(getattr(fresh, name), getattr(loaded, name)), name
