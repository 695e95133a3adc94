"""The deployable gate: features, soft routing, and routing metrics against scikit-learn."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.stats
import xarray as xr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, r2_score

from snr_moe_dask import open_spectra
from snr_moe_dask.evaluation.graph import evaluate_model
from snr_moe_dask.kernels.gate import gate_probabilities, soft_route
from snr_moe_dask.kernels.quality import error_features, quality_features
from snr_moe_dask.kernels.snr import find_bad_pixels, snr_statistics
from snr_moe_dask.model import SNRBinnedRidge, load_model

ROUTINGS = "oracle,observed,learned,soft"


@pytest.fixture(scope="module")
def gated(store_pair, tmp_path_factory):
    """A model with a gate, evaluated with every routing (threshold 0.9: some fall back)."""
    root = tmp_path_factory.mktemp("gate")
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(alpha=1e3, min_spectra=1).fit(store_pair[0])
        model.save(root / "m.zarr")
        metrics = evaluate_model(
            root / "m.zarr",
            store_pair[1],
            root / "out",
            routing=ROUTINGS,
            gate_threshold=0.9,
            bootstrap=50,
        )
    preds = xr.open_zarr(root / "out" / "predictions.zarr", consolidated=False).load()
    return load_model(root / "m.zarr"), metrics, preds, open_spectra(store_pair[1]).load()


def test_error_features_match_numpy_and_scipy():
    rng = np.random.default_rng(0)
    error = rng.gamma(2.0, 1.0, size=(40, 300)).astype(np.float32)
    bad = rng.random(error.shape) < 0.05
    bad[3] = True
    got = error_features(error, bad)
    for i in range(len(error)):
        e = error[i][~bad[i]].astype(np.float64)
        if e.size == 0:
            assert np.isnan(got[i]).all()
            continue
        want = [
            e.mean(),
            e.std(),
            e.min(),
            e.max(),
            np.median(e),
            e.sum(),
            np.percentile(e, 25),
            np.percentile(e, 75),
            scipy.stats.skew(e),
            scipy.stats.kurtosis(e),
        ]
        np.testing.assert_allclose(got[i], want, rtol=2e-5, atol=1e-9)
    # Order-free: any permutation of the pixels gives the same features.
    perm = rng.permutation(error.shape[1])
    np.testing.assert_allclose(error_features(error[:, perm]), error_features(error), rtol=1e-5)


def test_gate_probabilities_match_sklearn_logistic_regression(gated, store_pair):
    model, *_ = gated
    train = open_spectra(store_pair[0]).load()
    flux, error = train["flux"].values, train["error"].values
    bad = find_bad_pixels(flux, error)
    feats = quality_features("snr", flux, error, bad, snr_statistics(flux, error, bad)[0])
    bins = np.digitize(train["snr"].values, model.bin_edges_, right=True)
    g = model.gate_
    lr = LogisticRegression(max_iter=1000).fit((feats - g["mean"]) / g["scale"], bins)
    np.testing.assert_allclose(
        gate_probabilities(feats, g)[:, lr.classes_],
        lr.predict_proba((feats - g["mean"]) / g["scale"]),
        atol=1e-6,
    )


def test_soft_routing_and_fallback_equal_a_direct_numpy_computation(gated):
    model, metrics, preds, test = gated
    flux, error = test["flux"].values.astype(np.float64), test["error"].values
    bad = find_bad_pixels(flux, error)
    feats = quality_features("snr", flux, error, bad, snr_statistics(flux, error, bad)[0])
    p = gate_probabilities(feats, model.gate_)
    experts = np.stack([flux @ model.coef_[e, :, 0] + model.intercept_[e, 0] for e in range(5)])
    mixed = (p * experts[1:].T).sum(axis=1)
    fallback = p.max(axis=1) < 0.9
    want = np.where(fallback, experts[0], mixed)
    assert 0 < fallback.sum() < len(fallback)
    np.testing.assert_allclose(preds["y_soft"].values, want, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(preds["fallback_soft"].values, fallback)
    learned = experts[1 + p.argmax(axis=1), np.arange(len(p))]
    np.testing.assert_allclose(preds["y_learned"].values, learned, rtol=0, atol=1e-7)
    entry = metrics["routings"]["by_routing"]["soft"]
    assert entry["fallback_rate"] == pytest.approx(fallback.mean())


def test_soft_route_kernel_rules():
    experts = np.array([[[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    glob = np.array([[10.0], [10.0], [10.0]])
    p = np.array([[0.2, 0.3, 0.5], [0.35, 0.35, 0.3], [np.nan, np.nan, np.nan]])
    y, fallback = soft_route(experts, glob, p, threshold=0.4)
    np.testing.assert_allclose(y[:, 0], [0.2 + 0.6 + 1.5, 10.0, 10.0])
    np.testing.assert_array_equal(fallback, [False, True, True])
    _, at = soft_route(experts, glob, np.array([[0.4, 0.3, 0.3]] * 3), threshold=0.4)
    assert not at.any()  # max p equal to the threshold keeps the mix


@pytest.mark.parametrize("routing", ["observed", "learned", "soft"])
def test_accuracy_and_confusion_equal_sklearn(gated, routing):
    _, metrics, preds, _ = gated
    used = preds["used"].values
    true, routed = preds["bin_true"].values[used], preds[f"bin_{routing}"].values[used]
    routed = np.where(routed < 0, 4, routed)
    entry = metrics["routings"]["by_routing"][routing]
    assert entry["accuracy"] == pytest.approx(accuracy_score(true, routed), abs=1e-12)
    want = confusion_matrix(true, routed, labels=range(5))[:4]
    np.testing.assert_array_equal(entry["confusion"], want)


def test_routing_r2_rho_and_leakage_equal_sklearn(gated):
    _, metrics, preds, _ = gated
    used = preds["used"].values
    y = preds["y_true"].values[used]
    r2 = {r: r2_score(y, preds[f"y_{r}"].values[used]) for r in ROUTINGS.split(",")}
    r2_global = r2_score(y, preds["y_global"].values[used])
    section = metrics["routings"]
    assert section["r2_global"] == pytest.approx(r2_global, rel=1e-9)
    for r, value in r2.items():
        entry = section["by_routing"][r]
        assert entry["r2"] == pytest.approx(value, rel=1e-9)
        want_rho = (value - r2_global) / (r2["oracle"] - r2_global)
        assert entry["rho"] == pytest.approx(want_rho, rel=1e-9)
        lo, hi = entry["rho_ci95"]
        assert lo <= hi
    leak = r2_score(y, preds["y_leakage"].values[used])
    assert section["gate"]["leakage_r2_test"] == pytest.approx(leak, rel=1e-9, abs=1e-12)
    assert section["gate"]["leakage_flag"] == (leak > 0.05)
    # Per true bin, as sklearn on the rows of that bin.
    bins = preds["bin_true"].values[used]
    for k, name in enumerate(["X", "L", "M", "H"]):
        rows = bins == k
        want = r2_score(y[rows], preds["y_soft"].values[used][rows])
        assert section["by_routing"]["soft"]["r2_bins"][name] == pytest.approx(want, rel=1e-9)


def test_gate_round_trips_without_pickle(gated, tmp_path):
    model, *_ = gated
    assert model.gate_["feature_set"] == "snr"
    assert model.gate_["coef"].shape == (4, 2)
    model.save(tmp_path / "again.zarr")
    again = load_model(tmp_path / "again.zarr")
    for key in ("mean", "scale", "coef", "intercept", "leak_coef"):
        np.testing.assert_array_equal(again.gate_[key], model.gate_[key])


def test_learned_routing_without_a_gate_fails_before_compute(store_pair, tmp_path):
    with dask.config.set(scheduler="sync"):
        model = SNRBinnedRidge(alpha=1e3, gate=False).fit(store_pair[0])
    with pytest.raises(ValueError, match="needs the model's gate"):
        evaluate_model(model, store_pair[1], tmp_path / "out", routing="oracle,soft")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="routing must be among"):
        evaluate_model(model, store_pair[1], tmp_path / "out", routing="oracle,magic")


def test_error_feature_gate_is_trained_and_its_leakage_reported(store_pair, tmp_path):
    with dask.config.set(scheduler="threads"):
        model = SNRBinnedRidge(alpha=1e3, gate="error").fit(store_pair[0])
        metrics = evaluate_model(
            model, store_pair[1], tmp_path / "out", routing="oracle,soft", bootstrap=0
        )
    gate = metrics["routings"]["gate"]
    assert gate["feature_set"] == "error" and len(gate["features"]) == 10
    assert np.isfinite(gate["leakage_r2_test"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Routing comparison" in report and "Leakage check" in report
    assert (tmp_path / "out" / "figures" / "routing_confusion.png").exists()


def test_error_scale_changes_the_routing(gated, store_pair, tmp_path):
    model, metrics, *_ = gated
    with dask.config.set(scheduler="threads"):
        scaled = evaluate_model(
            model,
            store_pair[1],
            tmp_path / "out",
            routing="oracle,observed",
            error_scale=1.2,
            bootstrap=0,
            report=False,
        )
    base = metrics["routings"]["by_routing"]["observed"]["accuracy"]
    assert scaled["routings"]["error_scale"] == 1.2
    assert scaled["routings"]["by_routing"]["observed"]["accuracy"] < base
