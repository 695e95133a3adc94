"""The uncertainty kernels: the leave-one-out identity against scikit-learn refits,
the SNR-binned error model, and the routed (hard and mixture) uncertainties."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from snr_moe_dask.kernels import calibration as C


def centred_system(x, alpha):
    mean = x.mean(axis=0)
    xc = x - mean
    return xc, xc.T @ xc


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("n,p,alpha", [(40, 8, 3.0), (25, 40, 10.0), (30, 40, 0.0)])
def test_loo_residuals_equal_refits_without_each_spectrum(n, p, alpha, standardize):
    rng = np.random.default_rng(n + p)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p)
    y = x @ rng.normal(size=p) + rng.normal(size=n)
    xc, sxx = centred_system(x, alpha)
    factor = C.factor_system(sxx, n, alpha, standardize=standardize)
    scale = x.std(axis=0) if standardize else np.ones(p)
    z = x / scale
    full = Ridge(alpha=alpha, solver="svd").fit(z, y) if alpha else None
    coef_pred = full.predict(z) if full else None
    if alpha == 0:  # singular (p > n): the pseudo-inverse is the minimum-norm refit
        assert factor["kind"] == "eigh"
        return
    h = C.hat_diagonal(xc, factor)
    loo = C.loo_residuals(y - coef_pred, h)
    for i in range(n):
        keep = np.arange(n) != i
        refit = Ridge(alpha=alpha, solver="svd").fit(z[keep], y[keep])
        assert loo[i] == pytest.approx(y[i] - refit.predict(z[i : i + 1])[0], rel=1e-9, abs=1e-9)


def test_hat_diagonal_is_the_hat_matrix_diagonal_with_the_intercept():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    xc, sxx = centred_system(x, 2.0)
    h = C.hat_diagonal(xc, C.factor_system(sxx, 30, 2.0))
    hat = xc @ np.linalg.solve(sxx + 2.0 * np.eye(5), xc.T) + 1 / 30
    np.testing.assert_allclose(h, np.diag(hat), rtol=1e-12)


def test_calibration_table_is_the_mean_squared_error_per_quantile_bin():
    rng = np.random.default_rng(1)
    snr = rng.uniform(0.5, 9, 1000)
    sq = rng.exponential(size=(1000, 3, 2)) / snr[:, None, None]
    table = C.calibration_table(snr, sq, 4)
    edges = np.quantile(snr, [0, 0.25, 0.5, 0.75, 1])
    for e in range(3):
        np.testing.assert_allclose(table["snr_edges"][e], edges)
        for b in range(4):
            inside = (snr >= edges[b]) & ((snr < edges[b + 1]) | (b == 3))
            np.testing.assert_allclose(table["variance"][e, b], sq[inside, e].mean(axis=0))
            assert table["snr_centre"][e, b] == np.median(snr[inside])
            assert table["count"][e, b] == inside.sum()
    assert (table["count"].sum(axis=1) == 1000).all()
    assert C.calibration_table(np.zeros(0), np.zeros((0, 3, 2)), 4) is None
    one = C.calibration_table(np.full(5, 2.0), np.ones((5, 1, 1)), 4)
    assert one["count"].sum() == 5 and np.nanmax(one["variance"]) == 1.0


def test_an_experts_table_is_over_the_spectra_it_serves_only():
    rng = np.random.default_rng(2)
    snr = rng.uniform(0.5, 9, 4000)
    served = np.stack([np.ones(4000, bool), snr > 7.0], axis=1)
    sq = np.where(served[:, :, None], 1.0, 100.0)  # others' errors must not count
    table = C.calibration_table(snr, sq, 8, served)
    high = table["snr_edges"][1]
    assert high[0] == snr[snr > 7].min() and high[-1] == snr.max()
    used = table["count"][1] > 0
    assert used.sum() == min(8, (snr > 7).sum() // C.MIN_PER_BIN)
    np.testing.assert_array_equal(table["variance"][1][used], 1.0)
    assert table["count"][1].sum() == (snr > 7).sum()
    np.testing.assert_allclose(table["snr_edges"][0], np.quantile(snr, np.linspace(0, 1, 9)))
    few = served.copy()
    few[:, 1] = np.arange(4000) < 450  # 450 served spectra: 450 // MIN_PER_BIN bins
    table = C.calibration_table(snr, sq, 8, few)
    assert (table["count"][1] > 0).sum() == 450 // C.MIN_PER_BIN < 8
    assert table["count"][1].sum() == 450
    assert table["count"][1][:2].min() >= C.MIN_PER_BIN and (table["count"][0] > 0).all()
    empty = C.calibration_table(snr, sq, 8, np.zeros_like(served))
    assert np.isnan(empty["variance"]).all() and not empty["count"].any()


def test_expert_variance_interpolates_between_bin_medians_and_clamps():
    table = {
        "snr_centre": np.array([[1.0, 3.0, np.nan]]),
        "variance": np.array([[[4.0], [2.0], [np.nan]]]),
    }
    out = C.expert_variance(table, np.array([0.0, 1.0, 2.0, 3.0, 10.0, np.nan]))
    np.testing.assert_array_equal(out[:5, 0, 0], [4.0, 4.0, 3.0, 2.0, 2.0])
    assert np.isnan(out[5]).all()


def test_routed_sigma_hard_and_mixture():
    pred = np.array([[[0.0], [1.0], [3.0]], [[5.0], [1.0], [3.0]]])  # (m=2, experts 3, t 1)
    var = np.array([[[9.0], [1.0], [4.0]], [[9.0], [1.0], [4.0]]])
    hard = {"y": pred[:, 1], "bin": np.array([0, -1]), "fallback": np.array([False, True])}
    np.testing.assert_array_equal(C.routed_sigma("observed", hard, pred, var, None)[:, 0], [1, 3])
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    y = np.einsum("mk,mkt->mt", p, pred[:, 1:])
    soft = {"y": np.where([[False], [True]], pred[:, 0], y), "fallback": np.array([False, True])}
    sigma = C.routed_sigma("soft", soft, pred, var, p)[:, 0]
    # 0.5 (1 + (1 - 2)^2) + 0.5 (4 + (3 - 2)^2) = 3.5; the fallback row takes the global 9
    np.testing.assert_allclose(sigma, np.sqrt([3.5, 9.0]))


def test_sample_chunks_are_evenly_spread_whole_chunks():
    assert C.sample_chunks([100] * 10, 300) == [0, 4, 9]
    assert C.sample_chunks([100] * 10, 10) == [0]
    assert C.sample_chunks([100] * 10, 10**6) == list(range(10))
    assert C.sample_chunks([100] * 10, 0) == []


def test_routed_sigma_soft_scales_the_mixture_bound_by_the_soft_factor():
    table = {
        "snr_centre": np.array([[1.0, 3.0]] * 3),
        "variance": np.full((3, 2, 1), 9.0),
        "soft_snr_centre": np.array([1.0, 3.0]),
        "soft_scale": np.array([[0.5], [0.25]]),
    }
    snr = np.array([0.5, 2.0, 5.0])
    scale = C.soft_scale(table, snr)
    np.testing.assert_array_equal(scale[:, 0], [0.5, 0.375, 0.25])
    assert C.soft_scale({k: table[k] for k in ("snr_centre", "variance")}, snr) is None
    pred = np.zeros((3, 3, 1))
    pred[:, 2] = 2.0  # the second bin's expert: 2, the first's 0; p = 1/2 each: y = 1
    routed = {"y": np.ones((3, 1)), "fallback": np.array([False, True, False])}
    var = C.expert_variance(table, snr)
    sigma = C.routed_sigma("soft", routed, pred, var, np.full((3, 2), 0.5), scale)[:, 0]
    bound = 9.0 + 1.0  # sum_k p_k (sigma_k^2 + (y_k - y)^2)
    np.testing.assert_allclose(sigma, np.sqrt([0.5 * bound, 9.0, 0.25 * bound]))


def test_cell_weighted_edges_give_a_small_cell_as_many_bins_as_a_large_one():
    rng = np.random.default_rng(2)
    snr = np.concatenate([rng.uniform(0, 5, 900), rng.uniform(5, 10, 100)])
    cell = np.repeat([0, 1, -1], [900, 99, 1])
    w = C.cell_weights(cell)
    assert w[-1] == 0 and np.isclose(w[:900].sum(), 1) and np.isclose(w[900:].sum(), 1)
    edges = C.weighted_edges(snr, w, 4)
    assert edges[0] == snr.min() and edges[-1] == snr.max()
    assert np.isclose(edges[2], 5.0, atol=0.1)  # half the bins for the 99 high-SNR spectra
    table = C.calibration_table(snr, np.ones((snr.size, 1, 1)), 4, weight=w)
    np.testing.assert_allclose(table["snr_edges"][0], edges)


@pytest.mark.parametrize("seed", range(5))
def test_non_increasing_is_sklearns_isotonic_fit(seed):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed)
    v = np.sort(rng.uniform(1, 5, 12))[::-1] + rng.normal(0, 0.8, 12)
    w = rng.integers(1, 300, 12).astype(float)
    want = IsotonicRegression(increasing=False).fit_transform(np.arange(12), v, sample_weight=w)
    np.testing.assert_allclose(C.non_increasing(v, w), want, rtol=1e-12)
    v[[2, 7]] = np.nan  # empty bins stay empty and are skipped
    got = C.non_increasing(v, w)
    assert np.isnan(got[[2, 7]]).all() and (np.diff(got[np.isfinite(got)]) <= 0).all()
