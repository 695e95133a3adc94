"""The fit against scikit-learn's Ridge, on real multi-process clusters and any chunking."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import local_client
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snr_moe_dask.model import SNRBinnedRidge, load_model

EDGES = [2.0, 4.0, 7.0]


def sklearn_models(x, y, snr, alpha=1e5, edges=EDGES):
    """Global + per-bin sklearn Ridge in float64 on the same rows; None for empty bins."""
    x = np.asarray(x, dtype=np.float64)
    bins = np.digitize(snr, edges, right=True)
    models = [Ridge(alpha=alpha).fit(x, y)]
    for k in range(len(edges) + 1):
        rows = bins == k
        models.append(Ridge(alpha=alpha).fit(x[rows], y[rows]) if rows.any() else None)
    return models


def assert_predictions_match(model, refs, x, y, tol=1e-6):
    """Each expert's predictions agree with sklearn's to tol x std(y)."""
    x = np.asarray(x, dtype=np.float64)
    scale = tol * np.std(y)
    for e, ref in enumerate(refs):
        if ref is None:
            continue
        ours = x @ model.coef_[e, :, 0] + model.intercept_[e, 0]
        np.testing.assert_allclose(
            ours, ref.predict(x), atol=scale, rtol=0, err_msg=f"expert {model.experts_[e]}"
        )


def test_store_fit_matches_sklearn_on_a_real_cluster(store_pair, client):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    model = SNRBinnedRidge(alpha=1e5, precision="float64", min_spectra=1).fit(store_pair[0])
    x, y, snr = ds["flux"].values, ds["logg"].values, ds["snr"].values
    assert_predictions_match(model, sklearn_models(x, y, snr), x, y, tol=1e-9)
    from_dataset = SNRBinnedRidge(alpha=1e5, precision="float64", min_spectra=1).fit(ds)
    np.testing.assert_array_equal(model.coef_, from_dataset.coef_)
    snr = model.fit_record.snr
    assert snr.shape == (2000,) and np.isfinite(snr).all()
    assert model.n_train_[0] == 2000 and model.n_train_[1:].sum() == 2000


def test_float32_products_match_sklearn_to_1e6_std(store_pair, client):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    model = SNRBinnedRidge(alpha=1e5, precision="float32", min_spectra=1).fit(store_pair[0])
    x, y, snr = ds["flux"].values, ds["logg"].values, ds["snr"].values
    assert_predictions_match(model, sklearn_models(x, y, snr), x, y, tol=1e-6)


def make_arrays(seed, n, p, offset=0.0, snr_range=(0, 9)):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, p)) * rng.uniform(0.2, 3, p) + offset).astype(np.float32)
    w = rng.normal(size=p)
    y = x.astype(float) @ w / p + rng.normal(size=n)
    snr = rng.uniform(*snr_range, n)
    return x, y, snr


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_badly_centred_features(offset):
    x, y, snr = make_arrays(0, 500, 20, offset=offset)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=3.0, precision="float64", min_spectra=1).fit(
            da.from_array(x, chunks=70), y, snr=snr
        )
    assert_predictions_match(model, sklearn_models(x, y, snr, alpha=3.0), x, y)


def test_single_spectrum_bin_and_empty_bin():
    x, y, snr = make_arrays(1, 300, 10, snr_range=(0.5, 6.5))  # bin H (> 7) is empty
    snr[17] = 8.0  # ... now bin H holds exactly one spectrum
    snr[snr <= 2] = 3.0  # and bin X is empty
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0, precision="float64", min_spectra=1).fit(x, y, snr=snr)
    refs = sklearn_models(x, y, snr, alpha=10.0)
    assert refs[1] is None and model.n_train_[1] == 0 and model.n_train_[4] == 1
    assert_predictions_match(model, refs, x, y)
    assert "X" in model.fallback_ and "0 training spectra" in model.fallback_["X"]
    np.testing.assert_array_equal(model.coef_[1], model.coef_[0])
    assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()


def test_min_spectra_falls_back_to_global():
    x, y, snr = make_arrays(2, 400, 8)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=1.0, min_spectra=150).fit(x, y, snr=snr)
    assert set(model.fallback_) == {"X", "L", "M", "H"}  # ~100 each
    assert model.experts_[1:] == model.bin_names_  # bin k is served by expert k + 1
    np.testing.assert_array_equal(model.coef_[2], model.coef_[0])


def test_eigh_fallback_is_reported():
    x, y, snr = make_arrays(3, 30, 50)  # more pixels than spectra
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=0.0, precision="float64", min_spectra=1).fit(x, y, snr=snr)
    assert model.solver_["global"]["solver"] == "eigh"
    assert "not positive definite" in model.solver_["global"]["reason"]
    xf = x.astype(np.float64)
    ref = np.linalg.lstsq(xf - xf.mean(0), y - y.mean(), rcond=None)[0]
    np.testing.assert_allclose(model.coef_[0, :, 0], ref, atol=1e-6 * np.abs(ref).max())


def test_per_expert_alpha_and_standardize():
    x, y, snr = make_arrays(4, 600, 12)
    alpha = {"global": 5.0, "X": 50.0, "L": 0.5, "M": 5.0, "H": 500.0}
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=alpha, standardize=True, precision="float64", min_spectra=1
        ).fit(x, y, snr=snr)
    bins = np.digitize(snr, EDGES, right=True)
    xf = x.astype(np.float64)
    for e, name in enumerate(model.experts_):
        rows = np.ones(len(x), bool) if e == 0 else bins == e - 1
        ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha[name])).fit(xf[rows], y[rows])
        ours = xf[rows] @ model.coef_[e, :, 0] + model.intercept_[e, 0]
        np.testing.assert_allclose(ours, ref.predict(xf[rows]), atol=1e-8 * y.std())


def test_several_targets(store_pair):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(
            alpha=1e3, target=["logg", "teff", "mh"], precision="float64", min_spectra=1
        ).fit(ds)
    x = ds["flux"].values
    ys = np.column_stack([ds[t].values for t in ("logg", "teff", "mh")])
    ref = Ridge(alpha=1e3).fit(x.astype(np.float64), ys)
    np.testing.assert_allclose(model.coef_[0], ref.coef_.T, rtol=1e-8, atol=1e-12)
    assert model.predict(ds).shape == (2000, 3)


def test_observed_routing_bins_by_median_flux_over_error(store_pair):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(routing="observed", precision="float64", min_spectra=1).fit(ds)
    observed = np.median(ds["flux"].values / ds["error"].values, axis=1)
    np.testing.assert_allclose(model.fit_record.snr, observed, rtol=1e-6)
    counts = np.bincount(np.digitize(observed, EDGES, right=True), minlength=4)
    np.testing.assert_array_equal(model.n_train_[1:], counts)


# ---------------------------------------------------------------- invariance


@settings(max_examples=15, deadline=None)
@given(chunk=st.integers(7, 400), partitions=st.integers(1, 6))
def test_float64_fit_independent_of_chunks_and_partitions(small_survey, chunk, partitions):
    ds = small_survey.chunk({"spectrum": chunk})
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha=1e3, precision="float64", min_spectra=1, partitions=partitions
        ).fit(ds)
        ref = SNRBinnedRidge(alpha=1e3, precision="float64", min_spectra=1, partitions=1).fit(
            small_survey.chunk({"spectrum": 900})
        )
    np.testing.assert_allclose(
        model.coef_, ref.coef_, rtol=1e-10, atol=1e-10 * np.abs(ref.coef_).max()
    )
    np.testing.assert_allclose(model.intercept_, ref.intercept_, rtol=1e-10)


def test_same_graph_bit_identical_on_processes_threads_and_workers(small_survey, client):
    ds = small_survey.chunk({"spectrum": 100})

    def fit():
        return SNRBinnedRidge(alpha=1e3, precision="float64", min_spectra=1, partitions=3).fit(ds)

    on_processes = fit()  # the 2-process cluster
    again = fit()
    with dask.config.set(scheduler="threads"):
        threads = fit()
    with local_client(3):
        three = fit()
    for other in (again, threads, three):
        np.testing.assert_array_equal(on_processes.coef_, other.coef_)
        np.testing.assert_array_equal(on_processes.intercept_, other.intercept_)


def test_float32_fit_close_across_chunkings(small_survey):
    with dask.config.set(scheduler="sync"):
        a = SNRBinnedRidge(alpha=1e3, min_spectra=1).fit(small_survey.chunk({"spectrum": 50}))
        b = SNRBinnedRidge(alpha=1e3, min_spectra=1).fit(small_survey.chunk({"spectrum": 450}))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=0, atol=1e-6 * np.abs(b.coef_).max())


# ---------------------------------------------------------------- persistence


def test_save_load_roundtrip_is_plain_zarr(store_pair, tmp_path):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(min_spectra=1).fit(ds)
    path = model.save(tmp_path / "model.zarr")
    stored = xr.open_zarr(path, consolidated=False)
    assert stored["coef"].dims == ("expert", "wavelength", "target")
    assert stored["intercept"].dims == ("expert", "target")
    assert stored["expert"].values.tolist() == ["global", "X", "L", "M", "H"]
    for key in (
        "bin_edges",
        "bin_names",
        "routing",
        "package_version",
        "train_store",
        "train_fingerprint",
        "fallback",
        "format_version",
    ):
        assert key in stored.attrs
    assert stored.attrs["train_store"] == str(store_pair[0])
    files = [p for p in path.rglob("*") if p.is_file()]
    assert not any(p.suffix in (".pkl", ".pickle") for p in files)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(loaded.predict(ds).compute(), model.predict(ds).compute())


def test_save_refuses_overwrite_and_interrupted_save_keeps_old(store_pair, tmp_path, monkeypatch):
    from snr_moe_dask import open_spectra

    ds = open_spectra(store_pair[0])
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(min_spectra=1).fit(ds)
    path = model.save(tmp_path / "model.zarr")
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        model.save(path)
    before = load_model(path).coef_.copy()

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(path, overwrite=True)
    np.testing.assert_array_equal(load_model(path).coef_, before)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zarr"]


def test_sklearn_estimator_api():
    from sklearn.base import clone

    m = SNRBinnedRidge(alpha=7.0, bins=[3.0], bin_names=["lo", "hi"])
    assert m.get_params()["alpha"] == 7.0
    c = clone(m).set_params(alpha=9.0)
    assert c.alpha == 9.0 and m.alpha == 7.0
    x, y, snr = make_arrays(5, 200, 6)
    with dask.config.set(scheduler="sync"):
        fitted = c.fit(x, y, snr=snr)
        assert fitted.experts_ == ["global", "lo", "hi"]
        assert isinstance(fitted.predict(x, snr=snr), np.ndarray)
        assert -1.0 < fitted.score(x, y, snr=snr) <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"routing": "magic"}, r"routing must be one of \('oracle', 'observed'\); got rout"),
        ({"precision": "float16"}, r"precision must be one of .* got precision='float16'"),
        ({"bins": [4, 2]}, r"bin edges must be finite and strictly increasing"),
        ({"bins": [2, 4], "bin_names": ["a"]}, r"2 bin edges make 3 bins, but 1 names"),
        ({"alpha": {"Z": 1.0}}, r"alpha names experts \['Z'\] that do not exist"),
        ({"alpha": -1.0}, r"alpha must be >= 0"),
        ({"max_bad_fraction": 2.0}, r"max_bad_fraction must be in \[0, 1\]"),
    ],
)
def test_bad_settings_fail_before_compute(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SNRBinnedRidge(**kwargs).fit(np.zeros((3, 2)), np.zeros(3), snr=np.ones(3))


def test_oracle_routing_needs_snr():
    with pytest.raises(ValueError, match="oracle routing needs the true SNR"):
        SNRBinnedRidge().fit(np.zeros((3, 2)), np.zeros(3))


def test_newer_model_format_is_refused(tmp_path):
    import zarr

    x, y, snr = make_arrays(6, 100, 4)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(min_spectra=1).fit(x, y, snr=snr)
    path = model.save(tmp_path / "m.zarr")
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["format_version"] = 99
    with pytest.raises(
        ValueError,
        match=r"model store '.*m.zarr' has format_version 99, but "
        r"this snr_moe_dask reads versions up to 2; upgrade",
    ):
        load_model(path)


def test_threads_folding_at_once_give_the_sequential_result(tmp_path):
    """Several threads of one process fold chunks at once (threaded scheduler, or a
    worker with several threads): each needs its own float32 product buffer."""
    from snr_moe_dask import generate_survey

    store = tmp_path / "train.zarr"
    with dask.config.set(scheduler="threads"):
        generate_survey(store, 2400, pixels=512, chunk_size=100, seed=5)
    with dask.config.set(scheduler="sync"):
        sequential = SNRBinnedRidge(alpha=1e3, partitions=4, gate=False).fit(store)
    with dask.config.set(scheduler="threads", num_workers=4):
        threaded = SNRBinnedRidge(alpha=1e3, partitions=4, gate=False).fit(store)
    np.testing.assert_array_equal(threaded.coef_, sequential.coef_)


@pytest.mark.parametrize("alpha", [1e3, "cv"])
def test_parallel_expert_solves_give_the_sequential_solution(small_survey, client, alpha):
    """The graph solves each expert in its own task, from its own statistics, and
    puts them together; the solution is the in-process one, bit for bit (a
    fallback expert and, with CV, the chosen and fixed-alpha solutions included)."""
    from snr_moe_dask import inputs
    from snr_moe_dask.fit.graph import build_chains, cv_graph, solve_graph
    from snr_moe_dask.fit.settings import with_data
    from snr_moe_dask.fit.solve import solve_experts
    from snr_moe_dask.fit.tasks import pool_experts

    model = SNRBinnedRidge(alpha=alpha, min_spectra=160, gate=False, calibration=0)
    settings = model._resolved()
    source, ds = model._source(small_survey, settings)
    settings = with_data(
        settings, source.n_pixels, sum(source.rows), inputs.values_reader(ds, None, None)
    )
    total, _ = build_chains(source, settings, 2)
    cv = cv_graph(total, settings)
    pooled = dask.delayed(pool_experts)(total, settings, None)
    _, solved = solve_graph(total, pooled, settings, cv, None)
    acc, cv_results, parallel = dask.compute(total, cv, solved)
    sequential = solve_experts(acc, settings, cv_results)
    assert parallel["fallback"] and parallel["fallback"] == sequential["fallback"]
    for key in ("coef", "intercept", "mean_x", "alpha", "n_train", "snr", "cell_map"):
        np.testing.assert_array_equal(parallel[key], sequential[key], err_msg=key)
    for key in ("experts", "solver", "estimate", "excluded", "keys"):
        assert parallel[key] == sequential[key], key
    if alpha == "cv":
        for key in ("coef_fixed", "intercept_fixed", "mse", "alphas"):
            np.testing.assert_array_equal(parallel["cv"][key], sequential["cv"][key], err_msg=key)
