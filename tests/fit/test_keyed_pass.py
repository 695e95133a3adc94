"""A keyed fit is one pass over the spectra, whatever it keys by, searches and trains; packed
statistics merged a piece at a time equal the unpacked fit."""

from __future__ import annotations

import sys
from collections import Counter

import dask
import numpy as np
import pytest

from snr_moe_dask.evaluation.graph import evaluate_model
from snr_moe_dask.fit.settings import with_data
from snr_moe_dask.kernels import gate_features
from snr_moe_dask.model import SNRBinnedRidge
from snr_moe_dask.store import rows, schema

EVERYTHING = {
    "by": [("teff", None), ("mh", [-1.0, 0.0])],  # quantile fine bins, explicit fine edges
    "fine_bins": 3,
    "edges": "auto:2,2",
    "alpha": "cv",
    "alphas": [1.0, 100.0],
    "cv": 2,
    "gate": "snr,pca:2,mag",
    "min_spectra": 5,
    # One pass: no refinement read (float64 products) and no calibration re-read,
    # each tested on its own (tests/fit/test_precision.py, test_error_model.py).
    "precision": "float64",
    "calibration": 0,
}


@pytest.fixture
def reads(monkeypatch):
    """Every chunk read of a task (variable, first spectrum) and every client-side read of
    a store variable, counted."""
    counted = {"task": Counter(), "client": Counter()}
    raw = rows.raw_chunk_file

    def counting(arr, rows_):
        # A prefetch only names the file to the kernel (posix_fadvise): not a read.
        if sys._getframe(1).f_code.co_name != "prefetch":
            counted["task"][(arr.path, rows_.start)] += 1
        return raw(arr, rows_)

    getitem = schema._ChunkReader.__getitem__

    def client_read(self, key):
        counted["client"][self.name] += 1
        return getitem(self, key)

    monkeypatch.setattr(rows, "raw_chunk_file", counting)
    monkeypatch.setattr(schema._ChunkReader, "__getitem__", client_read)
    return counted


def assert_one_pass(counted, n_spectra, chunk):
    starts = range(0, n_spectra, chunk)
    for var in ("flux", "error"):
        assert [counted["task"][(var, s)] for s in starts] == [1] * len(starts), var
    assert len(counted["task"]) == sum(1 for key in counted["task"] if key[1] in starts)
    assert "flux" not in counted["client"] and "error" not in counted["client"]


def test_a_searched_gated_cross_validated_fit_and_its_evaluation_read_each_chunk_once(
    store_pair, tmp_path, reads
):
    train, test = (str(p) for p in store_pair)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(**EVERYTHING).fit(train)
        assert_one_pass(reads, 2000, 256)
        assert set(reads["client"]) <= {"teff", "wavelength"}  # the quantiles' pre-read
        assert model.gate_["features"] == ["snr_median", "snr_mean", "pc1", "pc2", "mag"]
        assert {v for v, _ in reads["task"]} == {"flux", "error", "logg", "teff", "mh", "mag"}
        model.save(tmp_path / "m.zarr")
        for counter in reads.values():
            counter.clear()
        evaluate_model(
            tmp_path / "m.zarr", test, tmp_path / "out", routing="oracle,learned,soft", bootstrap=20
        )
    assert_one_pass(reads, 800, 200)


def test_pca_gate_features_are_projections_on_the_leading_eigenvectors(store_pair):
    from snr_moe_dask import open_spectra

    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0, gate="pca:3", precision="float64").fit(
            str(store_pair[0])
        )
    x = open_spectra(store_pair[0])["flux"].values.astype(np.float64)
    centred = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :3].T
    comps = model.gate_["components"]
    np.testing.assert_allclose(np.abs(np.sum(comps * top, axis=1)), 1.0, rtol=1e-8)
    np.testing.assert_allclose(model.gate_["component_mean"], x.mean(axis=0), rtol=1e-10)
    z = gate_features.project(x[:5], np.zeros((5, x.shape[1]), bool), x.mean(axis=0), comps)
    np.testing.assert_allclose(z, centred[:5] @ comps.T, rtol=1e-10)
    assert model.gate_["n_train"] == 2000  # 2000 spectra < the 20000 the pass keeps


def test_packed_statistics_merged_in_pieces_on_a_cluster_equal_the_unpacked_fit(store_pair, client):
    params = {"by": [("teff", [4600.0, 5200.0]), ("mh", [-0.8])], "alpha": "cv", "cv": 3}
    params |= {"alphas": [1.0, 100.0], "precision": "float64", "min_spectra": 1, "gate": False}
    plain = SNRBinnedRidge(**params, partitions=3).fit(str(store_pair[0]))
    with dask.config.set({"snr-moe.fit.pack-above-gb": 0}):
        assert with_data(SNRBinnedRidge(**params)._resolved(), 128, 2000, None).packed
        packed = SNRBinnedRidge(**params, partitions=3).fit(str(store_pair[0]))
    np.testing.assert_allclose(packed.coef_, plain.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(packed.alpha_, plain.alpha_)
    np.testing.assert_array_equal(packed.n_train_, plain.n_train_)
    assert packed.excluded_ == plain.excluded_


def test_refined_keyed_and_searched_fits_match_float64_and_carry_an_error_model(store_pair):
    """Refinement and calibration follow the pass's cells (keyed, and after a search)."""
    train = str(store_pair[0])
    keyed = {"by": [("teff", [4600.0, 5200.0]), ("mh", [-0.8])], "alpha": 10.0, "gate": False}
    searched = {"by": [("teff", None)], "fine_bins": 4, "edges": "auto:2", "alpha": 10.0}
    searched |= {"gate": False, "cv": 2}
    for params in (keyed, searched):
        params |= {"min_spectra": 5, "calibration": 1000}
        with dask.config.set(scheduler="sync"):
            exact = SNRBinnedRidge(**params, precision="float64").fit(train)
            refined = SNRBinnedRidge(**params).fit(train)
        assert refined.experts_ == exact.experts_
        y = open_spectra_target(store_pair[0])
        x = np.asarray(open_flux(store_pair[0]), dtype=np.float64)
        diff = np.einsum("np,ept->ent", x, refined.coef_ - exact.coef_)
        diff += (refined.intercept_ - exact.intercept_)[:, None, :]
        gap = np.abs(diff).max() / y.std()  # every expert's predictions, on every spectrum
        assert gap <= 1e-6, params
        cal = refined.calibration_
        assert cal is not None and cal["variance"].shape[0] == len(refined.experts_)


def open_spectra_target(path):
    from snr_moe_dask import open_spectra

    return open_spectra(path)["logg"].values


def open_flux(path):
    from snr_moe_dask import open_spectra

    return open_spectra(path)["flux"].values
