"""The observed SNR: the fast row median against numpy, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snr_moe_dask.kernels.quality import quality_features
from snr_moe_dask.kernels.snr import find_bad_pixels, row_median, snr_statistics

values = st.floats(-1e6, 1e6, allow_nan=False, width=32) | st.sampled_from(
    [0.0, 1.0, -np.inf, np.inf]
)


@settings(max_examples=200, deadline=None)
@given(
    a=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
        elements=values,
    )
)
def test_row_median_is_numpys_median(a):
    """Odd and even counts, ties, infinities, float32 and float64."""
    expected = np.median(a, axis=1).astype(np.float64)
    np.testing.assert_array_equal(row_median(a.copy()), expected)


SPECTRA = {
    "m": st.integers(1, 30),
    "n": st.integers(1, 50),
    "seed": st.integers(0, 2**32 - 1),
    "bad_rate": st.sampled_from([0.0, 0.05, 0.5, 1.0]),
}


def spectra(m, n, seed, bad_rate, dtype=np.float32, wide=False):
    """Flux, error and bad pixels, with a share ``bad_rate`` of bad errors;
    ``wide`` spreads the flux over 16 decades, so that float64 sums of it
    depend on the order of the terms."""
    rng = np.random.default_rng(seed)
    flux = rng.normal(3, 2, (m, n)) * (10.0 ** rng.uniform(-8, 8, (m, n)) if wide else 1)
    flux = flux.astype(dtype)
    error = rng.uniform(0.5, 2, (m, n)).astype(np.float32)
    hit = rng.random((m, n)) < bad_rate
    error[hit] = rng.choice(np.array([0.0, -1.0, np.nan, np.inf], np.float32), hit.sum())
    return flux, error, find_bad_pixels(flux, error)


@settings(max_examples=100, deadline=None)
@given(**SPECTRA)
def test_observed_snr_is_the_median_over_good_pixels(m, n, seed, bad_rate):
    flux, error, bad = spectra(m, n, seed, bad_rate)
    ratio = np.where(bad, np.nan, flux / np.where(bad, 1, error))
    with np.errstate(all="ignore"):
        expected = np.array(
            [np.median(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.nan for r in ratio]
        )
    np.testing.assert_array_equal(snr_statistics(flux, error, bad)[0], expected)
    np.testing.assert_array_equal(
        snr_statistics(flux, error, find_bad_pixels(flux, error))[0], expected
    )


@settings(max_examples=100, deadline=None)
@given(**SPECTRA, dtype=st.sampled_from([np.float32, np.float64]), wide=st.booleans())
def test_snr_and_mean_share_one_ratio_and_equal_the_separate_kernels(
    m, n, seed, bad_rate, dtype, wide
):
    """``snr_statistics``' SNR and the gate's ``snr_mean`` feature from one division equal
    the separate kernels, bit for bit."""
    flux, error, bad = spectra(m, n, seed, bad_rate, dtype, wide)
    # The gate's feature as first written: the float32 ratio, zeroed where bad.
    good = ~bad
    with np.errstate(all="ignore"):
        ratio = np.divide(flux, error, dtype=np.float32)
        n_good = good.sum(axis=1)
        mean = np.einsum("ij->i", np.where(good, ratio, 0), dtype=np.float64) / n_good
    mean = np.where(n_good > 0, mean, np.nan)
    snr, got_mean = snr_statistics(flux, error, bad, mean=True)
    np.testing.assert_array_equal(snr, snr_statistics(flux, error, bad)[0])
    np.testing.assert_array_equal(got_mean, mean)
    np.testing.assert_array_equal(
        quality_features("snr", flux, error, bad, snr, snr_mean=got_mean),
        np.column_stack([snr, mean]),
    )
    np.testing.assert_array_equal(
        quality_features("snr", flux, error, bad, snr), np.column_stack([snr, mean])
    )
    assert snr_statistics(flux, error, bad)[1] is None
