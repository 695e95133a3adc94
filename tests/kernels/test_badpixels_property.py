"""Bad pixels, exclusions and empty bins against scikit-learn's Ridge (a Hypothesis property).

The oracle does the documented policy with numpy and scikit-learn alone:

- a pixel is bad when its flux is not finite, its error is not finite or not
  positive, or the mask flags it;
- a spectrum is excluded when it has more than ``max_bad_fraction * n_pixels``
  bad pixels, a NaN label or a NaN routing SNR;
- within one chunk (of the dask array) and one bin, a bad pixel of a used
  spectrum takes the mean of that pixel's good values among the bin's used
  spectra of the chunk, or 0 if there is none;
- each bin's expert is Ridge(alpha) on its cleaned spectra, the global model
  Ridge(alpha) on all of them; a bin with fewer than ``min_spectra`` spectra
  (or none) is served by the global model.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from snr_moe_dask.model import SNRBinnedRidge

RATES = st.sampled_from([0.0, 0.0, 0.03, 0.15])


@st.composite
def surveys(draw):
    n = draw(st.integers(20, 80))
    p = draw(st.integers(5, 12))
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=5, unique=True))
    bounds = [0, *sorted(cuts), n]
    edges = draw(st.lists(st.integers(-2, 12), min_size=1, max_size=4, unique=True))
    return {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "n": n,
        "p": p,
        "chunks": tuple(b - a for a, b in zip(bounds[:-1], bounds[1:])),
        "edges": sorted(float(e) for e in edges),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "with_mask": draw(st.booleans()),
        "rates": {
            k: draw(RATES)
            for k in (
                "nan_flux",
                "inf_flux",
                "zero_error",
                "negative_error",
                "inf_error",
                "nan_error",
                "mask",
                "nan_label",
                "nan_snr",
            )
        },
        "dead_columns": draw(st.integers(0, 3)),  # a pixel bad over a run of spectra
        "very_bad_rows": draw(st.integers(0, 4)),  # spectra with most pixels bad
        "max_bad_fraction": draw(st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0])),
        "alpha": draw(st.sampled_from([0.5, 3.0, 50.0])),
        "min_spectra": draw(st.sampled_from([1, 1, 3, 8])),
        "partitions": draw(st.integers(1, 3)),
    }


def make_arrays(s: dict) -> dict:
    rng = np.random.default_rng(s["seed"])
    n, p, r = s["n"], s["p"], s["rates"]
    flux = rng.normal(1.0, 1.0, (n, p))
    y = 10.0 + flux @ rng.normal(0, 1, p) + rng.normal(0, 0.3, n)
    error = rng.uniform(0.5, 2.0, (n, p))
    # SNRs on a grid hit the right-closed edges exactly; the rest are continuous.
    snr = np.where(rng.random(n) < 0.3, rng.integers(0, 11, n), rng.uniform(0, 10, n))

    def where(rate, shape=(n, p)):
        return rng.random(shape) < rate

    flux[where(r["nan_flux"])] = np.nan
    flux[where(r["inf_flux"])] = np.inf * rng.choice([-1, 1])
    error[where(r["zero_error"])] = 0.0
    error[where(r["negative_error"])] = -1.0
    error[where(r["inf_error"])] = np.inf
    error[where(r["nan_error"])] = np.nan
    mask = where(r["mask"]) if s["with_mask"] else None
    for _ in range(s["dead_columns"]):
        start = rng.integers(0, n)
        flux[start : start + rng.integers(1, n), rng.integers(0, p)] = np.nan
    for row in rng.integers(0, n, s["very_bad_rows"]):
        error[row, rng.random(p) < 0.7] = 0.0
    y[where(r["nan_label"], n)] = np.nan
    snr[where(r["nan_snr"], n)] = np.nan
    return {"flux": flux.astype(s["dtype"]), "error": error, "mask": mask, "y": y, "snr": snr}


def reference(a: dict, s: dict) -> dict:
    """The documented policy, in numpy and scikit-learn."""
    flux, error, y, snr = a["flux"], a["error"], a["y"], a["snr"]
    n, p = flux.shape
    edges, n_bins = s["edges"], len(s["edges"]) + 1
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flux) | ~np.isfinite(error) | ~(error > 0)
    if a["mask"] is not None:
        bad |= a["mask"]
    bins = np.digitize(snr, edges, right=True)
    bins[np.isnan(snr)] = -1
    slot = np.where(bins < 0, n_bins, bins)
    n_bad = bad.sum(axis=1)
    too_bad = n_bad > s["max_bad_fraction"] * p
    no_label = np.isnan(y)
    use = (bins >= 0) & ~too_bad & ~no_label

    x = flux.astype(np.float64)
    starts = np.cumsum((0, *s["chunks"]))
    for lo, hi in zip(starts[:-1], starts[1:]):
        for k in range(n_bins):
            rows = lo + np.flatnonzero(use[lo:hi] & (bins[lo:hi] == k))
            for j in range(p):
                b = bad[rows, j]
                good = x[rows[~b], j]
                x[rows[b], j] = good.mean() if good.size else 0.0

    def count(selected):
        return np.bincount(slot[selected], weights=None, minlength=n_bins + 1)

    names = [f"b{k}" for k in range(n_bins)]
    counts = {
        "bad_pixels": np.bincount(slot[use], weights=n_bad[use], minlength=n_bins + 1),
        "excluded_bad": count(too_bad),
        "excluded_label": count(no_label & ~too_bad),
        "excluded_no_snr": count((bins < 0) & ~too_bad & ~no_label),
    }
    experts = [use] + [use & (bins == k) for k in range(n_bins)]
    fits = []
    for e, rows in enumerate(experts):
        if rows.sum() < (1 if e == 0 else max(s["min_spectra"], 1)):
            fits.append(None)
            continue
        ridge = Ridge(alpha=s["alpha"]).fit(x[rows], y[rows])
        fits.append((ridge.coef_, ridge.intercept_))
    return {
        "names": names,
        "n_train": [int(rows.sum()) for rows in experts],
        "fits": fits,
        "excluded": {
            key: dict(zip([*names, "no_snr"], v.astype(int).tolist())) for key, v in counts.items()
        },
    }


@pytest.mark.timeout(300)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=surveys())
def test_bad_pixels_exclusions_and_empty_bins_match_sklearn(s):
    a = make_arrays(s)
    ref = reference(a, s)
    model = SNRBinnedRidge(
        alpha=s["alpha"],
        bins=s["edges"],
        bin_names=ref["names"],
        routing="oracle",
        precision="float64",
        min_spectra=s["min_spectra"],
        max_bad_fraction=s["max_bad_fraction"],
        partitions=s["partitions"],
    )
    flux = da.from_array(a["flux"], chunks=(s["chunks"], -1))
    fit = lambda: model.fit(flux, a["y"], snr=a["snr"], error=a["error"], mask=a["mask"])  # noqa: E731
    with dask.config.set(scheduler="sync"):
        if ref["n_train"][0] == 0:
            with pytest.raises(ValueError, match="no training spectrum is usable"):
                fit()
            return
        fit()

    assert model.n_train_.tolist() == ref["n_train"]
    assert model.excluded_ == ref["excluded"]
    fell_back = {name for name, f in zip(ref["names"], ref["fits"][1:]) if f is None}
    assert set(model.fallback_) == fell_back
    for e, name in enumerate(["global", *ref["names"]]):
        coef, intercept = ref["fits"][e] if name not in fell_back else ref["fits"][0]
        scale = max(1.0, np.abs(coef).max(), abs(intercept))
        np.testing.assert_allclose(
            model.coef_[e, :, 0], coef, rtol=1e-8, atol=1e-8 * scale, err_msg=name
        )
        np.testing.assert_allclose(
            model.intercept_[e, 0], intercept, rtol=1e-8, atol=1e-8 * scale, err_msg=name
        )
