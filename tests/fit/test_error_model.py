"""The fit's error model is computed the documented way: every expert's exact
leave-one-out (or, outside its bin, plain held-out) residuals on the sampled
chunks, equal to scikit-learn refits, averaged over the spectra it serves in
observed-SNR quantile bins."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from snr_moe_dask.kernels.calibration import calibration_table, cell_weights, expert_variance
from snr_moe_dask.model import SNRBinnedRidge


def survey(n=480, p=6, seed=0):
    rng = np.random.default_rng(seed)
    snr = rng.uniform(1.0, 6.0, n)
    flux = 10.0 + rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, p)
    error = flux / snr[:, None]  # observed SNR = median(flux / error) = snr
    y = flux @ rng.normal(size=p) + rng.normal(size=n) / snr
    return flux, y, snr, error


def sklearn_held_out(flux, y, members, alpha):
    """Each spectrum's error under a ridge fit on ``members``: a refit without it when
    it is a member (leave-one-out), the fit itself when it is not."""
    fit = Ridge(alpha=alpha, solver="svd").fit(flux[members], y[members])
    out = y - fit.predict(flux)
    for i in np.flatnonzero(members):
        keep = members.copy()
        keep[i] = False
        out[i] = (
            y[i] - Ridge(alpha=alpha, solver="svd").fit(flux[keep], y[keep]).predict(flux[[i]])[0]
        )
    return out


@pytest.mark.parametrize("routing", ["oracle", "observed"])
def test_error_model_is_binned_loo_residuals_of_sklearn_refits(routing):
    flux, y, snr, error = survey(seed=3)
    model = SNRBinnedRidge(
        alpha=2.0, bins=[3.0], bin_names=["lo", "hi"], routing=routing, precision="float64",
        min_spectra=1, gate=False, calibration=10**6,
    )  # fmt: skip
    with dask.config.set({"scheduler": "sync", "snr-moe.fit.calibration.snr-bins": 4}):
        model.fit(flux, y, snr=snr, error=error)
    cal = model.calibration_
    lo = snr <= 3.0  # observed SNR = true SNR here, so both routings make these bins
    errors = np.stack(
        [sklearn_held_out(flux, y, m, 2.0) for m in (np.ones_like(lo), lo, ~lo)], axis=1
    )
    members = np.stack([np.ones_like(lo), lo, ~lo], axis=1)
    table = calibration_table(snr, errors[:, :, None] ** 2, 4, members)
    assert cal["n_spectra"] == len(y) and cal["chunks"] == [0]
    np.testing.assert_allclose(cal["snr_edges"], table["snr_edges"], rtol=1e-12)
    np.testing.assert_allclose(cal["snr_centre"], table["snr_centre"], rtol=1e-12)
    np.testing.assert_array_equal(cal["count"], table["count"])
    np.testing.assert_allclose(cal["variance"], table["variance"], rtol=1e-8)


def test_a_fallback_expert_shares_the_global_error_and_zero_disables(store_pair):
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=10.0, min_spectra=10**6, gate=False).fit(str(store_pair[0]))
        off = SNRBinnedRidge(alpha=10.0, gate=False, calibration=0).fit(str(store_pair[0]))
    var = model.calibration_["variance"]
    for e in range(1, var.shape[0]):
        np.testing.assert_array_equal(var[e], var[0])
    assert off.calibration_ is None


def test_soft_table_bins_the_gates_mixture_of_sklearn_held_out_errors():
    from snr_moe_dask.predict.graph import model_params
    from snr_moe_dask.predict.tasks import predict_block

    flux, y, snr, error = survey(n=600, seed=5)
    model = SNRBinnedRidge(
        alpha=2.0, bins=[3.0], bin_names=["lo", "hi"], routing="oracle", precision="float64",
        min_spectra=1, gate="snr", calibration=10**6,
    )  # fmt: skip
    with dask.config.set({"scheduler": "sync", "snr-moe.fit.calibration.snr-bins": 4}):
        model.fit(flux, y, snr=snr, error=error)
    lo = snr <= 3.0
    members = np.stack([np.ones_like(lo), lo, ~lo], axis=1)
    errors = np.stack([sklearn_held_out(flux, y, m, 2.0) for m in members.T], axis=1)
    block = predict_block(flux, error, None, {"snr": snr}, model_params(model, ["soft"]))
    p = block["gate_p"]
    assert np.isfinite(p).all() and 0.05 < p[:, 0].mean() < 0.95
    mixed_error = np.einsum("mk,mk->m", p, errors[:, 1:])
    cal = model.calibration_
    experts = calibration_table(snr, errors[:, :, None] ** 2, 4, members)
    var = expert_variance(experts, snr)[:, 1:, 0]
    pred = np.stack(  # each bin's expert on every spectrum: oracle routing at SNR 1, then 9
        [model.predict(flux, routing="oracle", snr=np.full(len(y), s)) for s in (1.0, 9.0)], 1
    )
    y_soft = np.einsum("mk,mk->m", p, pred)
    bound = np.einsum("mk,mk->m", p, var + (pred - y_soft[:, None]) ** 2)
    weight = cell_weights(np.where(lo, 0, 1))  # each expert's spectra weigh the same
    table = calibration_table(snr, (mixed_error**2 / bound)[:, None, None], 4, weight=weight)
    np.testing.assert_allclose(cal["soft_snr_edges"], table["snr_edges"][0], rtol=1e-12)
    np.testing.assert_array_equal(cal["soft_count"], table["count"][0])
    np.testing.assert_allclose(cal["soft_scale"], table["variance"][0], rtol=1e-8)
    # The soft routing's uncertainty is that factor, interpolated at the observed SNR,
    # times the bound.
    factor = np.interp(snr, table["snr_centre"][0], table["variance"][0, :, 0])
    served = ~block["fallback_soft"]
    expected = np.sqrt(factor * bound)
    np.testing.assert_allclose(block["err_soft"][served], expected[served], rtol=1e-8)
    # The learned routing's table: each expert's errors over the spectra the gate sends it.
    routed = np.argmax(p, axis=1)
    by_gate = np.stack([np.ones_like(lo), routed == 0, routed == 1], axis=1)
    learned = calibration_table(snr, errors[:, :, None] ** 2, 4, by_gate)
    np.testing.assert_allclose(cal["learned_variance"], learned["variance"], rtol=1e-8)
    np.testing.assert_array_equal(cal["learned_count"], learned["count"])


def test_observed_routing_has_the_table_of_the_spectra_it_routes():
    flux, y, snr, _ = survey(n=600, seed=6)
    observed = snr * np.random.default_rng(1).uniform(0.8, 1.25, len(y))
    error = flux / observed[:, None]  # observed SNR differs from the true one
    model = SNRBinnedRidge(
        alpha=2.0, bins=[3.0], bin_names=["lo", "hi"], routing="oracle", precision="float64",
        min_spectra=1, gate=False, calibration=10**6,
    )  # fmt: skip
    with dask.config.set({"scheduler": "sync", "snr-moe.fit.calibration.snr-bins": 4}):
        model.fit(flux, y, snr=snr, error=error)
    lo, lo_obs = snr <= 3.0, observed <= 3.0
    assert (lo != lo_obs).sum() > 20
    members = np.stack([np.ones_like(lo), lo, ~lo], axis=1)
    errors = np.stack([sklearn_held_out(flux, y, m, 2.0) for m in members.T], axis=1)
    by_observed = np.stack([np.ones_like(lo), lo_obs, ~lo_obs], axis=1)
    expected = calibration_table(observed, errors[:, :, None] ** 2, 4, by_observed)
    cal = model.calibration_
    np.testing.assert_allclose(cal["observed_variance"], expected["variance"], rtol=1e-8)
    np.testing.assert_array_equal(cal["observed_count"], expected["count"])
    keyed = calibration_table(observed, errors[:, :, None] ** 2, 4, members)
    np.testing.assert_allclose(cal["variance"], keyed["variance"], rtol=1e-8)
    from snr_moe_dask.predict.graph import model_params
    from snr_moe_dask.predict.tasks import predict_block

    block = predict_block(flux, error, None, {"snr": snr}, model_params(model, ["observed"]))
    expert = np.where(lo_obs, 1, 2)
    want = [
        np.interp(o, expected["snr_centre"][e][np.isfinite(expected["snr_centre"][e])],
                  expected["variance"][e, :, 0][np.isfinite(expected["variance"][e, :, 0])])
        for o, e in zip(observed, expert)
    ]  # fmt: skip
    np.testing.assert_allclose(block["err_observed"], np.sqrt(want), rtol=1e-8)
