"""Quality features of a spectrum, for the deployable gate (numpy kernels).

The error vector itself leaks the labels: the star's own photons enter it,
so a linear model on the 4096 raw errors predicts log g almost perfectly.
The gate therefore sees a few order-free statistics, which need no
wavelength alignment (any permutation of the pixels gives the same values).
Two feature sets are defined:

``error``
    Ten statistics of the error vector (mean, std, min, max, median, sum,
    25th and 75th percentiles, skew, kurtosis), the source study's choice.
    Its shape statistics (skew, kurtosis) still follow the depth of the
    absorption lines, so on the mock survey they carry some log g
    information: the leakage check reports it.
``snr``
    The median and mean of flux / error: the observed SNR, and its mean.

Bad pixels (see :func:`snr_moe_dask.kernels.snr.find_bad_pixels`) are left out. A
spectrum with no good pixel gets NaN features.
"""

from __future__ import annotations

import warnings

import numpy as np

from .snr import ratio_mean

FEATURES = ("mean", "std", "min", "max", "median", "sum", "p25", "p75", "skew", "kurtosis")
FEATURE_SETS = {
    "error": tuple(f"error_{f}" for f in FEATURES),
    "snr": ("snr_median", "snr_mean"),
}


def quality_features(
    feature_set: str,
    flux: np.ndarray,
    error: np.ndarray,
    bad: np.ndarray,
    snr: np.ndarray,
    snr_mean: np.ndarray | None = None,
) -> np.ndarray:
    """Return a feature set (see the module docstring), shape (m, n_features), float64.

    Parameters
    ----------
    feature_set : {"error", "snr"}
    flux, error : ndarray of shape (m, n_pixels)
    bad : ndarray of bool, same shape
    snr : ndarray of shape (m,)
        The observed SNR (:func:`snr_moe_dask.kernels.snr.snr_statistics`), already computed.
    snr_mean : ndarray of shape (m,), optional
        The mean of flux / error, if already computed
        (:func:`snr_moe_dask.kernels.snr.snr_statistics`).
    """
    if feature_set == "error":
        return error_features(error, bad)
    if feature_set == "snr":
        if snr_mean is None:
            with np.errstate(invalid="ignore", divide="ignore"):
                snr_mean = ratio_mean(np.divide(flux, error, dtype=np.float32), bad)
        return np.column_stack([snr, snr_mean])
    raise ValueError(
        f"unknown gate feature set {feature_set!r}; expected one of {list(FEATURE_SETS)}"
    )


def error_features(error: np.ndarray, bad: np.ndarray | None = None) -> np.ndarray:
    """Return the ten error statistics of each spectrum, in the order of :data:`FEATURES`.

    Parameters
    ----------
    error : ndarray of shape (m, n_pixels)
        1-sigma flux errors.
    bad : ndarray of bool, same shape, optional
        Pixels to leave out.

    Returns
    -------
    ndarray of shape (m, 10), float64
        ``mean``, ``std`` (population), ``min``, ``max``, ``median``, ``sum``
        (over good pixels), ``p25``, ``p75`` (linear interpolation, as
        ``numpy.percentile``), ``skew`` and ``kurtosis`` (Fisher's excess
        kurtosis, both as ``scipy.stats`` with ``bias=True``; 0 where the
        spread is 0). Deviations from the mean are formed in float32, so the
        higher moments agree with a float64 computation to about 1e-5.
    """
    big = error.dtype == np.float64 and np.nanmax(np.abs(error), initial=0) > 1e30
    e = np.asarray(error, dtype=np.float64 if big else np.float32)
    if bad is not None and bad.any():
        e = np.where(bad, e.dtype.type(np.nan), e)
        good = ~bad
        n = good.sum(axis=1)
        with warnings.catch_warnings():  # all-bad rows: NaN, reported as such
            warnings.simplefilter("ignore", RuntimeWarning)
            total = np.nansum(e, axis=1, dtype=np.float64)
            mean = total / n
            lo, hi = np.nanmin(e, axis=1), np.nanmax(e, axis=1)
            p25, p50, p75 = np.nanpercentile(e, [25, 50, 75], axis=1)
        d = np.where(good, e - mean.astype(e.dtype)[:, None], e.dtype.type(0))
    else:
        n = np.full(len(e), e.shape[1])
        total = e.sum(axis=1, dtype=np.float64)
        mean = total / max(e.shape[1], 1)
        lo, hi = e.min(axis=1, initial=np.inf), e.max(axis=1, initial=-np.inf)
        p25, p50, p75 = np.percentile(e, [25, 50, 75], axis=1)
        d = e - mean.astype(e.dtype)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        d2 = d * d
        m2 = np.einsum("ij->i", d2, dtype=np.float64) / n
        m3 = np.einsum("ij,ij->i", d2, d, dtype=np.float64) / n
        m4 = np.einsum("ij,ij->i", d2, d2, dtype=np.float64) / n
        skew = np.where(m2 > 0, m3 / m2**1.5, 0.0)
        kurt = np.where(m2 > 0, m4 / m2**2 - 3.0, 0.0)
    out = np.column_stack([mean, np.sqrt(m2), lo, hi, p50, total, p25, p75, skew, kurt])
    out[n == 0] = np.nan
    return out.astype(np.float64)
