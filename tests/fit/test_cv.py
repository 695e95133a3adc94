"""One-pass K-fold CV of alpha against explicit scikit-learn K-fold refits."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge
from sklearn.model_selection import PredefinedSplit, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snr_moe_dask import open_spectra
from snr_moe_dask.cli import main
from snr_moe_dask.kernels.cv import alpha_grid, assign_folds
from snr_moe_dask.model import SNRBinnedRidge, load_model

EDGES = [2.0, 4.0, 7.0]
GRID = alpha_grid(1e-1, 1e7, 9)


def sklearn_cv_mse(x, y, folds, alphas, standardize=False):
    """Per-fold held-out MSE of explicit scikit-learn refits, shape (n_folds, n_alphas)."""
    out = []
    for a in alphas:
        est = Ridge(alpha=a)
        if standardize:
            est = make_pipeline(StandardScaler(), est)
        scores = cross_validate(
            est, x, y, cv=PredefinedSplit(folds), scoring="neg_mean_squared_error"
        )
        out.append(-scores["test_score"])
    return np.array(out).T


def expert_rows(snr, edges=EDGES):
    bins = np.digitize(snr, edges, right=True)
    return [np.ones(len(snr), bool)] + [bins == k for k in range(len(edges) + 1)]


def test_cv_mse_equals_explicit_sklearn_kfold_for_every_expert(store_pair, client):
    ds = open_spectra(store_pair[0])
    model = SNRBinnedRidge(alpha="cv", alphas=GRID, cv=4, precision="float64", min_spectra=1).fit(
        store_pair[0]
    )
    x, y, snr = ds["flux"].values.astype(np.float64), ds["logg"].values, ds["snr"].values
    folds = assign_folds(np.arange(len(y)), 4, 0)
    for e, rows in enumerate(expert_rows(snr)):
        ref = sklearn_cv_mse(x[rows], y[rows], folds[rows], GRID)
        np.testing.assert_allclose(
            model.cv_["mse"][e], ref, rtol=1e-8, err_msg=f"expert {model.experts_[e]}"
        )
        best = GRID[np.argmin(ref.mean(axis=0))]
        assert model.alpha_[e] == best
        final = Ridge(alpha=best).fit(x[rows], y[rows])
        np.testing.assert_allclose(
            x[rows] @ model.coef_[e, :, 0] + model.intercept_[e, 0],
            final.predict(x[rows]),
            atol=1e-9 * y.std(),
        )
        fixed = Ridge(alpha=1e5).fit(x[rows], y[rows])
        np.testing.assert_allclose(
            model.cv_["coef_fixed"][e, :, 0], fixed.coef_, atol=1e-9 * np.abs(fixed.coef_).max()
        )
    se = ref.std(axis=0, ddof=1) / 2
    np.testing.assert_allclose(model.cv_["se"][-1], se, rtol=1e-6)


def test_cv_with_standardize_matches_scaler_pipeline():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 15)) * rng.uniform(0.1, 5, 15) + 3
    y = x @ rng.normal(size=15) + rng.normal(size=600) * 4
    snr = rng.uniform(0, 9, 600)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha="cv", alphas=GRID, cv=3, precision="float64", standardize=True, min_spectra=1
        ).fit(x, y, snr=snr)
    folds = assign_folds(np.arange(600), 3, 0)
    for e, rows in enumerate(expert_rows(snr)):
        ref = sklearn_cv_mse(x[rows], y[rows], folds[rows], GRID, standardize=True)
        np.testing.assert_allclose(model.cv_["mse"][e], ref, rtol=1e-8)


@settings(max_examples=15, deadline=None)
@given(
    chunk=st.integers(7, 200),
    n_folds=st.integers(2, 6),
    seed=st.integers(0, 2**31),
)
def test_cv_does_not_depend_on_chunking(chunk, n_folds, seed):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)) + 1
    y = x @ rng.normal(size=8) + rng.normal(size=400)
    snr = rng.uniform(0, 9, 400)
    params = dict(alpha="cv", alphas=GRID, cv=n_folds, cv_seed=seed, precision="float64")
    with dask.config.set(scheduler="sync"):
        a = SNRBinnedRidge(**params, min_spectra=1).fit(x, y, snr=snr)
        b = SNRBinnedRidge(**params, min_spectra=1, partitions=3).fit(
            da.from_array(x, chunks=(chunk, -1)), y, snr=snr
        )
    np.testing.assert_allclose(a.cv_["mse"], b.cv_["mse"], rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(a.alpha_, b.alpha_)


def test_fold_assignment_is_deterministic_and_balanced():
    idx = np.arange(100_000)
    folds = assign_folds(idx, 5, 7)
    np.testing.assert_array_equal(folds, assign_folds(idx, 5, 7))
    np.testing.assert_array_equal(folds[5000:6000], assign_folds(idx[5000:6000], 5, 7))
    counts = np.bincount(folds, minlength=5)
    assert np.all(np.abs(counts / 20_000 - 1) < 0.03), counts
    assert (assign_folds(idx, 5, 8) != folds).mean() > 0.7


def test_an_expert_with_too_few_folds_keeps_the_fixed_alpha():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 5)), rng.normal(size=300)
    snr = np.where(np.arange(300) == 0, 1.0, 5.0)  # bin X holds one spectrum: one fold
    with dask.config.set(scheduler="sync", **{"snr-moe.fit.cv.compare-alpha": 7.0}):
        model = SNRBinnedRidge(alpha="cv", alphas=GRID, cv=3, min_spectra=1).fit(x, y, snr=snr)
    assert model.alpha_[1] == 7.0
    assert "fewer than 2 non-empty CV folds" in model.solver_["X"]["reason"]
    assert np.isnan(model.cv_["mean"][1]).all()
    assert np.isfinite(model.cv_["mean"][0]).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": "auto"}, 'alpha must be a number, a dict or "cv"'),
        ({"alpha": "cv", "cv": 1}, "at least 2 folds"),
        ({"alpha": "cv", "alphas": [1.0, -1.0]}, "positive finite"),
    ],
)
def test_bad_cv_settings_fail_before_compute(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SNRBinnedRidge(**kwargs)._resolved()


def test_cli_alpha_cv_saves_curves(store_pair, tmp_path, capsys):
    out = tmp_path / "m.zarr"
    code = main(
        [
            "fit",
            str(store_pair[0]),
            "--model",
            str(out),
            "--alpha",
            "cv",
            "--alpha-grid",
            "1:1e8:9",
            "--cv-folds",
            "3",
            "--workers",
            "2",
            "--threads-per-worker",
            "1",
        ]
    )
    assert code == 0
    assert "alpha by 3-fold CV over 9 values" in capsys.readouterr().out
    model = load_model(out)
    assert model.cv_["mse"].shape == (5, 3, 9)
    np.testing.assert_allclose(model.cv_["alphas"], np.geomspace(1, 1e8, 9))
    assert set(model.alpha_) <= set(model.cv_["alphas"])


def explicit_gcv(x, y, alpha, standardize=False):
    """GCV from scikit-learn's fit and the explicit hat matrix: n RSS / (n - df)^2, with
    df = trace(H) + 1 for the unpenalized intercept."""
    est = Ridge(alpha=alpha)
    if standardize:
        est = make_pipeline(StandardScaler(), est)
    rss = float(((y - est.fit(x, y).predict(x)) ** 2).sum())
    xc = x - x.mean(axis=0)
    if standardize:
        sd = x.std(axis=0)
        xc = xc / np.where(sd > 0, sd, 1.0)
    hat = xc @ np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T)
    n = len(y)
    df = np.trace(hat) + 1.0
    return n * rss / (n - df) ** 2


@pytest.mark.parametrize("standardize", [False, True])
def test_gcv_equals_explicit_hat_matrix_for_every_expert(store_pair, standardize):
    ds = open_spectra(store_pair[0])
    grid = alpha_grid(1e0, 1e6, 7)
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(
            alpha="gcv",
            alphas=grid,
            precision="float64",
            min_spectra=1,
            gate=False,
            standardize=standardize,
        ).fit(store_pair[0])
    x, y, snr = ds["flux"].values.astype(np.float64), ds["logg"].values, ds["snr"].values
    assert model.cv_["method"] == "gcv"
    for e, rows in enumerate(expert_rows(snr)):
        ref = np.array([explicit_gcv(x[rows], y[rows], a, standardize) for a in grid])
        np.testing.assert_allclose(model.cv_["mean"][e], ref, rtol=1e-8)
        assert model.alpha_[e] == grid[np.argmin(ref)]
        final = Ridge(alpha=model.alpha_[e])
        if standardize:
            final = make_pipeline(StandardScaler(), final)
        np.testing.assert_allclose(
            x[rows] @ model.coef_[e, :, 0] + model.intercept_[e, 0],
            final.fit(x[rows], y[rows]).predict(x[rows]),
            rtol=0,
            atol=1e-9 * y.std(),
        )


def test_gcv_model_round_trips_and_the_cli_takes_it(store_pair, tmp_path):
    path = tmp_path / "m.zarr"
    args = ["fit", str(store_pair[0]), "--model", str(path), "--alpha", "gcv"]
    args += ["--alpha-grid", "1:1e6:7", "--min-spectra", "1", "--workers", "1", "--quiet"]
    assert main(args) == 0
    loaded = load_model(path)
    assert loaded.cv_["method"] == "gcv" and loaded.cv_["folds"] == 1
    assert loaded.cv_["mean"].shape == (5, 7)
